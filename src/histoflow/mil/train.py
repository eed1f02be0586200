"""Train attention MIL on stored embeddings with slide (bag) labels only.

Splits are made on patients (StratifiedGroupKFold), so no patient's slides sit on both sides.
The epoch with the best validation metric is kept (AUC for binary, quadratic weighted kappa for
ordinal, as TUPAC16 reported it, accuracy for multiclass); the test split is scored once, at
the end. When bags carry instance labels (bags built from labelled patches), the attention
weights are scored too: AUC of attention vs patch label within each bag.

    OUT/config.yaml  OUT/mil.pt  OUT/history.csv  OUT/metrics.json  OUT/predictions.csv
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
import yaml
from pydantic import ValidationError

from histoflow.config.mil import MILConfig, MILData
from histoflow.core.errors import ConfigError, DataError
from histoflow.core.io import atomic_write_bytes, atomic_write_json
from histoflow.mil.model import GatedAttentionMIL, predict_bag, save_mil

log = logging.getLogger(__name__)
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def load_mil_config(path: str | Path | None, overrides: list[str] | None = None) -> MILConfig:
    from histoflow.config import apply_overrides

    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
    raw = apply_overrides(raw, overrides)
    try:
        return MILConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid MIL config {path or '(overrides)'}:\n" + "\n".join(lines)) from None


# -- data ----------------------------------------------------------------------------------------------
def load_bags(cfg: MILData) -> tuple[list[dict], list[str]]:
    """Bags (id, group, y, features, instance labels or None) and the class names in order."""
    path = Path(cfg.labels)
    if not path.is_file():
        raise DataError(f"{path}: MIL label file not found")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for col in (cfg.id_column, cfg.label_column) + ((cfg.group_column,) if cfg.group_column else ()):
        if rows and col not in rows[0]:
            raise DataError(f"{path}: no column {col!r} (columns: {list(rows[0])})")
    raw_labels = [r[cfg.label_column] for r in rows]
    classes = cfg.classes or sorted(set(raw_labels), key=lambda s: (float(s) if _num(s) else np.inf, s))
    unknown = set(raw_labels) - set(classes)
    if unknown:
        raise DataError(f"{path}: labels {sorted(unknown)} are not in data.classes {classes}")
    bags, missing = [], []
    made_by: dict[str, dict] = {}  # bag id -> what embedded it (embed.json), for slides
    for r in rows:
        d = Path(cfg.embeddings) / r[cfg.id_column]
        f = d / "embeddings.npy"
        if not f.is_file():
            missing.append(r[cfg.id_column])
            continue
        if (d / "embed.json").is_file():
            made_by[r[cfg.id_column]] = embedding_identity(json.loads((d / "embed.json").read_text()))
        feats = np.load(f).astype(np.float32)
        if not len(feats):
            log.warning("%s: no tiles embedded; left out", r[cfg.id_column])
            continue
        inst = np.load(d / "instance_labels.npy") if (d / "instance_labels.npy").is_file() else None
        bags.append(
            {
                "id": r[cfg.id_column],
                "group": r[cfg.group_column] if cfg.group_column else r[cfg.id_column],
                "y": classes.index(r[cfg.label_column]),
                "split": SPLIT_NAMES.get((r.get(cfg.split_column) or "").strip().lower(), "")
                if cfg.split_column
                else "",
                "x": feats,
                "inst": inst,
            }
        )
    if missing:
        raise DataError(
            f"{cfg.embeddings}: no embeddings for {len(missing)} bag(s) listed in {path}, "
            f"e.g. {missing[:3]} (run `histoflow embed` first)"
        )
    check_one_embedding(made_by, Path(cfg.embeddings))
    if len({b["x"].shape[1] for b in bags}) > 1:
        raise DataError(f"{cfg.embeddings}: bags have different feature sizes (embedded with different backbones?)")
    return bags, classes


IDENTITY_KEYS = ("encoder", "weights_sha256", "checkpoint_fingerprint", "tile_px", "mpp")


def embedding_identity(report: dict) -> dict:
    """What made a slide's embeddings (an embed.json): the encoder and its weights file's sha256,
    or the checkpoint's fingerprint; and the tile size and mpp."""
    return {k: report[k] for k in IDENTITY_KEYS if report.get(k) is not None}


