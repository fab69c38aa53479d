"""box2mask: bounding boxes -> instance masks (Box2Mask, level-set evolution).

The one entry point most callers need:

    predictor = build_predictor(checkpoint=None, device="cpu")   # None: the embedded default
    predictor.set_image(image_hwc_uint8_rgb)
    masks, scores = predictor.predict(boxes_xyxy)                 # (N, H, W) bool, (N,) float

Every predictor has `model_version` (str), `set_image(image)` and `predict(boxes_xyxy, **options)`.
"""

__version__ = "0.1.0"


def build_predictor(checkpoint=None, device: str = "cpu", **options):
    """The embedded level-set default when `checkpoint` is None, else the trained model's predictor:
    `CropLearnerPredictor` for a crop-learner checkpoint, `Box2MaskPredictor` for Box2Mask-T.

    `options` are keyword arguments of that predictor (e.g. amp="bf16", channels_last=True,
    compile=True for Box2Mask-T): a trained model's only; with no checkpoint they are a ValueError.
    """
    if checkpoint is None:
        if options:
            raise ValueError(
                f"{', '.join(sorted(options))}: options of a trained model (a checkpoint); the "
                "embedded level-set default has no network"
            )
        from box2mask.levelset.segmenter import LevelSetSegmenter

        return LevelSetSegmenter(device=device)
    from box2mask.io.checkpoint import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    try:
        if ckpt["kind"] == "crop-learner":
            from box2mask.crop.predictor import CropLearnerPredictor

            return CropLearnerPredictor.from_checkpoint(ckpt, device=device, **options)
        from box2mask.model.predictor import Box2MaskPredictor

        return Box2MaskPredictor.from_checkpoint(ckpt, device=device, **options)  # read once
    except CheckpointError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as err:
        # fields of the right names and types whose values build no model (hidden_dim -1...)
        raise CheckpointError(
            f"{checkpoint}: cannot build the model it describes ({type(err).__name__}: {err})"
        ) from err
