"""The box-prompt crop learner: a small U-Net on each box's crop (`learner`), its training losses
(`losses`) and its predictor (`predictor.CropLearnerPredictor`, a residual over a base mask).

May import box2mask.ops, box2mask.io and box2mask.levelset (the base masks), nothing else of
box2mask.
"""
