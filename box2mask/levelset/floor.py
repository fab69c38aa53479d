"""Colour histograms on box crops, and the floor that decides how far to trust an evolved mask.

Frames and shapes: N boxes, each sampled on an S x S grid (`segmenter`):
    bin_index  (N, S, S) long   colour bin of every grid pixel
    box_masks  (N, S, S) bool   the box on its grid
    ring       (N, S, S) bool   the margin around the box that lies on the image (background sample)
    masks      (N, S, S) bool   a candidate object (the evolved mask, or the prior ellipse)

The evolution maximises the histogram log-likelihood ratio of its object against the background
and nothing else, so it happily "wins" when the colours in the box are ambiguous: a low-contrast
box, or look-alike neighbours (touching nuclei) reaching into the box corners. The floor measures,
per box and from the pixels of its crop only:

- `likelihood_gain`: how much better the evolved object explains the box than the prior ellipse
  (region log-likelihood ratio per box pixel, each mask scored with its own histograms);
- `separation`: how different the object's colours are from the ring's (1 - Bhattacharyya);
- `crowding`: the share of the ring whose colour is more likely under the object's histogram
  than under the box's own background: look-alike neighbours touching the box;

and turns them into a trust weight w in [0, 1] (`trust_weight`); the pasted level set is
w * phi_evolved + (1 - w) * phi_prior (`blend_phi`), so w = 0 keeps the prior exactly.
"""

import torch

from box2mask.ops.mask_morphology import gaussian_blur

__all__ = [
    "histograms",
    "bin_counts",
    "normalise_counts",
    "smooth_in_box",
    "box_norm",
    "quality_score",
    "likelihood_gain",
    "separation",
    "crowding",
    "trust_weight",
    "blend_phi",
]


def histograms(bin_index, weights, num_bins, floor):
    """Colour distributions of bin_index (N, S, S) for weights (N, S, S) or (N, Q, S, S).

    Each is (1 - floor) * normalised counts + floor * uniform, so a colour never seen has the same
    small probability in every histogram (its log-likelihood ratio is 0, not a bias).
    Returns (N, num_bins) or (N, Q, num_bins).
    """
    hist = normalise_counts(bin_counts(bin_index, weights, num_bins), floor)
    return hist if weights.dim() == 4 else hist[:, 0]


def bin_counts(bin_index, weights, num_bins):
    """(N, Q, num_bins) weighted counts of bin_index (N, S, S) for weights (N, S, S) or
    (N, Q, S, S) (Q = 1 for the former)."""
    n = bin_index.shape[0]
    flat = weights.reshape(n, -1, bin_index[0].numel()).float()  # (N, Q, S*S)
    index = bin_index.reshape(n, 1, -1).expand_as(flat)
    counts = torch.zeros(flat.shape[:2] + (num_bins,), device=weights.device)
    return counts.scatter_add_(2, index, flat)


def normalise_counts(counts, floor):
    """Counts (..., B) -> distributions (1 - floor) * counts / total + floor / B."""
    hist = counts / counts.sum(dim=-1, keepdim=True).clamp_min(1e-6)
    return (1.0 - floor) * hist + floor / counts.shape[-1]


def smooth_in_box(x, box_masks, sigma, norm=None):
    """Gaussian smoothing of (N, S, S) maps using only values inside each box (normalised).

    norm: optional precomputed `box_norm(box_masks, sigma)` (the same for every step).
    """
    if sigma <= 0:
        return x
    norm = box_norm(box_masks, sigma) if norm is None else norm
    return gaussian_blur(x * box_masks.float(), sigma) / norm


def box_norm(box_masks, sigma):
    """(N, S, S) the Gaussian-smoothed box indicator, floored: `smooth_in_box`'s denominator."""
    return gaussian_blur(box_masks.float(), sigma).clamp_min(1e-6)


def _per_pixel(hist, bin_index):
    """(N, B) histograms looked up at bin_index (N, S, S) -> (N, S, S) probabilities."""
    n = bin_index.shape[0]
    return torch.gather(hist, 1, bin_index.view(n, -1)).view_as(bin_index)


def separation(masks, bin_index, ring, num_bins, floor):
    """(N,) 1 - Bhattacharyya coefficient of the colour histograms of masks and ring, in [0, 1]."""
    fg = histograms(bin_index, masks.float(), num_bins, floor)
    bg = histograms(bin_index, ring.float(), num_bins, floor)
    return 1.0 - torch.sqrt(fg * bg).sum(dim=1).clamp(0, 1)


