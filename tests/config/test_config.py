"""YAML config, --set overrides, unknown keys with close matches, atomic save."""

from __future__ import annotations

import pytest

from histoflow.config import apply_overrides, load_config, save_config
from histoflow.core.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {epochs: 3}\nmodel: {name: resnet18}\n")
    cfg = load_config(path, ["train.optimizer.lr=3e-4", "augment.dihedral=true", "model.params={widths: [8, 16]}"])
    assert cfg.train.epochs == 3 and cfg.train.optimizer.lr == 3e-4
    assert cfg.augment.dihedral is True and cfg.model.params == {"widths": [8, 16]}
    saved = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(saved) == cfg
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_unknown_key_names_close_match(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epocs: 3}\n")
    with pytest.raises(ConfigError, match=r"train\.epocs: unknown key \(did you mean train\.epochs"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"data\.image_pix: unknown key \(did you mean data\.image_px"):
        load_config(None, ["data.image_pix=64"])


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="expects key=value"):
        apply_overrides({}, ["train.epochs"])


def test_recipes_in_configs_folder_are_valid():
    from pathlib import Path

    from histoflow.config.base import load_model_config
    from histoflow.config.study import StudyConfig

    recipes = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert recipes, "configs/ holds the ready recipes"
    for recipe in recipes:
        if recipe.name.startswith("study_"):  # a whole-slide study (histoflow study), not a run
            load_model_config(StudyConfig, recipe)
        else:
            load_config(recipe)


def test_duplicate_key_is_refused_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys; a second `train:` block would silently drop the first."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nmodel: {name: resnet18}\ntrain:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'train' appears twice \(first on line 1\)"):
        load_config(path)
    nested = tmp_path / "n.yaml"
    nested.write_text("train: {epochs: 3, epochs: 4}\n")
    with pytest.raises(ConfigError, match="'epochs' appears twice"):
        load_config(nested)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
