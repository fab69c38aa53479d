"""A FiftyOne model that turns the boxes of a prompt field into masks, like FiftyOne's SAM models.

    import fiftyone as fo
    from annotator.fiftyone.model import Box2MaskFiftyOneModel

    model = Box2MaskFiftyOneModel(checkpoint=None, device="cpu")    # None: the embedded default
    dataset.apply_model(model, label_field="box2mask", prompt_field="ground_truth")

Every detection of the prompt field gets a new detection in `label_field` with the same class, its
box snapped to the pixel grid and clipped to the image, a box-cropped mask (FiftyOne's
convention), the predictor's score as `confidence`, and the attributes `source="model"`,
`model_version`, `prompt_id` (the prompt detection's id) and `revision=1`. The prompt field is
only read. A prompt box that covers no pixel of the image is skipped with a warning. A prompt
detection with clicks, `box2mask_points` = [[x, y, label], ...] in [0, 1] image coordinates
(label 1 object, 0 background), is segmented with them, as the annotator's clicks are; one whose
clicks are malformed is skipped with a warning naming them.
"""

import logging

import fiftyone as fo
import fiftyone.core.models as fom
import numpy as np

from annotator.fiftyone.convert import crop_mask, pixel_window, tight_bbox, window_to_bbox
from box2mask.io.image_io import to_rgb_uint8
from box2mask.ops.mask_quality import quality_features, quality_score
from box2mask.segment.points import POINTS_FIELD, PointsError, parse_points, predict_with_points

__all__ = ["Box2MaskFiftyOneModel"]

logger = logging.getLogger(__name__)


class Box2MaskFiftyOneModel(fom.Model, fom.SamplesMixin):
    """Box prompts -> box-cropped masks for `SampleCollection.apply_model`.

    Args:
        checkpoint: a trained Box2Mask checkpoint, or None for the embedded level-set default.
        device: "cpu" or "cuda".
        predictor: an already built predictor (`set_image`, `predict`, `model_version`); when
            given, `checkpoint` and `device` are ignored.
        prompt_field: the Detections field holding the boxes; `apply_model(..., prompt_field=...)`
            sets it too.
        boxes_per_call: boxes predicted together; bounds memory to this many full-size masks.
    """

    def __init__(
        self,
        checkpoint=None,
        device: str = "cpu",
        *,
        predictor=None,
        prompt_field: str | None = None,
        boxes_per_call: int = 32,
    ):
        fom.SamplesMixin.__init__(self)
        if predictor is None:
            from box2mask import build_predictor

            predictor = build_predictor(checkpoint, device=device)
        self.predictor = predictor
        self.boxes_per_call = int(boxes_per_call)
        if prompt_field is not None:
            self.needs_fields = {"prompt_field": prompt_field}
        self._preprocess = False

    @property
    def model_version(self) -> str:
        return str(self.predictor.model_version)

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def ragged_batches(self) -> bool:
        return True  # images of a dataset differ in size

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = value

    def _prompt_field(self) -> str:
        field = self.needs_fields.get("prompt_field")
        if not field:
            raise ValueError(
                "Box2MaskFiftyOneModel needs the Detections field holding the boxes: "
                "apply_model(model, label_field=..., prompt_field='ground_truth')"
            )
        return field

    def predict(self, arg, sample=None) -> fo.Detections:
        """Masks for the prompt boxes of one sample.

        Args:
            arg: the sample's image, (H, W[, C]) array (FiftyOne reads it as HWC uint8 RGB).
            sample: the sample, whose prompt field holds fo.Detections (or None: no boxes).
        Returns:
            fo.Detections, one per usable prompt box, in prompt order.
        """
        if sample is None:
            raise ValueError("Box2MaskFiftyOneModel needs the sample (its prompt boxes)")
        field = self._prompt_field()
        prompts = sample[field]
        if prompts is None:
            return fo.Detections()
        if not isinstance(prompts, fo.Detections):
            raise ValueError(
                f"prompt field {field!r} of {sample.filepath} holds "
                f"{type(prompts).__name__}, expected Detections"
            )
        image = to_rgb_uint8(arg)
        height, width = image.shape[:2]
        usable, windows, clicks = [], [], []
        for det in prompts.detections:
            x0, y0, x1, y1 = pixel_window(det.bounding_box, width, height)
            if x1 <= x0 or y1 <= y0:
                logger.warning(
                    "%s: prompt %s box %s covers no pixel of the %dx%d image; skipped",
                    sample.filepath,
                    det.id,
                    det.bounding_box,
                    width,
                    height,
                )
                continue
            points = det.get_field(POINTS_FIELD) if det.has_field(POINTS_FIELD) else None
            if points is not None:
                try:
                    points = parse_points(points, width=width, height=height, normalized=True)
                except PointsError as err:
                    logger.warning("%s: prompt %s: %s; skipped", sample.filepath, det.id, err)
                    continue
            usable.append(det)
            windows.append((x0, y0, x1, y1))
            clicks.append(points)
        if not usable:
            return fo.Detections()
        self.predictor.set_image(image)
        detections = []
        for start in range(0, len(usable), self.boxes_per_call):
            stop = start + self.boxes_per_call
            chunk = windows[start:stop]
            masks, scores = self._predict(chunk, clicks[start:stop])
            # review queue: sort the App by `box2mask.detections.quality` (lowest = likely error)
            quality = quality_score(quality_features(masks, chunk), scores).tolist()
            for det, window, mask, score, q in zip(
                usable[start:stop], chunk, masks, scores, quality, strict=True
            ):
                bbox = window_to_bbox(window, width, height)
                detections.append(
                    fo.Detection(
                        label=det.label,
                        bounding_box=bbox,
                        mask=crop_mask(mask, bbox),
                        tight_bbox=tight_bbox(mask),  # the mask's own box, to review a tightening
                        confidence=float(score),
                        quality=float(q),
                        source="model",
                        model_version=self.model_version,
                        prompt_id=det.id,
                        revision=1,
                    )
                )
        return fo.Detections(detections=detections)

    def _predict(self, windows, clicks):
        """Masks (N, H, W) and scores (N,) of the windows (XYXY pixels); a window with clicks
        (points, labels) is predicted alone with them, the rest together."""
        boxes = np.asarray(windows, dtype=np.float64)
        plain = [i for i, c in enumerate(clicks) if c is None]
        masks, scores = None, np.zeros(len(windows))
        if plain:
            some, some_scores = self.predictor.predict(boxes[plain])
            masks = np.zeros((len(windows), *some.shape[1:]), dtype=bool)
            masks[plain], scores[plain] = some, some_scores
        for i, c in enumerate(clicks):
            if c is not None:
                mask, scores[i] = predict_with_points(self.predictor, boxes[i], *c)
                if masks is None:
                    masks = np.zeros((len(windows), *mask.shape), dtype=bool)
                masks[i] = mask
        return masks, scores
