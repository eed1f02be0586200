"""Hyper-parameter search with Optuna (`histoflow tune`); optuna is imported only when a study runs."""

from histoflow.tune.space import SearchSpace, parse_space

__all__ = ["SearchSpace", "parse_space", "run_study"]


def run_study(*args, **kwargs):
    from histoflow.tune.study import run_study as _run

    return _run(*args, **kwargs)