def describe_embedding(ident: dict) -> str:
    if "encoder" in ident:
        sha = str(ident.get("weights_sha256", "?"))
        what = f"encoder {ident['encoder']!r} (weights {sha if len(sha) < 16 else 'sha256 ' + sha[:12] + '...'})"
    else:
        what = f"checkpoint {ident.get('checkpoint_fingerprint', '?')}"
    return f"{what}, {ident.get('tile_px', '?')} px at {ident.get('mpp', '?')} um/px"


def check_one_embedding(made_by: dict[str, dict], where: Path) -> None:
    """Refuse bags embedded by different encoders, weights or resolutions: their features live in
    different spaces, and a MIL model trained on the mix means nothing for either."""
    first = next(iter(made_by.items()), None)
    for bag_id, ident in made_by.items():
        if first is not None and ident != first[1]:
            raise DataError(
                f"{where}: slides embedded differently: {first[0]} with {describe_embedding(first[1])}, "
                f"{bag_id} with {describe_embedding(ident)}. Train MIL on embeddings of one encoder at one "
                f"resolution (re-embed with `histoflow embed` into another folder)"
            )


def _num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def split_groups(y: np.ndarray, groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'val'/'test' per bag, whole groups (patients) on one side, stratified on y."""
    from sklearn.model_selection import StratifiedGroupKFold

    split = np.array(["train"] * len(y), dtype=object)
    rest = np.arange(len(y))
    for name, frac in (("test", test_fraction), ("val", val_fraction / max(1e-9, 1 - test_fraction))):
        if frac <= 0:
            continue
        n_splits = max(2, round(1 / frac))
        if len(set(groups[rest])) < n_splits:
            raise DataError(f"MIL split: {len(set(groups[rest]))} patients are too few for a {frac:.0%} {name} split")
        skf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, held = next(skf.split(rest, y[rest], groups[rest]))
        split[rest[held]] = name
        rest = rest[split[rest] == "train"]
    return split


# -- metrics -------------------------------------------------------------------------------------------
def bag_metrics(task: str, y: np.ndarray, probs: np.ndarray, pred: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, cohen_kappa_score, roc_auc_score

    m = {"n": int(len(y)), "accuracy": float(accuracy_score(y, pred))}
    if len(set(y)) < 2:
        return m
    if task == "binary":
        m["auc"] = float(roc_auc_score(y, probs[:, 1]))
    else:
        try:
            m["auc_ovr_macro"] = float(roc_auc_score(y, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))
        except ValueError:
            pass
    if task == "ordinal":
        m["quadratic_kappa"] = float(cohen_kappa_score(y, pred, weights="quadratic"))
    return m


def attention_metrics(atts: list[np.ndarray], insts: list[np.ndarray | None]) -> dict:
    """AUC of attention vs instance label: mean over bags holding both kinds, and pooled over
    bags after ranking within each bag (attention is only comparable inside its own bag)."""
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    per_bag, ranks, labels = [], [], []
    for a, inst in zip(atts, insts):
        if inst is None or len(set(inst.tolist())) < 2:
            continue
        per_bag.append(roc_auc_score(inst, a))
        ranks.append(rankdata(a) / len(a))
        labels.append(inst)
    if not per_bag:
        return {}
    return {
        "attention_auc_mean_per_bag": float(np.mean(per_bag)),
        "attention_bags": len(per_bag),
        "attention_auc_pooled_within_bag_rank": float(roc_auc_score(np.concatenate(labels), np.concatenate(ranks))),
    }


def _evaluate(model, bags, task) -> tuple[dict, list[dict]]:
    outs = [predict_bag(model, b["x"]) for b in bags]
    y = np.array([b["y"] for b in bags])
    probs = np.array([o["probabilities"] for o in outs])
    pred = np.array([o["prediction"] for o in outs])
    m = bag_metrics(task, y, probs, pred) if len(bags) else {"n": 0}
    m.update(attention_metrics([o["attention"] for o in outs], [b["inst"] for b in bags]))
    return m, outs


def _select_key(task: str) -> str:
    return {"binary": "auc", "ordinal": "quadratic_kappa", "multiclass": "accuracy"}[task]


# -- training ------------------------------------------------------------------------------------------
def train_mil(cfg: MILConfig, out: str | Path | None = None) -> dict:
    out = Path(out or cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False).encode())
    torch.manual_seed(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    # one bag per step is a few tiny matmuls: extra intra-op threads only add contention
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg, out, rng)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: MILConfig, out: Path, rng) -> dict:
    bags, classes = load_bags(cfg.data)
    if len(classes) < 2:
        raise DataError(f"{cfg.data.labels}: need at least 2 classes, got {classes}")
    if cfg.data.task == "binary" and len(classes) != 2:
        raise ConfigError(f"data.task binary needs 2 classes, got {classes} (use multiclass or ordinal)")
    y = np.array([b["y"] for b in bags])
    given = np.array([b["split"] for b in bags], dtype=object)
    if all(given) and "train" in set(given):  # the labels' own split, as tile training keeps it
        split = given
    else:
        split = split_groups(
            y, np.array([b["group"] for b in bags]), cfg.data.val_fraction, cfg.data.test_fraction, cfg.train.seed
        )
    parts = {s: [b for b, t in zip(bags, split) if t == s] for s in ("train", "val", "test")}
    in_features = bags[0]["x"].shape[1]
    model = GatedAttentionMIL(in_features, len(classes), cfg.data.task, **cfg.model.model_dump())
    tiles = np.concatenate([b["x"] for b in parts["train"]])
    model.feat_mean.copy_(torch.from_numpy(tiles.mean(0)))
    model.feat_std.copy_(torch.from_numpy(tiles.std(0) + 1e-6))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    key = _select_key(cfg.data.task)
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = []
    best = -np.inf
    t0 = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        model.train()
        losses = []
        for i in rng.permutation(len(parts["train"])):  # one bag per step: bags differ in size
            b = parts["train"][i]
            out_b, _ = model(torch.from_numpy(b["x"]))
            loss = model.loss(out_b, b["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val, _ = _evaluate(model, parts["val"] or parts["train"], cfg.data.task)
        score = val.get(key, val["accuracy"])
        history.append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in val.items()}}
        )
        log.info("epoch %d loss %.4f val %s %.4f", epoch, history[-1]["train_loss"], key, score)
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
    # set by the first epoch; None only when no epoch ran or every score was NaN (torch then raises)
    model.load_state_dict(cast(dict[str, torch.Tensor], best_state))
    results = {s: _evaluate(model, parts[s], cfg.data.task) for s in ("train", "val", "test")}
    emb_meta = _embedding_meta(Path(cfg.data.embeddings), [b["id"] for b in bags])
    save_mil(
        out / "mil.pt",
        model,
        in_features=in_features,
        class_names=classes,
        model_config=cfg.model.model_dump(),
        extra={"embedding": emb_meta, "config": cfg.model_dump()},
    )
    _write_history(out / "history.csv", history)
    _write_predictions(out / "predictions.csv", parts, results, classes)
    metrics = {
        "task": cfg.data.task,
        "classes": classes,
        "selected_on": f"val_{key}",
        "best_epoch": int(np.argmax([h.get(f"val_{key}", h["val_accuracy"]) for h in history])),
        "bags": {s: len(p) for s, p in parts.items()},
        "patients": {s: len({b["group"] for b in p}) for s, p in parts.items()},
        **{s: results[s][0] for s in ("train", "val", "test")},
        "seconds": round(time.perf_counter() - t0, 2),
        "seed": cfg.train.seed,
    }
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _embedding_meta(emb_dir: Path, bag_ids: list[str]) -> dict:
    """What embedded the bags, for the MIL checkpoint: the slides' embed.json (checked to agree by
    load_bags), else the folder's bags.json / embed_summary.json."""
    for bag_id in bag_ids:
        p = emb_dir / bag_id / "embed.json"
        if p.is_file():
            return embedding_identity(json.loads(p.read_text()))
    for name in ("bags.json", "embed_summary.json"):
        p = emb_dir / name
        if p.is_file():
            meta = json.loads(p.read_text())
            # the same keys as a slide's embed.json gives: predict-mil compares the two
            return embedding_identity(meta.get("embedding") or meta)
    return {}


def _write_history(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for h in history for k in h))
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_bytes(path, buf.getvalue().encode())


def _write_predictions(path: Path, parts, results, classes) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "group", "split", "label", "prediction", "score"] + [f"prob_{c}" for c in classes])
    for s in ("train", "val", "test"):
        for b, o in zip(parts[s], results[s][1]):
            w.writerow(
                [b["id"], b["group"], s, classes[b["y"]], classes[o["prediction"]], round(o["score"], 5)]
                + [round(p, 5) for p in o["probabilities"]]
            )
    atomic_write_bytes(path, buf.getvalue().encode())
