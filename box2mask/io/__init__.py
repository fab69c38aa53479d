"""Files in and out: atomic writes, image loading, COCO RLE, streaming COCO files, the on-disk
cache of image encodings, and the checkpoint format (save, load, checks; any kind of model).

May import box2mask.ops, nothing else of box2mask.
"""
