"""The `box2mask segment` command: the command line (`command`), the run (`run`: index, shards,
merge, resume), one image's boxes -> masks (`image`), the work folder (`workdir`), the on-disk
COCO index and its records (`index`, `records`) and the work shared out under torchrun (`shards`,
also used by `box2mask fiftyone apply`).

May import box2mask.ops, box2mask.io, box2mask.labels, box2mask.model (the command's `--amp`
choices) and the top-level `box2mask` (build_predictor), nothing else of box2mask.
"""
