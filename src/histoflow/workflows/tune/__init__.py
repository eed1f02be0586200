"""Hyper-parameter search with Optuna (`histoflow tune`); optuna is imported only when a study runs."""

from histoflow.workflows.tune.space import SearchSpace, parse_space

__all__ = ["SearchSpace", "parse_space", "run_study"]


def run_study(*args, **kwargs):
    from histoflow.workflows.tune.study import run_study as _run

    return _run(*args, **kwargs)
