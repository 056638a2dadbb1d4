"""Train a text-prompted decoder on a frozen backbone, from a `TrainConfig`.

Writes into `out_dir`: training_config.json, training_log.csv (one row per epoch), checkpoints/last and
best (.safetensors, atomic) with trainer_state.pt for resuming, snapshots/ (predictions of fixed validation
samples after every epoch), evaluation_results.json (the best epoch's validation metrics) and the folder's
owner file (clipseg_lab.ownership: a folder of another run is refused, the same run is resumed).

Each epoch is committed once: checkpoints/trainer_state.pt, written atomically, holds everything a resume needs
(the decoder's weights, optimizer, scheduler, grad scaler, every RNG, the log's rows, the best epoch and its
metrics). The other files are derived from it and written after it; a resume rewrites whichever of them a kill
left behind (the log, last, best, the epoch's snapshot) and removes snapshots of epochs that never committed, so a
run killed at any write resumes to the same result as an uninterrupted one. Ctrl-C stops after the current step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from clipseg_lab.backbones.loading import default_device, load_backbone
from clipseg_lab.data.base import collate_samples
from clipseg_lab.data.cache import ActivationCache
from clipseg_lab.data.registry import open_dataset
from clipseg_lab.data.transforms import JointTransform, WithNegatives
from clipseg_lab.engine.config import ConfigError, ModelConfig, TrainConfig
from clipseg_lab.errors import ClipsegLabError, WeightsFormatError
from clipseg_lab.files import atomic_path, leftover_temp_files, write_csv, write_json
from clipseg_lab.labels import IGNORE_INDEX
from clipseg_lab.losses import LOSSES, build_loss
from clipseg_lab.metrics import BinaryMetrics, SegmentationMetrics
from clipseg_lab.models.checkpoint import read_checkpoint_meta, save_model
from clipseg_lab.models.clip_unet import ClipUNet
from clipseg_lab.models.registry import FAMILIES, SEMANTIC_FAMILIES, build_model, get_preset
from clipseg_lab.ownership import claim
from clipseg_lab.seeding import rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)

LOG_FIELDS = ["epoch", "train_loss", "val_loss", "iou_fg", "miou", "dice", "ap", "mdice", "mf1",
              "mean_foreground_dice", "pixel_accuracy", "lr", "seconds"]


PER_IMAGE_KEYS = ("image_iou", "image_miou", "image_scores")  # kept in memory, not in evaluation_results.json
STATE_FORMAT = 2
# what a training folder held before owner files existed: adopted as an earlier run of `train`
TRAIN_OUTPUTS = ("training_config.json", "training_log.csv", "evaluation_results.json", "checkpoints", "snapshots",
                 "activation_cache")


class TrainingInterrupted(ClipsegLabError):
    """Ctrl-C during training: the run stopped after the current step; the last committed epoch is kept."""


def run_inputs(config: TrainConfig) -> dict[str, Any]:
    """What decides a run's results: the config without where and how it runs (folder, device, workers, resume)."""
    import clipseg_lab

    inputs = config.to_dict()
    for key in ("out_dir", "device", "resume", "overwrite", "max_seconds", "cache_dir"):
        inputs.pop(key, None)
    inputs["data"].pop("num_workers", None)
    inputs["version"] = clipseg_lab.__version__
    return inputs


@dataclass
class RunState:
    """Where a run stands after its last committed epoch (saved in trainer_state.pt with the weights and RNGs)."""
    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one
    history: list[dict[str, Any]] = field(default_factory=list)  # training_log.csv's rows
    best_metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics of the best epoch
    last_metrics: dict[str, Any] = field(default_factory=dict)


