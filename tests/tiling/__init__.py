"""Tests of histoflow.tiling."""
