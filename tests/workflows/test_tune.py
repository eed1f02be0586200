"""histoflow tune: search-space checks (no training), a tiny real study that resumes, pruning
through the Lightning callback, storage errors, and a study shared through a real PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from histoflow.config import RunConfig, load_config
from histoflow.core.errors import ConfigError
from histoflow.workflows.tune.space import parse_space
from tests.conftest import need_data
from tests.pg import postgres_server  # noqa: F401 - fixture

optuna = pytest.importorskip("optuna")

TINY = {
    "name": "tiny",
    "seed": 7,
    "data": {"image_px": 32, "max_per_split": 24, "num_workers": 0, "cache": "memory"},
    "model": {"name": "simple_cnn", "params": {"widths": [8, 16]}},
    # cosine: OneCycle cannot schedule the 4-6 steps of a tiny run (ZeroDivisionError in torch)
    "train": {"epochs": 2, "batch_size": 16, "scheduler": {"name": "cosine"}},
}
SPACE = {
    "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "train.batch_size": [8, 16],
    "model.params": [{"widths": [8, 16]}, {"widths": [4, 8]}],
}


def tiny_config(tmp_path: Path, tune: dict | None = None, **sections) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["data"]["path"] = str(need_data("pcam"))
    raw["tune"] = SPACE if tune is None else tune
    raw.update(sections)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def space_error(tune: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_space(tune, RunConfig(), "cfg.yaml")
    return str(info.value)


# -- the space, checked before anything trains -------------------------------------------------


def test_space_full_keys_aliases_and_kinds():
    space = parse_space(
        {
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "train.batch_size": [64, 128],
            "model": ["simple_cnn"],
            "train.epochs": {"low": 1, "high": 4},
            "model.params": [{"widths": [8, 16]}],
            "pruner": "hyperband",
        },
        RunConfig(),
    )
    kinds = {p.key: p.kind for p in space.params}
    assert kinds == {
        "train.optimizer.lr": "float",
        "train.batch_size": "categorical",
        "model.name": "categorical",
        "train.epochs": "int",
        "model.params": "categorical",
    }
    assert space.settings.pruner == "hyperband" and space.settings.direction == "maximize"


def test_nested_section_applies_to_a_null_section():
    space = parse_space(
        {"augment.colour_jitter": {"brightness": {"low": 0.0, "high": 0.3}, "p": [0.5, 1.0]}}, RunConfig()
    )
    assert [p.key for p in space.params] == ["augment.colour_jitter.brightness", "augment.colour_jitter.p"]
    cfg = space.apply(RunConfig(), {"augment.colour_jitter.brightness": 0.2, "augment.colour_jitter.p": 0.5})
    assert cfg.augment.colour_jitter.brightness == 0.2 and cfg.augment.colour_jitter.contrast == 0.0
    assert cfg.tune == {}


def test_unknown_field_lists_close_matches():
    msg = space_error({"train.optimiser.lr": {"low": 1e-4, "high": 1e-2}})
    assert "cfg.yaml" in msg and "train.optimiser.lr" in msg and "train.optimizer.lr" in msg
    assert "colour_jitter" in space_error({"augment.color_jitter": [None]})
    assert "train.optimizer.lr" in space_error({"optimizer.lr": [0.1]})  # matched on its last part


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"lr": {"low": 0.01, "high": 0.01}}, "empty range"),
        ({"lr": {"low": 0.1, "high": 0.01}}, "inverted range"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log range needs low > 0"),
        ({"lr": {"low": 0.001}}, "needs both low and high"),
        ({"lr": {"low": 0.001, "hihg": 0.1}}, "unknown range key"),
        ({"train.batch_size": []}, "empty list of choices"),
        ({"train.batch_size": {"low": 8.5, "high": 64}}, "integer field"),
        ({"train.batch_size": [0, 64]}, "value 0 is not valid"),
        ({"train.optimizer.name": {"low": 1, "high": 2}}, "takes a list of choices"),
        ({"train.optimizer.name": ["adam", "rmsprop"]}, "'rmsprop' is not valid"),
        ({"model": ["simple_cnn", "resnet81"]}, "resnet18"),
        ({"tracking.uri": ["a", "b"]}, "cannot be searched"),
        ({"lr": 0.001}, "a fixed value belongs in the config"),
        ({"pruner": "medain"}, "did you mean median"),
        ({"pruner": "median"}, "names no parameter"),
        ({"lr": [0.1], "train.optimizer.lr": [0.2]}, "given twice"),
    ],
)
def test_bad_spaces_are_config_errors(spec, words):
    assert words in space_error(spec)


def test_samplers_and_pruners_follow_the_settings():
    from histoflow.workflows.tune.study import make_pruner, make_sampler

    base = RunConfig()
    space = parse_space({"lr": [0.1, 0.01], "pruner": "hyperband", "sampler": "random"}, base)
    assert isinstance(make_pruner(space, epochs=6), optuna.pruners.HyperbandPruner)
    assert isinstance(make_sampler(space, seed=1), optuna.samplers.RandomSampler)
    space = parse_space({"lr": [0.1, 0.01], "pruner": "none"}, base)
    assert isinstance(make_pruner(space, epochs=6), optuna.pruners.NopPruner)
    assert isinstance(make_sampler(space, seed=1), optuna.samplers.TPESampler)
    # seeded: the same seed proposes the same values
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(space, seed=3))
        draws.append([study.ask().suggest_float("x", 0, 1) for _ in range(3)])
    assert draws[0] == draws[1]


def test_baseline_values_inside_and_outside_the_space():
    base = RunConfig()
    inside = parse_space({"lr": {"low": 1e-4, "high": 1e-2}, "train.batch_size": [64, 128]}, base)
    assert inside.baseline_values(base) == {"train.optimizer.lr": 1e-3, "train.batch_size": 128}
    outside = parse_space({"train.batch_size": [8, 16]}, base)
    assert outside.baseline_values(base) is None


# -- real studies on a few dozen PCam patches -------------------------------------------------


def test_study_writes_outputs_and_resumes_with_the_same_command(tmp_path):
    from histoflow.workflows.tune.study import run_study

    cfg = load_config(tiny_config(tmp_path, train={**TINY["train"], "epochs": 1}))
    out = tmp_path / "study"
    result = run_study(cfg, out, n_trials=2)
    assert result.n_complete + result.n_pruned == 2 and result.best_value is not None
    trials = __import__("pandas").read_csv(out / "trials.csv")
    assert len(trials) == 2 and {"train.optimizer.lr", "train.batch_size", "model.params"} <= set(trials.columns)
    # trial 0 is the config's own values: the reference the search is measured against
    first = trials.iloc[0]
    assert bool(first["user_attrs_baseline"]) and first["train.optimizer.lr"] == pytest.approx(1e-3)
    assert result.baseline_value == pytest.approx(first["value"])
    best = load_config(out / "best.yaml")  # ready to train: a valid config with the best values
    assert best.tune == {} and best.train.optimizer.lr == pytest.approx(result.best_params["train.optimizer.lr"])
    assert best.model.params == result.best_params["model.params"]
    assert json.loads((out / "best.json").read_text())["best_trial"] == result.best_trial
    assert (out / "plots" / "optimization_history.png").stat().st_size > 1000
    assert (out / "trials" / f"trial_{result.best_trial:04d}" / "metrics.json").exists()

    # a crash leaves a RUNNING trial behind; the same command fails it and runs up to the total
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    study.ask()
    result = run_study(cfg, out, n_trials=3)
    states = [
        t.state.name for t in optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}").trials
    ]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") + states.count("PRUNED") == 3
    assert run_study(cfg, out, n_trials=3).n_complete == result.n_complete  # nothing left to do

    # the same study with another space is refused before anything trains
    changed = load_config(
        tiny_config(tmp_path, tune={**SPACE, "train.batch_size": [8, 32]}, train={**TINY["train"], "epochs": 1})
    )
    n_dirs = len(list((out / "trials").iterdir()))
    with pytest.raises(ConfigError, match=r"different search space(.|\n)*changed train.batch_size"):
        run_study(changed, out, n_trials=4)
    assert len(list((out / "trials").iterdir())) == n_dirs


def test_pruning_callback_stops_a_trial_early(tmp_path):
    """The Lightning pruning callback reports val_auc each epoch; a pruner that says "prune"
    stops training after the first validation, with no evaluation."""
    from histoflow.workflows.tune.study import make_objective

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    cfg = load_config(tiny_config(tmp_path, train={**TINY["train"], "epochs": 3}))
    space = parse_space(cfg.tune, cfg)
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune(), sampler=optuna.samplers.RandomSampler(0))
    study.optimize(make_objective(cfg, space, tmp_path / "out"), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]  # reported once, at epoch 0
    run_dir = Path(trial.user_attrs["run_dir"])
    assert len(__import__("pandas").read_csv(run_dir / "history.csv")) == 1
    assert not (run_dir / "metrics.json").exists()


def test_unreachable_storage_fails_fast_before_training(tmp_path):
    from histoflow.workflows.tune.study import run_study

    cfg = load_config(tiny_config(tmp_path))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="--storage postgresql://histoflow:\\*\\*\\*@127.0.0.1:9/"):
        run_study(cfg, tmp_path / "out", n_trials=2, storage="postgresql://histoflow:secret@127.0.0.1:9/optuna")
    assert time.perf_counter() - started < 15
    assert not (tmp_path / "out" / "trials").exists()


def test_no_trials_is_a_config_error(tmp_path):
    from histoflow.workflows.tune.study import run_study

    with pytest.raises(ConfigError, match="--trials"):
        run_study(load_config(tiny_config(tmp_path)), tmp_path / "out")


def test_cli_tune_reports_bad_space(tmp_path):
    from typer.testing import CliRunner

    from histoflow.cli import app

    cfg = tiny_config(tmp_path, tune={"train.optimizer.lr": {"low": 0.1, "high": 0.01}})
    result = CliRunner().invoke(app, ["tune", str(cfg), "--trials", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "inverted range" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, postgres_server):  # noqa: F811 - the fixture
    """Two workers (two run folders, as on two machines) fill one study in PostgreSQL to its total."""
    from histoflow.workflows.tune.study import run_study

    cfg = load_config(tiny_config(tmp_path, train={**TINY["train"], "epochs": 1}))
    first = run_study(cfg, tmp_path / "worker_a", n_trials=2, storage=postgres_server, study_name="shared")
    second = run_study(cfg, tmp_path / "worker_b", n_trials=3, storage=postgres_server, study_name="shared")
    study = optuna.load_study(study_name="shared", storage=postgres_server)
    assert len(study.trials) == 3 and first.n_complete + first.n_pruned == 2
    assert second.n_complete + second.n_pruned == 3
    assert len(list((tmp_path / "worker_b" / "trials").iterdir())) == 1  # only the missing trial ran there
    assert study.user_attrs["histoflow_search_space"]["metric"] == "val_auc"
    changed = load_config(tiny_config(tmp_path, tune={"lr": {"low": 1e-4, "high": 1e-2}}))
    with pytest.raises(ConfigError, match="different search space"):
        run_study(changed, tmp_path / "worker_c", n_trials=4, storage=postgres_server, study_name="shared")
