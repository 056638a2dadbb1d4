"""Training configuration: dataclasses that read and write YAML, and check every value when they are built.

A wrong value is one `ConfigError` line that names the dotted key, the value given and what is allowed, e.g.
`optim.lr: -0.01 is not allowed; a number > 0`. Types come from the dataclasses' hints (`check_values`), ranges
and choices from `RULES`, and what needs the registries (model, loss, dataset, monitor) from `validate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipseg_lab.backbones.names import TINY_RANDOM
from clipseg_lab.configuration import Rule, check_values, load_yaml, one_of, show
from clipseg_lab.errors import ConfigError


# -- the training config --------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    name: str = "clipseg-rd64"
    backbone: str = TINY_RANDOM
    input_size: int | None = None  # default: the preset's
    options: dict[str, Any] = field(default_factory=dict)  # decoder config overrides, e.g. {dropout: 0.0}
    # fine-tune instead of starting from a random decoder: anything `load_model` reads (our .safetensors, e.g. a
    # run's checkpoints/best.safetensors; a Hugging Face CLIPSeg directory or hub id such as
    # CIDAS/clipseg-rd64-refined, which brings its own CLIP; an original CLIPSeg decoder .pth). `name` must be
    # the loaded decoder's preset; `options` may change only dropout; validation runs once before epoch 1.
    init_from: str | None = None


@dataclass
class DataConfig:
    dataset: str = "synthetic_shapes"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    options: dict[str, Any] = field(default_factory=dict)  # passed to both splits' loaders
    train_options: dict[str, Any] = field(default_factory=dict)
    val_options: dict[str, Any] = field(default_factory=dict)
    negatives: float = 0.0  # share of CLIPSeg-style negative prompts in training
    train_subset: int | None = None  # a seeded random subset of this many training samples (a "PhraseCut subset")
    val_subset: int | None = None  # the same for validation (fixed by the seed, so runs compare on one set)
    num_workers: int = 0


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "poly"  # poly: lr (1 - e/E)^power per epoch | cosine | constant
    poly_power: float = 0.9
    grad_clip: float | None = 1.0


_POSITIVE_INT, _COUNT = ((lambda v: v >= 1), "an integer >= 1"), ((lambda v: v >= 0), "an integer >= 0")
_POSITIVE = (lambda v: v > 0), "a number > 0"

# what each value may be beyond its type hint; the choices are the ones the trainer accepts (Trainer's optimizer
# table, trainer._schedule). Dataset, model, backbone, loss and monitor are checked against the registries.
RULES: dict[str, Rule] = {
    "epochs": _COUNT, "batch_size": _POSITIVE_INT, "patience": _POSITIVE_INT,
    "snapshot_samples": _COUNT, "max_seconds": _POSITIVE,
    "threshold": ((lambda v: 0 <= v <= 1), "a number in [0, 1]"),
    "out_dir": ((lambda v: bool(v.strip())), "a folder name"),
    "model.input_size": _POSITIVE_INT,
    "data.negatives": ((lambda v: 0 <= v < 1), "a share in [0, 1)"),
    "data.train_subset": _POSITIVE_INT, "data.val_subset": _POSITIVE_INT, "data.num_workers": _COUNT,
    "optim.optimizer": one_of("adam", "adamw"),
    "optim.schedule": one_of("poly", "cosine", "constant"),
    "optim.lr": _POSITIVE, "optim.poly_power": _POSITIVE, "optim.grad_clip": _POSITIVE,
    "optim.weight_decay": ((lambda v: v >= 0), "a number >= 0"),
}
ROOTLESS_DATASETS = ("synthetic_shapes",)  # made in memory; every other dataset reads data.root
# validation metrics the best checkpoint may follow (higher is better): what BinaryMetrics / SegmentationMetrics
# compute for prompt models and for multi-class (clip-unet family) ones
MONITORS = {"binary": ("iou_fg", "iou_bg", "miou", "dice", "pixel_accuracy", "ap", "mean_image_iou",
                       "mean_image_dice", "best_iou_fg"),
            "multiclass": ("miou", "mdice", "mf1", "pixel_accuracy", "oa", "mean_precision", "mean_recall",
                           "mean_foreground_dice")}


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: str = "bce"
    loss_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 8
    seed: int = 0
    device: str | None = None  # default: cuda when present
    amp: bool = True  # autocast on CUDA (bf16 where supported, else fp16); ignored on the CPU
    threshold: float = 0.5
    monitor: str | None = None  # validation metric for the best checkpoint (higher is better); default
    # iou_fg for prompt models, miou for multi-class ones
    patience: int | None = None  # early stopping: epochs without improvement
    use_cache: bool = True  # train on cached frozen-backbone activations
    cache_dir: str | None = None  # default: <out_dir>/activation_cache
    snapshot_samples: int = 4  # fixed validation samples predicted after every epoch
    max_seconds: float | None = None  # stop after the epoch that passes this wall time
    resume: bool = False  # continue out_dir's run even if this config differs (the same config always resumes)
    overwrite: bool = False  # replace another run in out_dir (only the entries its owner file lists)

    # -- YAML <-> dataclass ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data or {}, "").validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        data = load_yaml(path)
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self) -> TrainConfig:
        """Check every value (`ConfigError` naming the first wrong key); returns self. Run when the config is built,
        and again by whoever changes its fields afterwards (the CLI's --out, --device ...)."""
        from clipseg_lab.backbones.loading import check_backbone_name
        from clipseg_lab.data.registry import DATASETS
        from clipseg_lab.errors import UnknownNameError
        from clipseg_lab.losses import LOSSES
        from clipseg_lab.models.registry import SEMANTIC_FAMILIES, get_preset

        check_values(self, RULES)
        m, d = self.model, self.data
        if self.epochs == 0 and not m.init_from:  # 0 epochs = only the loaded weights' validation (epoch 0)
            raise ConfigError("epochs: 0 is not allowed without model.init_from; an integer >= 1 (0 only scores the "
                              "weights a fine-tune starts from)")
        for key, check in (("model.name", get_preset), ("model.backbone", check_backbone_name)):
            try:
                check(getattr(m, key.split(".")[1]))
            except UnknownNameError as exc:  # their messages name the closest known name
                raise ConfigError(f"{key}: {exc}") from None
        family = get_preset(m.name).family
        if d.dataset not in DATASETS:
            close = difflib.get_close_matches(d.dataset, list(DATASETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"data.dataset: {d.dataset!r} is not allowed{hint}; one of {', '.join(DATASETS)}")
        if d.root is None and d.dataset not in ROOTLESS_DATASETS:
            raise ConfigError(f"data.root: required for dataset {d.dataset}; the folder or annotation file, e.g. "
                              f"root: data/{d.dataset}")
        kind = "multiclass" if family in SEMANTIC_FAMILIES else "binary"
        fitting = [k for k, (k_kind, _) in LOSSES.items() if k_kind == kind]
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: {self.loss!r} is not allowed; one of {', '.join(fitting)} (the losses for "
                              f"{m.name}'s {kind} targets)")
        if self.loss not in fitting:  # the Trainer says the same, but only after loading the backbone
            raise ConfigError(f"loss: {self.loss!r} does not fit {m.name} ({kind} targets); use one of {fitting}")
        params = list(inspect.signature(LOSSES[self.loss][1]).parameters)[2:]  # after (logits, target)
        unknown = sorted(set(self.loss_options) - set(params))
        if unknown:
            raise ConfigError(f"loss_options: {', '.join(unknown)} is not an option of {self.loss}; "
                              f"known: {', '.join(params)}")
        if self.monitor is not None and self.monitor not in MONITORS[kind]:
            raise ConfigError(f"monitor: {self.monitor!r} is not allowed for {m.name} ({kind}); one of "
                              f"{', '.join(MONITORS[kind])}")
        if self.device is not None:
            import torch

            try:  # the spelling only: whether this machine has the device is the Trainer's (and the CLI's) check
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ConfigError(f"device: {self.device!r} is not allowed; a torch device such as cpu, cuda, "
                                  "cuda:1 or mps, or null (cuda when present)") from None
        return self


def _build(cls, data: dict[str, Any] | None, prefix: str):
    if data is None:  # `model:` with every line below it commented out: the section's defaults
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {show(data)} is not allowed; a mapping of "
                          f"{', '.join(f.name for f in dataclasses.fields(cls))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + str(k) for k in unknown)}; known under "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, f"{prefix}{name}.")
        else:
            values[name] = value
    return cls(**values)
