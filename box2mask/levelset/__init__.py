"""The embedded default segmenter (`segmenter.LevelSetSegmenter`, no checkpoint): level-set region
competition on each box's crop (`region_competition`), the floor that decides how far to trust an
evolved mask (`floor`), and the guided filter that snaps it to the image's edges (`guided_filter`).

May import box2mask.ops, nothing else of box2mask.
"""
