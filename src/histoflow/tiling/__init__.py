"""histoflow.tiling"""
