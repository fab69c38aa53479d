"""FiftyOne plugin: the operator "Segment boxes with Box2Mask" on the App's current view.

Install: point FiftyOne at this folder
(`export FIFTYONE_PLUGINS_DIR=/path/to/annotator/fiftyone/plugin`) or link it into your plugins
folder; then press "`" in the App and search "Segment boxes".
It runs `annotator.fiftyone.apply.apply_masks` (resumable: samples already done are skipped).
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types


def _detections_fields(dataset) -> list[str]:
    import fiftyone as fo

    return sorted(
        name
        for name, f in dataset.get_field_schema().items()
        if getattr(f, "document_type", None) is fo.Detections
    )


class SegmentBoxes(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="segment_boxes",
            label="Segment boxes with Box2Mask",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = _detections_fields(ctx.dataset)
        if not fields:
            prop = inputs.str(
                "msg", label="This dataset has no Detections field", view=types.Warning()
            )
            prop.invalid = True
            return types.Property(inputs)
        choices = types.DropdownView()
        for name in fields:
            choices.add_choice(name, label=name)
        inputs.enum(
            "boxes_field",
            choices.values(),
            default="ground_truth" if "ground_truth" in fields else fields[0],
            required=True,
            label="Boxes field",
            description="Detections whose boxes prompt the masks (only read)",
            view=choices,
        )
        out = inputs.str(
            "out_field",
            default="box2mask",
            required=True,
            label="Output field",
            description="New Detections field for the masks (samples already in it are skipped)",
        )
        if ctx.params.get("out_field") and ctx.params.get("out_field") == ctx.params.get(
            "boxes_field"
        ):
            out.invalid = True
            out.error_message = "must differ from the boxes field (boxes are never overwritten)"
        inputs.str(
            "checkpoint",
            default="",
            label="Checkpoint",
            description="Trained Box2Mask checkpoint file; empty: the embedded level-set default",
        )
        inputs.enum("device", ["cpu", "cuda"], default="cpu", label="Device")
        return types.Property(inputs, view=types.View(label="Segment boxes with Box2Mask"))

    def execute(self, ctx):
        from annotator.fiftyone.apply import apply_masks
        from annotator.fiftyone.model import Box2MaskFiftyOneModel

        model = Box2MaskFiftyOneModel(
            checkpoint=ctx.params.get("checkpoint") or None,
            device=ctx.params.get("device", "cpu"),
        )
        result = apply_masks(
            ctx.target_view(),
            model,
            boxes_field=ctx.params["boxes_field"],
            out_field=ctx.params["out_field"],
            progress=False,
        )
        ctx.trigger("reload_dataset")
        return {
            "done": result.done,
            "skipped": result.skipped,
            "failed": result.failed,
            "model_version": model.model_version,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("done", label="Samples segmented")
        outputs.int("skipped", label="Samples already done")
        outputs.int("failed", label="Samples failed (rerun to retry)")
        outputs.str("model_version", label="Model")
        return types.Property(outputs)


def register(plugin):
    plugin.register(SegmentBoxes)
