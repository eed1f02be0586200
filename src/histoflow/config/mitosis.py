"""Mitosis schemas: candidate nuclei, window datasets cut around points, detection, hotspot scoring.

Distances are in microns (`*_um`) so one config works at any scanner resolution; sizes of the
images the classifier sees are in pixels at the model's `mpp`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from histoflow.config.base import Strict


class CandidateConfig(Strict):
    """Candidate nuclei: local maxima of the smoothed haematoxylin optical density (scikit-image
    rgb2hed), at least `min_distance_um` apart and at least `threshold` dark."""

    sigma_um: PositiveFloat = 0.5  # Gaussian smoothing before peak finding
    min_distance_um: PositiveFloat = 1.5
    threshold: float = Field(default=0.04, ge=0)  # haematoxylin optical density (rgb2hed units)


# point labels meaning a mitotic figure (MIDOG's "mitotic figure", AMi-Br's normal/atypical) and an
# annotated non-mitosis (MIDOG++ "non-mitotic figure" imposters, MIDOG 2021 "hard negative")
MITOSIS_LABELS = ("mitosis", "mitotic figure", "mitotic", "mitoses", "mf", "normal", "atypical", "1", "true", "yes")
NEGATIVE_LABELS = (
    "non-mitotic figure", "not mitotic figure", "non-mitosis", "not mitosis", "non-mitotic", "hard negative",
    "imposter", "mitotic-like figure", "mitosis-like", "look-alike", "lookalike", "other", "negative",
    "0", "false", "no",
)  # fmt: skip


class WindowSplit(Strict):
    val_fraction: float = Field(default=0.15, ge=0, lt=1)
    test_fraction: float = Field(default=0.15, ge=0, lt=1)


class MitosisWindowsConfig(Strict):
    """`histoflow mitosis windows`: AMi-Br crops, or your own images with a points file ->
    candidate-centred windows, mitosis vs other."""

    data: str = "${HISTOFLOW_DATA}/ami_br"  # AMi-Br folder, used when `points` is not given
    # your own data: a points CSV (image|file_name|slide,x,y[,label][,mpp]) or a MIDOG++/COCO JSON
    points: str | None = None
    images: str | None = None  # folder the points file's image names are relative to [its own folder]
    mpp: PositiveFloat | None = None  # microns per pixel of images the points file gives none for
    # labels (case, '-' and '_' ignored) of positives and of annotated non-mitoses (windows labelled other);
    # any other label is refused. Without a label column every point is a mitosis.
    mitosis_labels: list[str] = Field(default_factory=lambda: list(MITOSIS_LABELS))
    negative_labels: list[str] = Field(default_factory=lambda: list(NEGATIVE_LABELS))
    bbox_format: Literal["xyxy", "xywh"] = "xyxy"  # JSON boxes: MIDOG/MIDOG++ [x1,y1,x2,y2], COCO proper [x,y,w,h]
    on_duplicate: Literal["raise", "drop"] = "raise"  # points of one image within duplicate_px of another
    duplicate_px: float = Field(default=0.0, ge=0)
    window_px: PositiveInt = 48
    # windows must not show where they lie in a crop: `inside` keeps only windows wholly inside
    # the crop's image (never its border or the black fill past a slide's edge); `reflect` pads
    # by mirroring, so every candidate gets a window, at the price of mirrored edges
    border: Literal["inside", "reflect"] = "inside"
    positive_radius_um: PositiveFloat = 3.0  # candidates this near a mitosis are positives too
    match_radius_um: PositiveFloat = 7.5  # candidates nearer than this (but not positive) are left out
    candidates: CandidateConfig = Field(default_factory=CandidateConfig)
    split: WindowSplit = Field(default_factory=WindowSplit)
    seed: int = 0


class DetectConfig(Strict):
    """How a window classifier becomes a detector (stored in the detector checkpoint)."""

    proposals: Literal["candidates", "grid"] = "candidates"  # candidate nuclei, or a dense grid + peak finding
    grid_stride_px: PositiveInt = 4  # grid proposals: window centres every this many pixels
    # detections nearer than this to a higher-scoring one are dropped: the matching radius, since two
    # detections closer than it cannot both be true unless two mitoses are (docs/mitosis.md: the sweep)
    nms_um: PositiveFloat = 7.5
    match_radius_um: PositiveFloat = 7.5  # MIDOG's evaluation radius
    border: Literal["inside", "reflect"] = "inside"
    batch_size: PositiveInt = 512
    mpp_tolerance: float = Field(default=0.12, ge=0, lt=1)  # relative mpp difference accepted without resampling
    candidates: CandidateConfig = Field(default_factory=CandidateConfig)


class GradingConfig(Strict):
    """Mitotic count in the densest region -> score 1/2/3 (Nottingham grading, Elston & Ellis 1991).

    The score's cut-offs depend on the area counted. Defaults: 2 mm^2, about ten high-power
    fields of 0.50 mm diameter (0.196 mm^2 each), for which the field-area table of the Nottingham
    method (reproduced in the RCPath and CAP breast reporting protocols) gives score 1 for 0-7
    mitoses, 2 for 8-14 and 3 for 15 or more. `cuts` are the counts at which scores 2 and 3 begin;
    change them with `area_mm2` (CAP's 0.59 mm fields: 2.74 mm^2 and cuts 10, 21, i.e. >20 is 3)."""

    area_mm2: PositiveFloat = 2.0
    cuts: tuple[PositiveInt, PositiveInt] = (8, 15)
    heatmap_um: PositiveFloat = 250.0  # side of a density heatmap cell


class AtypiaCVConfig(Strict):
    """`histoflow mitosis atypia-cv`: normal vs atypical, slide-grouped k-fold cross-validation."""

    data: str = "${HISTOFLOW_DATA}/ami_br"
    run: str | None = None  # run config YAML (histoflow train) for every fold; null: the built-in recipe
    folds: PositiveInt = 5
    val_fraction: float = Field(default=0.15, gt=0, lt=1)  # of each fold's training slides, for model selection
    seed: int = 0
    n_boot: PositiveInt = 2000
