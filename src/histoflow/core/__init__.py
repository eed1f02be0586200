"""The bottom layer: errors, atomic writes, progress, optional imports, runtime tuning, paths.

Nothing here imports another histoflow package; everything else may import from here.
"""
