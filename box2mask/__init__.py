"""box2mask: bounding boxes -> instance masks (Box2Mask, level-set evolution).

The one entry point most callers need:

    predictor = build_predictor(checkpoint=None, device="cpu")   # None: the embedded default
    predictor.set_image(image_hwc_uint8_rgb)
    masks, scores = predictor.predict(boxes_xyxy)                 # (N, H, W) bool, (N,) float

Every predictor has `model_version` (str), `set_image(image)` and `predict(boxes_xyxy, **options)`.
"""

__version__ = "0.1.0"


def build_predictor(checkpoint=None, device: str = "cpu"):
    """The embedded level-set default when `checkpoint` is None, else the trained model's predictor."""
    if checkpoint is None:
        from box2mask.default_segmenter import LevelSetSegmenter

        return LevelSetSegmenter(device=device)
    from box2mask.predictor import Box2MaskPredictor

    return Box2MaskPredictor.from_checkpoint(checkpoint, device=device)
