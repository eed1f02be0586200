"""Grad-CAM / Grad-CAM++ explanations and a gallery of the most confident TP / FP / FN / TN.

Built on pytorch-grad-cam (jacobgil/pytorch-grad-cam): it is maintained, implements both
methods (and more) behind one API, and needs only the target layer, which every histoflow
backbone names as `gradcam_layer` (simple CNN: last ReLU; timm: last `feature_info` stage;
concat ensemble: its first member). Captum would do as well but is a heavier dependency that
histoflow does not otherwise need.

Binary models have one logit: the target for class 1 is the logit, for class 0 its negative
(pytorch-grad-cam's BinaryClassifierOutputTarget), so "evidence for the predicted class" means
the same thing for binary and multi-class models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histoflow.core.errors import ConfigError, DataError
from histoflow.core.io import atomic_path

log = logging.getLogger(__name__)
METHODS = ("gradcam", "gradcam++")
CATEGORIES = ("true positive", "false positive", "false negative", "true negative")


def _cam_class(method: str):
    from histoflow.core.optional import require

    cams = require("pytorch_grad_cam", extra="explain")
    GradCAM, GradCAMPlusPlus = cams.GradCAM, cams.GradCAMPlusPlus

    try:
        return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}[method]
    except KeyError:
        raise ConfigError(f"explain method must be one of {METHODS}, got {method!r}") from None


def _targets(model, classes: np.ndarray) -> list:
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    if model.num_outputs == 1:
        return [BinaryClassifierOutputTarget(int(c)) for c in classes]
    return [ClassifierOutputTarget(int(c)) for c in classes]


def _leave_inference_mode(model) -> None:
    """Clone parameters/buffers that became inference tensors (e.g. `predict_batches` moves the
    model to channels_last under torch.inference_mode); autograd refuses to save those."""
    with torch.no_grad():
        for module in model.modules():
            for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if t is not None and t.is_inference():
                    if isinstance(t, torch.nn.Parameter):
                        module._parameters[name] = torch.nn.Parameter(t.clone(), requires_grad=t.requires_grad)
                    else:
                        module._buffers[name] = t.clone()


def _vit_adapter(model, layer):
    """(layer, reshape_transform) for transformer backbones; (layer, None) for CNNs.

    A timm ViT hands out token sequences (N, prefix + H*W, C), not maps: drop the prefix tokens
    (class/register) and fold the rest into (N, C, H, W). Hook the last block's first norm, as
    pytorch-grad-cam's ViT tutorial does: with a class-token head, the last block's own patch
    outputs never reach the logits, so their gradients are zero.
    """
    inner = getattr(model.backbone, "model", None)
    prefix = getattr(inner, "num_prefix_tokens", None)
    if prefix is None or not hasattr(layer, "norm1"):
        return layer, None

    def to_map(t: torch.Tensor) -> torch.Tensor:
        tokens = t[:, prefix:, :]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise ConfigError(f"{type(inner).__name__}: {tokens.shape[1]} patch tokens do not form a square grid")
        return tokens.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)

    return layer.norm1, to_map


def explain_images(
    model,
    images: np.ndarray,
    classes=None,
    method: str = "gradcam",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(N, H, W) maps in [0, 1] for uint8 images (N, H, W, 3), explaining `classes` (default: predicted)."""
    cam_cls = _cam_class(method)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"explain_images: expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    layer = model.gradcam_layer
    if not any(m is layer for m in model.modules()) or isinstance(layer, torch.nn.Identity):
        raise ConfigError(
            f"{type(model.backbone).__name__}: this model has no spatial feature map to explain "
            f"(Grad-CAM needs a convolutional backbone)"
        )
    model = model.eval().to(device)
    _leave_inference_mode(model)
    out = []
    layer, reshape = _vit_adapter(model, layer)
    with cam_cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            # float in [0, 1]: the model's Preprocess takes it as it takes uint8 / 255; requires_grad
            # keeps gradients flowing even when the backbone was frozen for training
            x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div(255).to(device).requires_grad_(True)
            if classes is None:
                with torch.no_grad():
                    chunk_classes = model.probabilities(model(x)).argmax(1).cpu().numpy()
            else:
                chunk_classes = np.asarray(classes)[start : start + batch_size]
            maps = cam(input_tensor=x, targets=_targets(model, chunk_classes))
            if not cam.activations_and_grads.gradients:
                raise ConfigError(
                    f"{type(model.backbone).__name__}: no gradient reached layer "
                    f"{type(layer).__name__}; it is not on the path to the output"
                )
            out.append(maps)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *images.shape[1:3]), np.float32)