def _log_ratio_sum(masks, bin_index, box_masks, ring, num_bins, floor):
    """(N,) sum over each mask of log p_obj / p_bg per box pixel (histograms of the mask itself,
    background = ring + box outside the mask)."""
    inside = (masks & box_masks).float()
    outside = (ring | (box_masks & ~masks)).float()
    fg = _per_pixel(histograms(bin_index, inside, num_bins, floor), bin_index)
    bg = _per_pixel(histograms(bin_index, outside, num_bins, floor), bin_index)
    area = box_masks.float().sum(dim=(1, 2)).clamp_min(1)
    return (inside * torch.log(fg / bg)).sum(dim=(1, 2)) / area


def likelihood_gain(evolved, prior, bin_index, box_masks, ring, num_bins, floor):
    """(N,) region log-likelihood ratio per box pixel of the evolved masks minus the prior's.

    evolved, prior: (N, S, S) bool. Positive: the evolution found a split of the box that its
    colours support better than the starting ellipse does.
    """
    gain = _log_ratio_sum(evolved, bin_index, box_masks, ring, num_bins, floor)
    return gain - _log_ratio_sum(prior, bin_index, box_masks, ring, num_bins, floor)


def crowding(prior, bin_index, box_masks, ring, num_bins, floor):
    """(N,) share of ring pixels 3x more likely under the prior object's colours than under the
    box corners' (the box outside the prior ellipse): look-alike neighbours around the box."""
    inside = (prior & box_masks).float()
    corners = (box_masks & ~prior).float()
    fg = _per_pixel(histograms(bin_index, inside, num_bins, floor), bin_index)
    bg = _per_pixel(histograms(bin_index, corners, num_bins, floor), bin_index)
    ring_f = ring.float()
    alike = fg > 3.0 * bg  # clearly object-like, not a tie between two similar histograms
    return (alike.float() * ring_f).sum(dim=(1, 2)) / ring_f.sum(dim=(1, 2)).clamp_min(1)


def trust_weight(gain, sep_evolved, sep_prior, crowd, cfg):
    """(N,) trust in the evolved mask in [0, 1] from the floor's evidence (all (N,)).

    Each cue is a ramp from 0 (no evidence) to 1 (clear evidence). The evolution is trusted when
    it gains over the prior, its object is separable from the ring and separates at least about
    as well as the prior (the product of those three ramps), or when its object's colours are
    clearly apart from the ring's whatever the gain; in both cases only as far as the ring is not
    crowded by look-alikes.
    """

    def ramp(x, lo, hi):
        return ((x - lo) / max(hi - lo, 1e-6)).clamp(0, 1)

    weight = ramp(gain, cfg.gain_lo, cfg.gain_hi)
    weight = weight * ramp(sep_evolved, cfg.separation_lo, cfg.separation_hi)
    weight = weight * ramp(sep_evolved - sep_prior, cfg.sep_gain_lo, cfg.sep_gain_hi)
    clear = ramp(sep_evolved, cfg.clear_separation_lo, cfg.clear_separation_hi)
    return torch.maximum(weight, clear) * (1.0 - ramp(crowd, cfg.crowd_lo, cfg.crowd_hi))


def blend_phi(phi_evolved, phi_prior, weight):
    """(N, S, S) level set w * phi_evolved + (1 - w) * phi_prior for weights (N,)."""
    w = weight[:, None, None]
    return w * phi_evolved + (1.0 - w) * phi_prior


def quality_score(masks, bin_index, box_masks, ring, num_bins, floor):
    """(N,) in [0, 1]: colour separation of mask vs ring times coverage of the box's four sides."""
    sep = separation(masks, bin_index, ring, num_bins, floor)
    rows_in_box = box_masks.any(dim=2).float()
    cols_in_box = box_masks.any(dim=1).float()
    row_cover = (masks.any(dim=2).float() * rows_in_box).sum(1) / rows_in_box.sum(1).clamp_min(1)
    col_cover = (masks.any(dim=1).float() * cols_in_box).sum(1) / cols_in_box.sum(1).clamp_min(1)
    return (sep * row_cover * col_cover).clamp(0, 1)
