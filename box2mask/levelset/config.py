"""LevelSetConfig: every setting of the embedded default segmenter (box2mask/levelset/segmenter.py)."""

from dataclasses import dataclass


@dataclass
class LevelSetConfig:
    grid_size: int = 96  # largest grid side S (every box's side when adaptive_grid is off)
    adaptive_grid: bool = True  # S follows each crop's long side (`grid_sides`)
    min_grid: int = 24  # smallest adaptive S: tiny boxes are upsampled to it
    grid_multiple: int = 8  # adaptive S is rounded up to a multiple of this (fewer batches)
    margin_frac: float = 0.25  # ring width outside the box, as a fraction of the box side
    margin_px: float = 6.0  # plus this many image pixels
    bins: int = 8  # colour histogram levels per Lab channel (bins^3 bins in all)
    chroma_range: float = 64.0  # a and b are binned over 128 +- this (OpenCV 8-bit Lab units)
    hist_floor: float = 0.05  # weight of a uniform distribution mixed into every histogram
    steps: int = 20  # evolution steps K; 0 returns the filled box
    min_steps: int = 5  # smaller grids take steps * S / grid_size steps, but at least this many
    step_size: float = 1.0  # weight of the region force added to phi per step
    init_logit: float = 2.0  # phi at the box centre at the start: the box prior's strength
    init_power: float = 2.0  # starting shape |u|^p + |v|^p < 1: 2 = inscribed ellipse, large = box
    local_background: bool = True  # one background histogram per box corner, mixed by position
    inner_background: float = 1.0  # weight of the box's current background in the bg histogram
    force_clip: float = 3.0  # |log-likelihood ratio| is clipped to this
    force_sigma: float = 1.0  # Gaussian smoothing of the region force, grid pixels
    smoothing: float = 1.0  # Gaussian regularisation of phi per step, grid pixels (0 = none)
    phi_clip: float = 8.0  # phi is kept in [-phi_clip, phi_clip]
    min_fill: float = 0.2  # a result covering less of its box falls back to the starting shape
    morph_radius: int = 1  # open/close radius of the clean-up, grid pixels (0 = none)
    floor: bool = True  # blend the evolved level set with the prior by the trust weight
    gain_lo: float = 0.0  # likelihood gain (nats per box pixel) at which trust starts ...
    gain_hi: float = 0.3  # ... and where this cue is full
    separation_lo: float = 0.3  # object-vs-ring separation at which trust starts ...
    separation_hi: float = 0.6  # ... and where this cue is full
    sep_gain_lo: float = -0.1  # separation gained over the prior at which trust starts ...
    sep_gain_hi: float = 0.0  # ... and where this cue is full
    clear_separation_lo: float = 0.8  # separation trusted whatever the gain: starts here ...
    clear_separation_hi: float = 0.9  # ... full trust here
    crowd_lo: float = 0.9  # share of look-alike ring pixels where distrust starts ...
    crowd_hi: float = 1.0  # ... and where the evolution is not trusted at all
    snap_min_trust: float = 0.5  # boxes trusted less are pasted without edge snapping
    refine_radius: int = 12  # guided-filter window radius in image pixels (0 = no edge snapping)
    refine_eps: float = 0.01  # guided-filter ridge weight (colour variance treated as noise)
    refine_sharpness: float = 1.0  # the filter's input is sigmoid(sharpness * phi)
    refine_min_scale: float = 1.0  # snap only boxes whose grid pixel spans more image pixels
    click_radius: float = 2.0  # radius of the disc a click pins, grid pixels ("disc" clicks)
    click_mode: str = "walk"  # "walk": clicks re-segment from the previous mask by a random
    # walk (`levelset.clicks`); "disc": a click only pins a disc in the evolution (before #27)
    click_seed_radius: float = 0.75  # "walk": radius of a click's seed disc, grid pixels
    click_seed_depth: float = 0.5  # "walk": an active click's disc: this x its depth, at least
    click_reach: float = 2.0  # "walk": a click's reach = this x its depth inside the error
    click_reach_width: float = 3.0  # "walk": the tie to the previous mask grows beyond this
    # many reaches (`clicks.click_tie`)
    walk_beta: float = 1.0  # "walk": edge weight exp(-beta d^2 / mean d^2) of Lab distance d
    walk_iterations: int = 30  # "walk": conjugate-gradient steps of the random walk on a
    # grid_size grid; a smaller grid S takes walk_iterations * S / grid_size (CG needs about
    # as many steps as the grid's side), but at least min_walk_iterations
    min_walk_iterations: int = 15  # "walk": fewest conjugate-gradient steps on small grids
    keep_prior_radius: int = 1  # grid pixels this near a change come from phi, the rest from the
    # starting shape at image resolution (ellipse or init mask); -1 = always resample phi