DIHEDRAL = tuple((flip, k) for flip in (False, True) for k in range(4))  # the 8 views of TTA


def dihedral_view(images: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """View `(flip, k)` of (N, H, W[, C]) arrays as histoflow.data.transforms.dihedral_views makes
    it of NCHW batches: mirrored left-right, then turned k quarter turns."""
    out = images[:, :, ::-1] if flip else images
    return np.ascontiguousarray(np.rot90(out, k, axes=(1, 2)))


def undo_dihedral_view(maps: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """Maps (N, H, W) computed on view `(flip, k)`, back in the original orientation."""
    out = np.rot90(maps, -k, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if flip else out)


def tta_cams(explain, images: np.ndarray) -> np.ndarray:
    """The mean of `explain`'s maps of the 8 dihedral views of `images`, each mapped back to the
    original orientation, rescaled to [0, 1] per image as each single map is. `explain`: uint8
    images (N, H, W, 3) -> maps (N, H, W), e.g. explain_images with the classes fixed."""
    total = sum(undo_dihedral_view(explain(dihedral_view(images, f, k)), f, k) for f, k in DIHEDRAL)
    mean = np.asarray(total, dtype=np.float32) / len(DIHEDRAL)
    low = mean.min(axis=(1, 2), keepdims=True)
    span = mean.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (mean - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    """The map as a JET heatmap over the patch (uint8 RGB)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255, cam, use_rgb=True, image_weight=image_weight)


@dataclass
class GalleryItem:
    category: str
    index: int
    path: str
    label: str
    predicted: str
    probability: float  # of the positive class (binary) or of the predicted class
    tta: bool = False  # probability and map: means over the 8 dihedral views


def pick_gallery(y: np.ndarray, probs: np.ndarray, n: int, threshold: float = 0.5) -> list[tuple[str, int]]:
    """(category, row) for the most confident cases of each category, n in all (n/4 per category).

    Binary: TP / FP / FN / TN, most confident = furthest from the threshold on the wrong or
    right side. Multi-class: the most confident correct and wrong predictions.
    """
    y = np.asarray(y)
    if len(y) == 0:
        raise DataError("explain: no predictions to choose a gallery from")
    if probs.shape[1] == 2:
        p = probs[:, 1]
        called = p >= threshold
        sets = {
            "true positive": (called & (y == 1), -p),
            "false positive": (called & (y == 0), -p),
            "false negative": (~called & (y == 1), p),
            "true negative": (~called & (y == 0), p),
        }
    else:
        conf, pred = probs.max(1), probs.argmax(1)
        sets = {"correct": (pred == y, -conf), "wrong": (pred != y, -conf)}
    per = max(1, n // len(sets))
    picked = []
    for name, (mask, key) in sets.items():
        rows = np.flatnonzero(mask)
        picked += [(name, int(i)) for i in rows[np.argsort(key[rows], kind="stable")][:per]]
    return picked


def explain_gallery(
    model,
    ckpt,
    dataset,
    out_dir: Path,
    n: int = 32,
    method: str = "gradcam",
    threshold: float = 0.5,
    probs: np.ndarray | None = None,
    caption: str = "",
    tta: bool = False,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> dict:
    """Write gallery.png (+ gallery.csv, one overlay PNG per case) to `out_dir`; returns a summary.
    `caption`: which images these are, for the gallery's title (e.g. "val split"). `tta`: cases
    picked by the 8-view mean probability (as `evaluate --tta` scores them), each map the mean of
    the 8 views' maps in the original orientation. `device`: None: cuda when available."""
    import pandas as pd
    from PIL import Image

    from histoflow.predict.patches import default_device, predict_dataset

    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else default_device()
    if probs is None:
        probs = predict_dataset(model, dataset, batch_size=batch_size, workers=0, tta=tta, device=device)
    y = dataset.labels
    picked = pick_gallery(y, probs, n, threshold)
    if not picked:
        raise DataError("explain: no case to show")
    images = np.stack([dataset.load(i) for _, i in picked])
    classes = [int(probs[i].argmax()) if probs.shape[1] > 2 else int(probs[i, 1] >= threshold) for _, i in picked]

    def explain(views: np.ndarray) -> np.ndarray:
        return explain_images(model, views, classes, method=method, batch_size=batch_size, device=device)

    cams = tta_cams(explain, images) if tta else explain(images)
    names = ckpt.class_names
    items = []
    cam_dir = out_dir / "cams"
    cam_dir.mkdir(parents=True, exist_ok=True)
    for k, ((category, i), img, cam, c) in enumerate(zip(picked, images, cams, classes)):
        p = float(probs[i, 1] if probs.shape[1] == 2 else probs[i, c])
        items.append(GalleryItem(category, i, dataset.path(i), names[y[i]], names[c], round(p, 4), tta))
        with atomic_path(cam_dir / f"{k:03d}_{category.replace(' ', '_')}.png") as tmp:
            Image.fromarray(overlay(img, cam)).save(tmp)
    frame = pd.DataFrame([vars(it) for it in items])
    with atomic_path(out_dir / "gallery.csv") as tmp:
        frame.to_csv(tmp, index=False)
    gallery_plot(
        images,
        cams,
        items,
        out_dir / "gallery.png",
        method,
        positive_class=names[1] if probs.shape[1] == 2 else None,
        caption=caption,
        threshold=threshold,
        tta=tta,
    )
    counts = frame["category"].value_counts().to_dict()
    return {
        "method": method,
        "n": len(items),
        "counts": counts,
        "gallery": str(out_dir / "gallery.png"),
        "positive_class": names[1] if probs.shape[1] == 2 else None,
        "layer": type(model.gradcam_layer).__name__,
        "tta": tta,
    }


def gallery_plot(
    images,
    cams,
    items: list[GalleryItem],
    path: Path,
    method: str,
    positive_class: str | None = None,
    caption: str = "",
    threshold: float = 0.5,
    tta: bool = False,
) -> Path:
    """Rows of (patch, overlay) pairs grouped by category, each titled with its category, the
    probability and the file name, a colour bar of the Grad-CAM scale, and a title that says
    which categories had no case; `positive_class`: the class a binary model's "positive" means
    (None: multi-class), `caption`: the images explained (e.g. "val split"), `tta`: the maps and
    probabilities are 8-view means (the title says so)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from histoflow.core.pictures import probability_label
    from histoflow.evaluate.plots import _save, plt

    cols = 4  # pairs per row
    rows = max(1, int(np.ceil(len(items) / cols)))
    layout = ConstrainedLayoutEngine(w_pad=0.02, h_pad=0.04, wspace=0.02, hspace=0.02)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.55, rows * 2.05 + 1.0), squeeze=False, layout=layout)
    for ax in axes.flat:
        ax.axis("off")
    for k, (img, cam, it) in enumerate(zip(images, cams, items)):
        r, c = divmod(k, cols)
        axes[r, 2 * c].imshow(img)
        axes[r, 2 * c + 1].imshow(overlay(img, cam))
        prob = (
            f"{probability_label(positive_class)} {it.probability:.3f}"
            if positive_class is not None
            else f"{probability_label(it.predicted)} {it.probability:.3f}"
        )
        axes[r, 2 * c].set_title(f"{it.category}\n{prob}", fontsize=8, loc="left")
        axes[r, 2 * c + 1].set_title(_short(Path(it.path).name), fontsize=7.5, loc="left", color="0.3")
    name = "Grad-CAM++" if method == "gradcam++" else "Grad-CAM"
    title = f"{name} of the predicted class" + (f": {caption}" if caption else "")
    if tta:
        title += f", TTA (maps and probabilities: means of the {len(DIHEDRAL)} dihedral views)"
    shown = {it.category for it in items}
    if positive_class is not None:
        absent = [c for c in CATEGORIES if c not in shown]
        cut = f"{probability_label(positive_class)} >= {threshold:g} called positive"
        title += f"\n{cut}" + (f"; no {', no '.join(absent)} among these images" if absent else "")
    fig.suptitle(title, fontsize=10)
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), "jet"),
        ax=axes[-1, :],
        location="bottom",
        shrink=0.35,
        aspect=40,
        label=f"{name}: 0 no evidence, 1 strongest evidence (blended over the patch)",
    )
    return _save(fig, Path(path))


def _short(name: str, keep: int = 26) -> str:
    """A file name cut in the middle to `keep` characters, so its end (the number) stays."""
    return name if len(name) <= keep else f"{name[: keep // 2 - 1]}...{name[-(keep - keep // 2 - 2) :]}"