def _storable(value: Any) -> Any:
    """Plain Python and tensors only (what torch.load(weights_only=True) reads back): NumPy values converted."""
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value] if isinstance(value, list) else tuple(_storable(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, Any]
    stopped: str  # why training ended
    history: list[dict[str, Any]]
    monitor: str = "iou_fg"
    provenance: Any = None  # of the trained model (backbone, and "trained by this run" for the decoder)

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "checkpoints" / "best.safetensors"


class DecoderStep(nn.Module):
    """The decoder's whole trainable path (image-only part, then the prompt part) as one forward, so that
    DistributedDataParallel sees every trainable parameter used in it."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.decoder  # the only parameters DDP syncs
        object.__setattr__(self, "model", model)  # not a submodule: the frozen backbone stays out of DDP

    def forward(self, activations: list[torch.Tensor], grid: tuple[int, int], cond: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self.model.features_from_activations(activations, grid), cond)


def init_distributed() -> tuple[bool, int, int]:
    """(distributed?, rank, world size) from torchrun's environment; starts the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return False, 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True, dist.get_rank(), dist.get_world_size()


def _schedule(config: TrainConfig):
    o, epochs = config.optim, max(config.epochs, 1)
    if o.schedule == "poly":
        return lambda e: (1 - e / epochs) ** o.poly_power
    if o.schedule == "cosine":
        return lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs))
    if o.schedule == "constant":
        return lambda e: 1.0
    raise ConfigError(f"optim.schedule must be poly, cosine or constant, not {o.schedule!r}")


