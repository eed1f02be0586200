"""Grad-CAM gallery of a checkpoint on labelled data: the library behind `histoflow explain`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def explain_checkpoint(
    checkpoint: Path,
    data: Path,
    out: Path,
    n: int = 32,
    method: str = "gradcam",
    split: Optional[str] = None,
    threshold: float = 0.5,
    format: str = "auto",
    tta: bool = False,
    batch_size: int = 64,
    device: str | None = None,
) -> dict:
    """Grad-CAM gallery of a checkpoint on labelled data: out/gallery.png, gallery.csv, cams/.
    `tta`: cases and maps from the 8 dihedral views (histoflow.evaluate.gradcam.explain_gallery)."""
    from histoflow.checkpoint import load_checkpoint
    from histoflow.evaluate.gradcam import explain_gallery
    from histoflow.evaluate.run import dataset_for_checkpoint, labelled_manifest

    model, ckpt = load_checkpoint(checkpoint)
    manifest = labelled_manifest(
        data, format, split, unlabelled_hint="the gallery sorts cases into TP/FP/FN/TN and needs labels"
    )
    dataset = dataset_for_checkpoint(manifest, ckpt)
    caption = f"{split} split" if split else f"{data.name}"
    return explain_gallery(
        model,
        ckpt,
        dataset,
        out,
        n=n,
        method=method,
        threshold=threshold,
        caption=caption,
        tta=tta,
        batch_size=batch_size,
        device=device,
    )
