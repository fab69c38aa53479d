"""Pure tensor math shared by every part of box2mask: box formats and geometry, morphology, Lab
colour, the Chan-Vese level-set energy (ellipses, box masks), box projection, the local
consistency module, feature smoothing, mask metrics and quality signals.

Imports nothing else of box2mask.
"""
