"""Train a text-prompted decoder on a frozen backbone, from a `TrainConfig`.

Writes into `out_dir`: training_config.json, training_log.csv (one row per epoch), checkpoints/last and
best (.safetensors, atomic) with trainer_state.pt for resuming, snapshots/ (predictions of fixed validation
samples after every epoch) and evaluation_results.json (the best epoch's validation metrics).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clipseg_lab.backbones.loading import default_device, load_backbone
from clipseg_lab.data.cache import ActivationCache
from clipseg_lab.data.registry import open_dataset
from clipseg_lab.data.transforms import JointTransform, WithNegatives
from clipseg_lab.engine.config import ConfigError, TrainConfig
from clipseg_lab.files import atomic_path, write_json
from clipseg_lab.losses import LOSSES, build_loss
from clipseg_lab.metrics import BinaryMetrics
from clipseg_lab.models.checkpoint import read_checkpoint_meta, save_model
from clipseg_lab.models.registry import build_model

log = logging.getLogger(__name__)

LOG_FIELDS = ["epoch", "train_loss", "val_loss", "iou_fg", "miou", "dice", "ap", "pixel_accuracy", "lr", "seconds"]


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, Any]
    stopped: str  # why training ended
    history: list[dict[str, Any]]

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "checkpoints" / "best.safetensors"


def collate(samples: list[dict]) -> dict[str, Any]:
    """Stack images and masks; keep prompts and names as lists (other keys are left out)."""
    return {"image": torch.stack([s["image"] for s in samples]), "mask": torch.stack([s["mask"] for s in samples]),
            "prompt": [s["prompt"] for s in samples], "name": [str(s["name"]) for s in samples]}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _schedule(config: TrainConfig):
    o, epochs = config.optim, max(config.epochs, 1)
    if o.schedule == "poly":
        return lambda e: (1 - e / epochs) ** o.poly_power
    if o.schedule == "cosine":
        return lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs))
    if o.schedule == "constant":
        return lambda e: 1.0
    raise ConfigError(f"optim.schedule must be poly, cosine or constant, not {o.schedule!r}")


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        if config.loss not in LOSSES or LOSSES[config.loss][0] != "binary":
            binary = [k for k, (kind, _) in LOSSES.items() if kind == "binary"]
            raise ConfigError(f"loss {config.loss!r} is not a binary loss for prompt masks; use one of {binary}")
        self.out = Path(config.out_dir)
        self.device = default_device(config.device)
        seed_everything(config.seed)
        backbone = load_backbone(config.model.backbone, device=self.device)
        self.model = build_model(config.model.name, backbone=backbone, seed=config.seed,
                                 input_size=config.model.input_size, **config.model.options)
        self.loss_fn = build_loss(config.loss, **config.loss_options)
        size = self.model.input_size
        d = config.data
        train_data = open_dataset(d.dataset, d.root, d.train_split, transform=JointTransform(size),
                                  **{**d.options, **d.train_options})
        self.val_data = open_dataset(d.dataset, d.root, d.val_split, transform=JointTransform(size),
                                     **{**d.options, **d.val_options})
        if d.negatives:
            train_data = WithNegatives(train_data, d.negatives, seed=config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        self.train_loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, collate_fn=collate,
                                       num_workers=d.num_workers, generator=generator, drop_last=len(train_data) > config.batch_size)
        self.val_loader = DataLoader(self.val_data, batch_size=config.batch_size, collate_fn=collate,
                                     num_workers=d.num_workers)
        self.cache = (ActivationCache.for_model(self.model, config.cache_dir or self.out / "activation_cache")
                      if config.use_cache else None)
        params = [p for p in self.model.decoder.parameters() if p.requires_grad]
        opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(config.optim.optimizer)
        if opt is None:
            raise ConfigError(f"optim.optimizer must be adam or adamw, not {config.optim.optimizer!r}")
        self.optimizer = opt(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config))
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                          else torch.float16) if (config.amp and self.device.type == "cuda") else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # -- one batch -----------------------------------------------------------------------------------------
    def _logits(self, batch: dict) -> torch.Tensor:
        if self.cache is not None:
            activations, grid = self.cache.encode(batch["image"])
            features = self.model.features_from_activations(activations, grid)
        else:
            features = self.model.image_features(self.model.preprocess(list(batch["image"])))
        cond = self.model.prompt_embeddings(batch["prompt"])
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self.model.decode(features, cond).float()

    def _check_binary(self, mask: torch.Tensor) -> None:
        if mask.numel() and int(mask.masked_fill(mask == 255, 0).max()) > 1:
            raise ConfigError(f"{self.config.data.dataset}: masks hold class indices (values above 1); prompt models "
                              "train on binary masks (a dataset option such as target='binary', or a semantic model)")

    # -- epochs --------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        total, count = 0.0, 0
        for step, batch in enumerate(tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False)):
            self._check_binary(batch["mask"])
            mask = batch["mask"].to(self.device)
            loss = self.loss_fn(self._logits(batch), mask)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.config.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.decoder.parameters(), self.config.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total, count = total + loss.item() * len(mask), count + len(mask)
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        self.model.eval()
        metrics = BinaryMetrics(threshold=self.config.threshold)
        total, count = 0.0, 0
        for batch in self.val_loader:
            mask = batch["mask"].to(self.device)
            logits = self._logits(batch)
            total, count = total + self.loss_fn(logits, mask).item() * len(mask), count + len(mask)
            metrics.update(logits.sigmoid(), mask)
        result = metrics.compute()
        result["val_loss"] = total / max(count, 1)
        result["image_iou"] = metrics.image_iou
        return result

    @torch.no_grad()
    def snapshot(self, epoch: int) -> None:
        """Predictions of the first `snapshot_samples` validation samples: the "over the epochs" strips."""
        n = min(self.config.snapshot_samples, len(self.val_data))
        if n == 0:
            return
        folder = self.out / "snapshots"
        batch = collate([self.val_data[i] for i in range(n)])
        if epoch == 1 or not (folder / "samples.npz").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / "samples.npz") as tmp:
                np.savez_compressed(tmp.open("wb"), image=batch["image"].numpy(), mask=batch["mask"].numpy())
            write_json(folder / "samples.json", {"names": batch["name"], "prompts": batch["prompt"]})
        self.model.eval()
        probs = (self._logits(batch).sigmoid() * 255).round().to(torch.uint8).cpu().numpy()
        with atomic_path(folder / f"epoch_{epoch:03d}.npz") as tmp:
            np.savez_compressed(tmp.open("wb"), probs=probs)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _save(self, name: str, epoch: int, metrics: dict[str, Any]) -> Path:
        info = {"epoch": epoch, "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "config": self.config.to_dict()}
        return save_model(self.model, self.out / "checkpoints" / f"{name}.safetensors", **info)

    def _save_state(self, epoch: int, best: float, best_epoch: int, stale: int) -> None:
        state = {"epoch": epoch, "best": best, "best_epoch": best_epoch, "stale": stale,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        with atomic_path(self.out / "checkpoints" / "trainer_state.pt") as tmp:
            torch.save(state, tmp)

    def _resume(self) -> tuple[int, float, int, int]:
        last = self.out / "checkpoints" / "last.safetensors"
        state_file = self.out / "checkpoints" / "trainer_state.pt"
        if not (last.is_file() and state_file.is_file()):
            raise ConfigError(f"resume: no {last} and trainer_state.pt to resume from")
        meta = read_checkpoint_meta(last)
        ours = dataclasses.asdict(self.model.config)
        theirs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"].items()}
        ours = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ours.items()}
        if meta["model"] != self.model.name or theirs != ours:
            raise ConfigError(f"resume: {last} holds {meta['model']} {theirs}, but the config builds "
                              f"{self.model.name} {ours}; resume with the config it was trained with")
        from safetensors.torch import load_file

        self.model.decoder.load_state_dict(load_file(str(last)))
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state["epoch"], state["best"], state["best_epoch"], state["stale"]

    # -- the whole run -------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        config, start_time = self.config, time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "training_config.json", {"config": config.to_dict(),
                                                       "provenance": self.model.provenance.as_dict()})
        start, best, best_epoch, stale = 0, -math.inf, 0, 0
        if config.resume:
            start, best, best_epoch, stale = self._resume()
        log_path = self.out / "training_log.csv"
        history = list(csv.DictReader(log_path.open())) if (config.resume and log_path.is_file()) else []
        stopped, best_metrics = f"finished {config.epochs} epochs", {}
        epoch = start
        for epoch in range(start + 1, config.epochs + 1):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            try:
                train_loss = self.train_epoch(epoch)
            except FloatingPointError as exc:
                stopped = f"stopped: {exc}; the last good checkpoint is checkpoints/last.safetensors (epoch {epoch - 1})"
                log.error(stopped)
                epoch -= 1
                break
            self.scheduler.step()
            metrics = self.validate()
            self.snapshot(epoch)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": metrics["val_loss"], "lr": lr,
                   "seconds": round(time.perf_counter() - t0, 3)}
            row.update({k: metrics[k] for k in LOG_FIELDS if k in metrics})
            history.append(row)
            self._write_log(history)
            self._save("last", epoch, metrics)
            score = metrics[config.monitor]
            if score > best:
                best, best_epoch, stale, best_metrics = score, epoch, 0, metrics
                self._save("best", epoch, metrics)
            else:
                stale += 1
            self._save_state(epoch, best, best_epoch, stale)
            log.info("epoch %d: train loss %.4f, val %s %.4f", epoch, train_loss, config.monitor, score)
            if config.patience is not None and stale >= config.patience:
                stopped = f"early stop: no better {config.monitor} for {stale} epochs"
                break
            if config.max_seconds and time.perf_counter() - start_time > config.max_seconds:
                stopped = f"stopped after {time.perf_counter() - start_time:.0f} s (max_seconds {config.max_seconds})"
                break
        results = {"best_epoch": best_epoch, "monitor": config.monitor, "stopped": stopped,
                   "metrics": {k: v for k, v in best_metrics.items() if k != "image_iou"},
                   "provenance": self.model.provenance.as_dict(),
                   "cache": self.cache.report() if self.cache else "online backbone"}
        write_json(self.out / "evaluation_results.json", results)
        return TrainResult(self.out, epoch, best_epoch, best_metrics, stopped, history)

    def _write_log(self, history: list[dict]) -> None:
        with atomic_path(self.out / "training_log.csv") as tmp:
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(history)


def train(config: TrainConfig | dict | str | Path) -> TrainResult:
    """Train from a config (dataclass, dict or YAML path)."""
    if isinstance(config, (str, Path)):
        config = TrainConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    return Trainer(config).fit()
