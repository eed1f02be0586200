"""Evaluation: metrics, plots, run evaluation."""
