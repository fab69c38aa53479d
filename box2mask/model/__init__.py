"""Box2Mask-T, the trained full-image model: the network (backbone, pixel decoder, masked-attention
decoder, box prompts; `box2mask_model.build_model`), its config, losses and matcher, the checkpoint
that rebuilds it, and its predictor (`predictor.Box2MaskPredictor`, run options in
`fast_inference`).

May import box2mask.ops, box2mask.io and box2mask.levelset (the predictor's optional region
refinement), nothing else of box2mask.
"""
