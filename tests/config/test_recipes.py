"""Recipes by bare name from any folder (`histoflow train pcam_simple_cnn`), and the error that lists them."""

from __future__ import annotations

import pytest

from histoflow.config import load_config
from histoflow.core.errors import ConfigError
from histoflow.core.paths import find_recipe, recipe_names
from tests.conftest import REPO


def test_a_recipe_loads_by_name_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("pcam_simple_cnn").name == "pcam_simple_cnn"
    assert load_config("tupac_resnet50.yaml").model.name == "resnet50"
    assert find_recipe("mil/pcam_bags") == REPO / "configs" / "mil" / "pcam_bags.yaml"


def test_every_shipped_recipe_is_reachable_and_an_unknown_name_lists_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = sorted(str(p.relative_to(REPO / "configs").with_suffix("")) for p in (REPO / "configs").rglob("*.yaml"))
    assert set(shipped) <= set(recipe_names())
    with pytest.raises(
        ConfigError, match=r"pcam_simgle_cnn: config file not found \(recipes by name: .*pcam_simple_cnn"
    ):
        load_config("pcam_simgle_cnn")


def test_a_local_file_wins_over_a_recipe_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pcam_simple_cnn.yaml").write_text("name: mine\n")
    assert load_config("pcam_simple_cnn.yaml").name == "mine"
