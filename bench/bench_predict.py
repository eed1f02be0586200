"""Inference throughput of histoflow's patch prediction (decoding from disk in DataLoader
workers while the model runs) against the model alone on preloaded tensors of the same images,
same run. Target: >= 85%."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from histoflow.checkpoint import save_checkpoint
from histoflow.config import ModelConfig
from histoflow.data.datasets import PatchDataset
from histoflow.data.manifest import read_manifest
from histoflow.models.factory import create_model
from histoflow.predict.folder import predict_to_csv

DATA = Path(os.environ.get("HISTOFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@torch.inference_mode()
def model_alone(model, images: torch.Tensor, batch_size: int) -> float:
    model.eval()
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].contiguous(memory_format=torch.channels_last)
        model.probabilities(model(x))
    return len(images) / (time.perf_counter() - start)


def main(batch_size: int = 256) -> dict:
    valid = DATA / "pcam" / "valid"
    if not valid.exists():
        print(json.dumps({"bench": "predict_throughput", "skipped": f"no data at {valid}"}))
        return {}
    cfg = ModelConfig(name="simple_cnn", params={"widths": [16, 32, 64, 128], "depth": 1})
    model = create_model(cfg, 2).to(memory_format=torch.channels_last).eval()
    manifest = read_manifest(valid)
    preloaded = torch.stack([PatchDataset(manifest, image_px=96)[i][0] for i in range(len(manifest))])
    ours, alone = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(
            Path(tmp) / "m.pt", model, model_config=cfg.model_dump(), class_names=["0", "1"], image_px=96
        )
        for _ in range(2):  # interleaved
            alone.append(model_alone(model, preloaded, batch_size))
            start = time.perf_counter()
            predict_to_csv(ckpt, valid, Path(tmp) / "p.csv", batch_size=batch_size, workers=2)
            ours.append(len(manifest) / (time.perf_counter() - start))
    out = {
        "bench": "predict_throughput",
        "images": len(manifest),
        "batch_size": batch_size,
        "model_alone_img_s": round(max(alone), 1),
        "histoflow_predict_img_s": round(max(ours), 1),
        "ratio": round(max(ours) / max(alone), 3),
        "target_ratio": 0.85,
        "note": "histoflow time includes reading the folder, decoding JPEGs and writing the CSV",
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
