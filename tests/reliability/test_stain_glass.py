"""Class: stain normalisation on glass that is not 240 bright, and on fields with no tissue.

Macenko with the fixed Io = 240 took BreakHis glass (~215) for tissue and painted it purple;
Reinhard stretched an empty field's noise into pink; "1 fell back" did not say which file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from histoflow.config.preprocess import PreprocessConfig
from histoflow.core.images import read_image
from histoflow.preprocess.pipeline import Preprocessor, build_preprocessor
from histoflow.preprocess.stain import MacenkoNormalizer, ReinhardNormalizer, glass_brightness
from tests.conftest import need_data
from tests.reliability.tiny import error_line, invoke

DARK_GLASS = "SOB_B_A_14-22549AB_0.png"  # BreakHis field, glass ~214, a quarter tissue


def _glass_mask(img: np.ndarray) -> np.ndarray:
    return img.min(-1) >= 205  # BreakHis glass before normalisation


def test_auto_io_keeps_dark_glass_light():
    img = read_image(need_data("breakhis", "benign", DARK_GLASS))
    target = read_image(need_data("stills", "tiatoolbox_target_image.png"))
    glass = _glass_mask(img)
    fixed = MacenkoNormalizer(io=240).fit(target).transform(img)
    auto = MacenkoNormalizer(io="auto").fit(target).transform(img)
    # fixed 240: glass comes out dark (purple); auto: near the target's glass
    assert fixed[glass].mean() < 175
    assert auto[glass].mean() > fixed[glass].mean() + 25
    v = torch.from_numpy(img).permute(2, 0, 1).reshape(1, 3, -1).float()
    assert 205 <= float(glass_brightness(v).mean()) <= 225


def test_auto_io_is_stored_and_restored():
    target = read_image(need_data("stills", "tiatoolbox_target_image.png"))
    norm = MacenkoNormalizer(io="auto").fit(target)
    again = MacenkoNormalizer.from_state(norm.state_dict())
    img = read_image(need_data("breakhis", "benign", DARK_GLASS))
    assert again.io_auto and np.array_equal(again.transform(img), norm.transform(img))
    old = {k: v for k, v in norm.state_dict().items() if k != "io_auto"}  # states saved before io: auto
    assert not MacenkoNormalizer.from_state(old).io_auto
    assert PreprocessConfig.model_validate({"stain_norm": "macenko", "io": "auto"}).io == "auto"
    with pytest.raises(ValidationError):
        PreprocessConfig.model_validate({"stain_norm": "macenko", "io": "bright"})


@pytest.mark.parametrize("level", [214, 240])
def test_empty_field_is_left_unchanged(level):
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(level, 2.0, (64, 64, 3)), 0, 255).astype(np.uint8)
    target = read_image(need_data("stills", "tiatoolbox_target_image.png"))
    reinhard = ReinhardNormalizer().fit(target)
    assert np.array_equal(reinhard.transform(glass), glass) and reinhard.last_fallbacks == [True]
    macenko = MacenkoNormalizer(io="auto").fit(target)
    assert np.array_equal(macenko.transform(glass), glass)


def test_old_reinhard_state_keeps_its_behaviour():
    state = {"method": "reinhard", "target_mean": [70.0, 20.0, -10.0], "target_std": [15.0, 8.0, 6.0], "min_std": 0.5}
    pre = Preprocessor.from_state({"version": 1, "stain_norm": "reinhard", "normalizer": state, "clahe": None})
    assert pre.normalizer.min_tissue_fraction == 0.0


def test_normalize_names_the_files_that_fell_back(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    tissue = read_image(need_data("breakhis", "benign", DARK_GLASS))
    from PIL import Image

    Image.fromarray(tissue[:64, :64]).save(src / "tissue.png")
    Image.fromarray(np.full((64, 64, 3), 214, np.uint8)).save(src / "empty glass é.png")
    target = need_data("stills", "tiatoolbox_target_image.png")
    result = invoke(
        "normalize", str(src), "--target", str(target), "--out", str(tmp_path / "out"), "--method", "reinhard"
    )
    assert result.exit_code == 0, result.output
    assert "1 left unchanged" in result.output and "empty glass é.png" in result.output
    assert "left unchanged: " + str(src / "empty glass é.png") in result.output
    assert "left unchanged: " + str(src / "tissue.png") not in result.output
    error_line(invoke("normalize", str(src), "--out", str(tmp_path / "o2"), "--io", "bright"), "--io", "bright")
    assert build_preprocessor({"stain_norm": "macenko", "io": "auto"}).normalizer.io_auto