def _subset(dataset, size: int | None, seed: int):
    """A seeded random subset of `size` samples (the whole dataset when size is None or not smaller)."""
    if size is None or size >= len(dataset):
        return dataset
    if size < 1:
        raise ConfigError(f"a data subset needs at least one sample, not {size}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return Subset(dataset, order.tolist())


# decoder options a fine-tune may change: they shape no weight (every other one must agree with the checkpoint)
FINE_TUNE_OPTIONS = ("dropout",)


def _plain(value):
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def _architecture(config) -> dict[str, Any]:
    """A decoder config's fields that decide its weights (what two decoders must share to swap weights)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(config).items()
            if k not in FINE_TUNE_OPTIONS and k != "input_size"}


def _is_hf_clipseg(source: str) -> bool:
    """Whether `load_model` reads `source` as a Hugging Face CLIPSeg model (a directory, or a hub id)."""
    path = Path(source).expanduser()
    if path.exists():
        return path.is_dir()
    return path.suffix not in (".safetensors", ".pth", ".pt", ".bin") and source.count("/") == 1


def model_to_fine_tune(config: TrainConfig, options: dict[str, Any], device: torch.device):
    """`config.model.init_from` loaded with `load_model`, checked against the config: the same preset, no
    option that contradicts the stored decoder; dropout and input_size may differ. In eval mode, like
    `build_model`'s models."""
    from clipseg_lab.models.loading import load_model

    m = config.model
    source = m.init_from = os.fspath(m.init_from)  # a Path would not go into YAML / JSON
    default_backbone = ModelConfig.__dataclass_fields__["backbone"].default
    if _is_hf_clipseg(source):  # it brings its own CLIP
        from clipseg_lab.backbones.names import lookup

        # the released CLIPSeg models carry OpenAI's ViT-B/16 unchanged: a config naming it (every shipped one
        # does) agrees with them; any other backbone cannot replace their CLIP
        same_clip = m.backbone is not None and (lookup(m.backbone) or None) is not None \
            and lookup(m.backbone).alias == "ViT-B/16"
        if m.backbone not in (None, default_backbone, source) and not same_clip:
            raise ConfigError(f"model.init_from {source} is a Hugging Face CLIPSeg model, which brings its own CLIP "
                              f"(its clip.* weights); model.backbone {m.backbone!r} cannot replace it. Leave "
                              f"model.backbone unset (or set it to {source}) to fine-tune on that model's CLIP, or "
                              "use our .safetensors / an original .pth decoder to choose the backbone.")
        backbone = None
    else:  # our .safetensors and original .pth decoders run on the configured backbone
        backbone = m.backbone
    loaded = load_model(source, backbone=backbone, device=device)  # a CLIPSeg model's CLIP is named to load again

    if loaded.name != m.name:  # another preset: fine only if it is the same decoder under another name
        mine, theirs = get_preset(m.name), get_preset(loaded.name)
        arch = _architecture(loaded.config)
        wanted = _architecture(FAMILIES[mine.family][0](**mine.config)) if mine.family == theirs.family else None
        if wanted != arch:
            differ = (f" ({', '.join(f'{k} {arch[k]!r} vs {wanted[k]!r}' for k in arch if arch[k] != wanted[k])})"
                      if wanted is not None else f" (a {theirs.family} decoder, not {mine.family})")
            raise ConfigError(f"model.init_from {source} holds a {loaded.name} decoder, but model.name is {m.name!r}"
                              f"{differ}; set model.name: {loaded.name} to fine-tune it")
        loaded.name = loaded.provenance.model = m.name

    stored = dataclasses.asdict(loaded.config)
    unknown = sorted(set(options) - set(stored))
    if unknown:
        raise ConfigError(f"unknown model.options for {m.name}: {', '.join(unknown)}; known: {', '.join(stored)}")
    clashes = [f"{k}: {_plain(v)!r} (stored: {_plain(stored[k])!r})" for k, v in options.items()
               if k not in FINE_TUNE_OPTIONS and _plain(v) != _plain(stored[k])]
    if clashes:
        derived = " (num_classes follows the dataset's classes)" if any(c.startswith("num_classes") for c in clashes) \
            and "num_classes" not in m.options else ""
        raise ConfigError(f"model.options contradict the decoder in model.init_from {source}: {'; '.join(clashes)}"
                          f"{derived}. A fine-tune keeps the stored architecture: remove these options (only "
                          f"{', '.join(FINE_TUNE_OPTIONS)} and model.input_size may change)")
    size = m.input_size or loaded.input_size  # default: the resolution the weights were trained at
    changes = {k: options[k] for k in FINE_TUNE_OPTIONS if k in options and _plain(options[k]) != _plain(stored[k])}
    model = loaded
    if changes or size != loaded.input_size:  # the same weights in a decoder built with the new settings
        fields = {k: v for k, v in {**stored, **changes}.items() if k != "input_size"}
        try:
            model = build_model(m.name, backbone=loaded.backbone, device=device, input_size=size, **fields)
        except ValueError as exc:
            raise ConfigError(f"model.init_from {source} with model.input_size {size} / options {changes}: {exc}") \
                from exc
        missing, unexpected = model.load_trainable_state_dict(loaded.trainable_state_dict())
        if missing or unexpected:
            raise ConfigError(f"model.init_from {source}: the weights do not fit the rebuilt {m.name} (missing "
                              f"{sorted(missing)}, unexpected {sorted(unexpected)})")
        for key, value in vars(loaded).items():  # what the loader set (provenance, preprocessing, ...)
            if not key.startswith("_") and key not in ("config", "input_size", "training"):
                setattr(model, key, value)
    model.provenance.decoder = f"fine-tuning from {source} ({loaded.provenance.decoder})"
    model.provenance.extra = {"init_from": source}
    return model.eval()


def build_training_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The model `config` trains: the preset on its backbone, or the decoder to fine-tune (`model.init_from`).
    A multi-class head follows the validation split's classes unless `model.options.num_classes` says otherwise."""
    options, d, preset = dict(config.model.options), config.data, get_preset(config.model.name)
    if preset.family in SEMANTIC_FAMILIES and "num_classes" not in options:
        classes = getattr(open_dataset(d.dataset, d.root, d.val_split, **{**d.options, **d.val_options}),
                          "class_names", None)
        if classes is None:
            raise ConfigError(f"{d.dataset} has no class names: set model.options.num_classes")
        options["num_classes"] = len(classes)
    if config.model.init_from:  # fine-tuning: the decoder starts from these weights (eval mode, as built)
        return model_to_fine_tune(config, options, device)
    use_clip = options.get("use_clip", preset.config.get("use_clip", True))
    backbone = load_backbone(config.model.backbone, device=device) if use_clip else None
    return build_model(config.model.name, backbone=backbone, seed=config.seed, device=device,
                       input_size=config.model.input_size, **options)


def open_training_data(config: TrainConfig, size: int) -> tuple[Dataset, Dataset]:
    """The training and validation splits `config.data` names, read at the model's input `size`."""
    d = config.data
    train = open_dataset(d.dataset, d.root, d.train_split, transform=JointTransform(size),
                         **{**d.options, **d.train_options})
    val = open_dataset(d.dataset, d.root, d.val_split, transform=JointTransform(size),
                       **{**d.options, **d.val_options})
    return train, val


class Trainer:
    """Trains `model` on `train_data`, validating on `val_data`, as `config` says (optimiser, schedule, loss,
    epochs, out_dir). Without the parts, `config` builds them (`build_training_model`, `open_training_data`);
    given, a Trainer needs no files: `Trainer(config, model=m, train_data=a, val_data=b)`."""

    def __init__(self, config: TrainConfig, *, model: nn.Module | None = None, train_data: Dataset | None = None,
                 val_data: Dataset | None = None):
        if (train_data is None) != (val_data is None):
            raise ValueError("give both train_data and val_data, or neither (then config.data names them)")
        self.config = config.validate()  # again: callers (the CLI's --out, --device, notebooks) change fields
        self.out = Path(config.out_dir)
        self._place()
        seed_everything(config.seed)
        self.model = model if model is not None else build_training_model(config, self.device)
        self.semantic = isinstance(self.model, ClipUNet)  # multi-class, no prompts
        self.loss_fn, self.monitor = self._loss()
        if train_data is None:
            train_data, val_data = open_training_data(config, self.model.input_size)
        self._loaders(train_data, val_data)
        step = self.model if self.semantic else DecoderStep(self.model)
        self.step = DistributedDataParallel(step) if self.distributed else step
        self.ownership = self._claim_out_dir()  # before the first file goes into out_dir
        self.cache = self._activation_cache()
        self._optimiser()
        self._stop_requested = False  # set by Ctrl-C; the current step finishes first
        self._committed: RunState | None = None  # the last epoch whose state is on disk

    # -- the parts ------------------------------------------------------------------------------------------
    def _place(self) -> None:
        """The device and, under torchrun, this process's rank."""
        self.distributed, self.rank, self.world = init_distributed()
        self.device = default_device(self.config.device)
        if self.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)

    def _loss(self) -> tuple[nn.Module, str]:
        """The loss (it must fit the model's targets) and the metric that picks the best epoch."""
        config = self.config
        kind = "multiclass" if self.semantic else "binary"
        if config.loss not in LOSSES or LOSSES[config.loss][0] != kind:
            fitting = [k for k, (k_kind, _) in LOSSES.items() if k_kind == kind]
            raise ConfigError(f"loss {config.loss!r} does not fit {config.model.name} ({kind} targets); use one of "
                              f"{fitting}")
        return build_loss(config.loss, **config.loss_options), config.monitor or ("miou" if self.semantic else "iou_fg")

    def _loaders(self, train_data: Dataset, val_data: Dataset) -> None:
        """Seeded subsets and negatives, then the loaders. Under torchrun each rank reads its own shard; the
        validation shards are padded to equal length by DistributedSampler (a few samples counted twice), and
        metrics are summed across ranks."""
        config, d = self.config, self.config.data
        self.class_names = getattr(val_data, "class_names", None)
        train_data = _subset(train_data, d.train_subset, config.seed)
        self.val_data = _subset(val_data, d.val_subset, config.seed)
        if d.negatives:
            train_data = WithNegatives(train_data, d.negatives, seed=config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.train_sampler = DistributedSampler(train_data, seed=config.seed) if self.distributed else None
        val_sampler = DistributedSampler(self.val_data, shuffle=False) if self.distributed else None
        self.train_loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=self.train_sampler is None,
                                       sampler=self.train_sampler, collate_fn=collate_samples,
                                       num_workers=d.num_workers, generator=self.generator,
                                       drop_last=len(train_data) > config.batch_size * self.world)
        self.val_loader = DataLoader(self.val_data, batch_size=config.batch_size, collate_fn=collate_samples,
                                     sampler=val_sampler, num_workers=d.num_workers)

    def _activation_cache(self) -> ActivationCache | None:
        """The frozen backbone's features, kept on disk from the first epoch on (`use_cache`)."""
        if not self.config.use_cache:
            return None
        cache_dir = self.config.cache_dir or self.out / "activation_cache"
        if not self.semantic:
            return ActivationCache.for_model(self.model, cache_dir)
        if self.model.backbone is not None:  # the fused layer at the backbone's own size
            bb = self.model.backbone
            return ActivationCache(cache_dir, bb, (self.model.config.clip_layer % bb.num_layers,), bb.image_size)
        return None

    def _optimiser(self) -> None:
        """Optimiser over the trainable non-backbone parameters, LR schedule, mixed precision on CUDA."""
        config = self.config
        self._trainable = [p for n, p in self.model.named_parameters()
                           if p.requires_grad and not n.startswith("backbone.")]
        opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(config.optim.optimizer)
        if opt is None:
            raise ConfigError(f"optim.optimizer must be adam or adamw, not {config.optim.optimizer!r}")
        self.optimizer = opt(self._trainable, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config))
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                          else torch.float16) if (config.amp and self.device.type == "cuda") else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _claim_out_dir(self):
        """out_dir for this run: new, or this run's (resumed), or -- with resume / overwrite -- an earlier one's."""
        overwrite = getattr(self.config, "overwrite", False)
        if self.distributed and not self.main_process:
            dist.barrier()  # the main process decides (and removes an overwritten run's files) first
        ownership = claim(self.out, "train", run_inputs(self.config), resume=self.config.resume, overwrite=overwrite,
                          option="out_dir", legacy=TRAIN_OUTPUTS, write=self.main_process)
        if self.distributed and self.main_process:
            dist.barrier()
        if self.config.resume and not ownership.resumed:
            raise ConfigError(f"resume: {self.out} holds no run of `clipseg-lab train` to resume from")
        return ownership

    # -- one batch -----------------------------------------------------------------------------------------
    def _logits(self, batch: dict, step: nn.Module | None = None) -> torch.Tensor:
        if self.semantic:
            return self._semantic_logits(batch, step)
        if self.cache is not None:
            activations, grid = self.cache.encode(batch["image"])
        else:
            activations, grid = self.model.backbone_activations(self.model.preprocess(list(batch["image"])))
        cond = self.model.prompt_embeddings(batch["prompt"])
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return (step or self.step)(activations, grid, cond).float()

    def _semantic_logits(self, batch: dict, step: nn.Module | None) -> torch.Tensor:
        tokens = None
        if self.model.backbone is not None:
            if self.cache is not None:
                activations, grid = self.cache.encode(batch["image"])
                tokens = (activations[0], grid)
            else:
                tokens = self.model.clip_tokens(batch["image"])
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return (step or self.step)(self.model.preprocess(batch["image"]), tokens).float()

    def _check_binary(self, mask: torch.Tensor) -> None:
        if self.semantic:
            return
        if mask.numel() and int(mask.masked_fill(mask == IGNORE_INDEX, 0).max()) > 1:
            raise ConfigError(f"{self.config.data.dataset}: masks hold class indices (values above 1); prompt models "
                              "train on binary masks (a dataset option such as target='binary', or a semantic model)")

    # -- epochs --------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        total, count = 0.0, 0
        batches = tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False, disable=True if self.rank else None)
        for step, batch in enumerate(batches):
            self._check_binary(batch["mask"])
            mask = batch["mask"].to(self.device)
            loss = self.loss_fn(self._logits(batch), mask)
            # on the model's device: NCCL reduces only CUDA tensors
            flags = torch.tensor([0.0 if torch.isfinite(loss) else 1.0, float(self._stop_requested)],
                                 device=self.device)
            if self.distributed:  # every rank stops together, or none does
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            if flags[0].item():
                raise FloatingPointError(f"loss is {loss.item()} (on this or another rank) at epoch {epoch}, "
                                         f"step {step}")
            if flags[1].item():
                raise TrainingInterrupted(f"epoch {epoch}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.config.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self._trainable, self.config.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total, count = total + loss.item() * len(mask), count + len(mask)
        return self._mean_across_ranks(total, count)

    def _mean_across_ranks(self, total: float, count: int) -> float:
        if self.distributed:
            t = torch.tensor([total, float(count)], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            total, count = float(t[0]), int(t[1])
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        self.model.eval()
        if self.semantic:
            metrics = SegmentationMetrics(self.model.config.num_classes, class_names=self.class_names)
        else:
            metrics = BinaryMetrics(threshold=self.config.threshold)
        total, count = 0.0, 0
        local = self.model if self.semantic else DecoderStep(self.model)  # no gradient sync needed here
        for batch in self.val_loader:
            if self._stop_requested and not self.distributed:  # ranks stop together, at the next training step
                raise TrainingInterrupted("validation")
            mask = batch["mask"].to(self.device)
            logits = self._logits(batch, step=local)
            total, count = total + self.loss_fn(logits, mask).item() * len(mask), count + len(mask)
            metrics.update(logits.argmax(1) if self.semantic else logits.sigmoid(), mask)
        metrics.synchronize()
        result = metrics.compute()
        result["val_loss"] = self._mean_across_ranks(total, count)
        # per-image scores for paired tests between runs on the same validation images
        if self.semantic:
            result["image_miou"] = result["image_scores"] = metrics.image_miou
        else:
            result["image_iou"] = result["image_scores"] = metrics.image_iou
        return result

    @torch.no_grad()
    def snapshot(self, epoch: int) -> None:
        """Predictions of the first `snapshot_samples` validation samples: the "over the epochs" strips."""
        n = min(self.config.snapshot_samples, len(self.val_data))
        if n == 0:
            return
        folder = self.out / "snapshots"
        batch = collate_samples([self.val_data[i] for i in range(n)])
        if epoch == 1 or not (folder / "samples.npz").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / "samples.npz") as tmp:
                np.savez_compressed(tmp.open("wb"), image=batch["image"].numpy(), mask=batch["mask"].numpy())
            write_json(folder / "samples.json", {"names": batch["name"], "prompts": batch["prompt"],
                                                  "kind": "semantic" if self.semantic else "referring"})
        self.model.eval()
        if self.semantic:
            probs = self._logits(batch, step=self.model).argmax(1).to(torch.uint8).cpu().numpy()  # class maps
        else:
            probs = ((self._logits(batch, step=DecoderStep(self.model)).sigmoid() * 255)
                     .round().to(torch.uint8).cpu().numpy())
        with atomic_path(folder / f"epoch_{epoch:03d}.npz") as tmp:
            np.savez_compressed(tmp.open("wb"), probs=probs)

    # -- checkpoints ---------------------------------------------------------------------------------------
    @property
    def main_process(self) -> bool:
        return self.rank == 0

    def _save(self, name: str, epoch: int, metrics: dict[str, Any]) -> Path:
        info = {"epoch": epoch, "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "config": self.config.to_dict()}
        if self.config.model.init_from:
            info["fine_tuned_from"] = self.config.model.init_from
        return save_model(self.model, self.out / "checkpoints" / f"{name}.safetensors", **info)

    def _save_state(self, run: RunState) -> None:
        """The epoch's commit: one atomic file with all a resume needs (every other output derives from it)."""
        state = {"format": STATE_FORMAT, "model": self.model.name, "architecture": _architecture(self.model.config),
                 **dataclasses.asdict(run), "decoder": self.model.trainable_state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "rng": rng_state(self.generator)}
        with atomic_path(self.out / "checkpoints" / "trainer_state.pt") as tmp:
            torch.save(_storable(state), tmp)

    def _resume(self) -> RunState | None:
        """Restore the last committed epoch (None: nothing was committed yet) and repair what a kill left behind."""
        state_file = self.out / "checkpoints" / "trainer_state.pt"
        if not state_file.is_file():
            if self.config.resume and (self.out / "checkpoints" / "last.safetensors").is_file():
                raise ConfigError(f"resume: {self.out / 'checkpoints'} holds last.safetensors but no trainer_state.pt; "
                                  "without it the optimizer and RNG states are lost. Start a new run (--overwrite)")
            return None  # killed before its first epoch was committed: start again
        try:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 -- any unreadable state gets the same answer
            raise WeightsFormatError(f"{state_file}: not a readable training state ({type(exc).__name__}); start a "
                                     "new run (--overwrite)") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"resume: {state_file} was written by an older clipseg-lab (state format "
                              f"{state.get('format', 1) if isinstance(state, dict) else '?'}, this one reads "
                              f"{STATE_FORMAT}); start a new run (--overwrite)")
        ours = {"model": self.model.name, "architecture": _architecture(self.model.config)}
        theirs = {"model": state["model"], "architecture": {k: _plain(v) for k, v in state["architecture"].items()}}
        if ours != theirs:
            raise ConfigError(f"resume: {self.out} holds {theirs['model']} {theirs['architecture']}, but the config "
                              f"builds {ours['model']} {ours['architecture']}; resume with the config it was trained "
                              "with")
        self.model.load_trainable_state_dict(state["decoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        run = RunState(**{f.name: state[f.name] for f in dataclasses.fields(RunState)})
        if self.main_process:
            self._repair(run)
        if self.distributed:
            dist.barrier()
        set_rng_state(state["rng"], self.generator)  # last: repairing draws no random number, but say so anyway
        log.info("resumed %s after epoch %d (best epoch %d)", self.out, run.epoch, run.best_epoch)
        return run

    def _repair(self, run: RunState) -> None:
        """Bring the derived outputs in line with the committed state: a kill after the state's write leaves the
        log, last, best or the epoch's snapshot behind; a kill before it leaves outputs of an uncommitted epoch."""
        repaired = []
        for folder in (self.out, self.out / "checkpoints", self.out / "snapshots"):
            for leftover in leftover_temp_files(folder):
                leftover.unlink()
                repaired.append(f"removed {leftover.name}")
        self._write_log(run.history)
        for name, epoch, metrics in (("last", run.epoch, run.last_metrics), ("best", run.best_epoch, run.best_metrics)):
            path = self.out / "checkpoints" / f"{name}.safetensors"
            stored = (read_checkpoint_meta(path).get("info") or {}).get("epoch") if path.is_file() else None
            if stored == epoch or not metrics:
                continue
            if epoch != run.epoch:
                raise ConfigError(f"resume: {path} holds epoch {stored}, the state says {epoch}, and only epoch "
                                  f"{run.epoch}'s weights are kept; start a new run (--overwrite)")
            self._save(name, epoch, metrics)  # the model holds exactly this epoch's weights
            repaired.append(f"{name} (epoch {epoch})")
        folder = self.out / "snapshots"
        for path in sorted(folder.glob("epoch_*.npz")) if folder.is_dir() else []:
            if int(path.stem.split("_")[1]) > run.epoch:  # an epoch that never committed
                path.unlink()
                repaired.append(f"removed {path.name}")
        snapshot_epoch = run.epoch
        if self.config.snapshot_samples and run.history and not (folder / f"epoch_{snapshot_epoch:03d}.npz").is_file():
            self.snapshot(snapshot_epoch)
            repaired.append(f"snapshot {snapshot_epoch}")
        if repaired:
            log.info("resume repaired what an interrupted write left: %s", ", ".join(repaired))

    # -- the whole run -------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train (or resume) to the end; Ctrl-C stops after the current step with the last epoch kept."""
        handler_installed = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._request_stop) if handler_installed else None
        try:
            return self._fit()
        except TrainingInterrupted as exc:
            epoch = self._committed.epoch if self._committed else None
            kept = (f"epoch {epoch} is saved in {self.out}" if epoch is not None
                    else f"no epoch was finished yet in {self.out}")
            raise TrainingInterrupted(f"interrupted at {exc}; {kept}; run the same command again to resume") from None
        finally:
            if handler_installed:
                signal.signal(signal.SIGINT, previous)

    def _request_stop(self, signum, frame) -> None:
        if self._stop_requested:  # a second Ctrl-C: stop now, as Python would
            raise KeyboardInterrupt
        self._stop_requested = True
        log.warning("Ctrl-C: stopping after the current step (press it again to stop at once)")

    def _fit(self) -> TrainResult:
        config, start_time = self.config, time.perf_counter()
        main = self.main_process
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "training_config.json", {"config": config.to_dict(), "world_size": self.world,
                                                           "provenance": self.model.provenance.as_dict()})
            self.ownership.record("training_config.json")
        run = self._resume() if self.ownership.resumed else None
        self._committed = run
        run = run or RunState()
        stopped = f"finished {config.epochs} epochs"
        if config.model.init_from and not any(int(r["epoch"]) == 0 for r in run.history):
            # epoch 0: the loaded weights' score, the start of the curve and the first candidate for "best"
            t0 = time.perf_counter()
            metrics = self.validate()
            run.history.append({"epoch": 0, **{k: metrics[k] for k in LOG_FIELDS if k in metrics},
                                "seconds": round(time.perf_counter() - t0, 3)})
            run.best, run.best_metrics, run.last_metrics = metrics[self.monitor], metrics, metrics
            self._commit_epoch(run)
            log.info("epoch 0 (%s, before training): val %s %.4f", config.model.init_from, self.monitor, run.best)
        if config.patience is not None and run.stale >= config.patience:
            stopped = f"early stop: no better {self.monitor} for {run.stale} epochs"
        else:
            for epoch in range(run.epoch + 1, config.epochs + 1):
                t0 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                try:
                    train_loss = self.train_epoch(epoch)
                except FloatingPointError as exc:
                    stopped = (f"stopped: {exc}; the last good checkpoint is checkpoints/last.safetensors "
                               f"(epoch {run.epoch})")
                    log.error(stopped)
                    break
                self.scheduler.step()
                metrics = self.validate()
                row = {"epoch": epoch, "train_loss": train_loss, "val_loss": metrics["val_loss"], "lr": lr,
                       "seconds": round(time.perf_counter() - t0, 3)}
                row.update({k: metrics[k] for k in LOG_FIELDS if k in metrics})
                score = metrics[self.monitor]  # the same on every rank: metrics are summed across ranks
                run.epoch, run.last_metrics = epoch, metrics
                run.history.append(row)
                if score > run.best:
                    run.best, run.best_epoch, run.stale, run.best_metrics = score, epoch, 0, metrics
                else:
                    run.stale += 1
                self._commit_epoch(run)
                log.info("epoch %d: train loss %.4f, val %s %.4f", epoch, train_loss, self.monitor, score)
                if config.patience is not None and run.stale >= config.patience:
                    stopped = f"early stop: no better {self.monitor} for {run.stale} epochs"
                    break
                if config.max_seconds and time.perf_counter() - start_time > config.max_seconds:
                    stopped = (f"stopped after {time.perf_counter() - start_time:.0f} s "
                               f"(max_seconds {config.max_seconds})")
                    break
        results = {"best_epoch": run.best_epoch, "monitor": self.monitor, "stopped": stopped,
                   "metrics": {k: v for k, v in run.best_metrics.items() if k not in PER_IMAGE_KEYS},
                   "provenance": self.model.provenance.as_dict(),
                   "cache": self.cache.report() if self.cache else "online backbone"}
        if main:
            write_json(self.out / "evaluation_results.json", results)
            self.ownership.record("evaluation_results.json")
        trained = f"trained ({self.out.name}, best epoch {run.best_epoch})"
        if config.model.init_from:
            trained += f", fine-tuned from {config.model.init_from}"
        provenance = dataclasses.replace(self.model.provenance, decoder=trained)
        return TrainResult(self.out, run.epoch, run.best_epoch, run.best_metrics, stopped, run.history, self.monitor,
                           provenance)

    def _commit_epoch(self, run: RunState) -> None:
        """An epoch's outputs on the main process: first the state (the commit), then what derives from it -- the
        log, last, best when this epoch is the best, the snapshot; then every rank waits for them."""
        if self.main_process:
            self._save_state(run)
            self._write_log(run.history)
            self._save("last", run.epoch, run.last_metrics)
            if run.best_epoch == run.epoch:
                self._save("best", run.epoch, run.best_metrics)
            self.snapshot(run.epoch)
            self.ownership.record(*(self.out / "checkpoints" / f for f in ("trainer_state.pt", "last.safetensors")),
                                  self.out / "training_log.csv")
            for extra in ("checkpoints/best.safetensors", "snapshots", "activation_cache"):
                if (self.out / extra).exists():
                    self.ownership.record(self.out / extra)
        self._committed = dataclasses.replace(run)
        if self.distributed:
            dist.barrier()

    def _write_log(self, history: list[dict]) -> None:
        write_csv(history, self.out / "training_log.csv", fieldnames=LOG_FIELDS)


def train(config: TrainConfig | dict | str | Path) -> TrainResult:
    """Train from a config (dataclass, dict or YAML path)."""
    if isinstance(config, (str, Path)):
        config = TrainConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    return Trainer(config).fit()
