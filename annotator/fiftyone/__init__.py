"""FiftyOne integration: a dataset as a label store (`store`), `box2mask fiftyone` (`command`:
apply, evaluate, import / export, `transfer`), the model adapter (`model`), box <-> mask conversion
(`convert`), work shared out under torchrun (`shards`) and the App plugin (`plugin/`).

Imports fiftyone, box2mask and the label-store parts of annotator, never gradio; the rest of
annotator imports it only inside the functions that open a FiftyOne dataset, so `box2mask
annotate` runs without fiftyone. (`import fiftyone` in here is the library: imports are absolute.)
"""
