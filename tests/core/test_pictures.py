"""The conventions every picture shares (histoflow.core.pictures)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from histoflow.core.pictures import (
    HATCH,
    UNSCORED,
    class_label,
    hatch,
    length_text,
    probability_label,
    scale_bar_um,
    value_colours,
)


def test_a_class_named_by_a_number_reads_as_a_class():
    assert probability_label("1") == "P(class 1)" and class_label(0) == "class 0"
    assert probability_label("tumour") == "P(tumour)" and class_label("Grade 2") == "Grade 2"


@pytest.mark.parametrize(
    ("width_um", "bar"), [(1110.0, 200.0), (4500.0, 500.0), (60000.0, 10000.0), (9.0, 1.0), (0.3, 0.05)]
)
def test_scale_bar_is_a_round_length_near_a_fifth_of_the_width(width_um, bar):
    assert scale_bar_um(width_um) == pytest.approx(bar)
    assert length_text(500) == "500 um" and length_text(2000) == "2 mm"


def test_value_colours_are_the_colour_bar_colours():
    values = np.array([0.0, 0.25, 0.5, 0.999, 1.0, 2.0, -1.0])
    lut = (matplotlib.colormaps["viridis"](np.clip(values, 0, 1))[:, :3] * 255).round()
    np.testing.assert_array_equal(value_colours(values), lut.astype(np.uint8))


def test_hatch_is_grey_lines_on_light_grey():
    canvas = np.zeros((8, 8, 3), np.uint8)
    where = np.zeros((8, 8), bool)
    where[:, 4:] = True
    hatch(canvas, where)
    assert (canvas[:, :4] == 0).all()  # outside untouched
    inside = canvas[:, 4:].reshape(-1, 3)
    assert {tuple(c) for c in inside} == {tuple(HATCH), (UNSCORED,) * 3}
