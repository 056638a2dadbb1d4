"""Training configuration: dataclasses that read and write YAML, and name any key they do not know."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipseg_lab.errors import ConfigError


@dataclass
class ModelConfig:
    name: str = "clipseg-rd64"
    backbone: str = "tiny-random"
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
        return _build(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc})") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _build(cls, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, not {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}; known under "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, f"{prefix}{name}.")
        else:
            values[name] = value
    return cls(**values)
