"""The zero-shot remote-sensing configuration (`config.yml`), as dataclasses read from YAML.

The keys follow the ReSeg-CLIP seed's `config.yml` (`text_queries`, `input.dir`, `input.target_image_name`,
`output.base_dir`, `output.visualizations_subdir`, `model.{clip_model_name, clip_checkpoint, sam_checkpoint,
img_size, patch_size, num_classes}`, `attention.{num_initial_layers, num_neighbor_attention_layers,
num_sam_attention_layers, sam_param_sets}`), except that the seed's `class_mapping` is split in two:

* `query_to_class`: text query (its text, or its 0-based position in `text_queries`) -> class;
* `label_to_class`: ground-truth label value (an index, or "r,g,b" for colour labels) -> class, or `ignore`.

and adds `classes` (the class names; a class's index is its position), `templates`, `logit_scale`,
`background`, `palette`, `dense`, `sliding` and a few `attention` options. Unknown keys are errors that name the
file, the key and the keys allowed there; so is every wrong value (type, range, choice: `check_values` with
`rules()`), naming the dotted key, the value and what is allowed. `output.visualizations_subdir` must stay inside
`output.base_dir`. Relative paths are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipseg_lab.configuration import ConfigLoader, Rule, check_values, load_yaml, one_of, relative_path
from clipseg_lab.errors import ConfigError

IGNORE_WORDS = ("ignore", "void", "none")
SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")


@dataclass
class InputConfig:
    """Where the tiles are and how they are stored."""

    dir: str | None = None
    target_image_name: str = "R_G_B_IR.png"  # ReSeg-CLIP layout: <tile>/<target_image_name> (+ label_name)
    label_name: str = "L.png"
    layout: str = "auto"  # auto | reseg | mmseg (img_dir/ + ann_dir/)
    split: str | None = None  # mmseg: img_dir/<split>/
    coding: str = "isprs-index"  # label file coding: isprs-index | isprs-colour | loveda (see data.remote_sensing)
    bands: str | list[int] = "RGB"  # RGB | IRRG | band indices into the image file


@dataclass
class OutputConfig:
    base_dir: str = "outputs/zeroshot"
    visualizations_subdir: str = "visualizations"
    overlay_alpha: float = 0.5


@dataclass
class ModelConfig:
    clip_model_name: str = "ViT-B/16"  # a name load_backbone knows, a hub id, or tiny-random
    clip_checkpoint: str | None = None  # an OpenAI .pt or Hugging Face dir; used instead of the name when given
    sam_checkpoint: str | None = None  # a SAM .pth, vit_h / vit_l / vit_b (looked up in $CLIPSEG_LAB_WEIGHTS),
                                       # tiny-random
    sam_model_type: str | None = None  # vit_h / vit_l / vit_b; checked against the checkpoint
    img_size: int | None = None  # CLIP input size of each window (windows are resized to it); default: the window
    patch_size: int | None = None  # checked against the backbone when given
    num_classes: int | None = None  # checked against `classes` when given
    device: str | None = None
    dtype: str | None = None  # default: float16 on CUDA, float32 on the CPU


@dataclass
class AttentionConfig:
    """ReSeg-CLIP's hierarchical attention masking: N unrestricted, M neighbourhood, L SAM-region blocks."""

    num_initial_layers: int | None = None  # None: every block before the masked ones
    num_neighbor_attention_layers: int = 0
    num_sam_attention_layers: int = 0
    neighbourhood_radius: int = 1  # patches; the window is (2r+1)^2
    outside_regions: str = "neighbourhood"  # tokens outside every SAM region: neighbourhood | self | global
    cls_token: str = "global"  # global (attends / is attended everywhere) | isolated (ReSeg-CLIP's reference code)
    sam_param_sets: list[dict] = field(default_factory=lambda: [
        {"points_per_side": 16, "pred_iou_thresh": 0.8, "stability_score_thresh": 0.9}])
    sam_mode: str = "merged"  # merged: one partition from all sets | per_layer: set i for SAM layer i
    min_region_area: int = 0  # pixels; smaller merged regions become "outside every region"


@dataclass
class DenseConfig:
    variant: str = "sclip"  # vanilla | maskclip | sclip | clearclip | naclip
    gaussian_std: float = 5.0  # naclip's spatial prior, in patches
    cls_token_lambda: float = 0.0  # SegEarth-OV's global-bias removal: logits += lambda * (class token . text)


@dataclass
class SlidingConfig:
    short_side: int | None = 448  # resize the tile so its short side is this (None: keep the size)
    window: int = 224
    stride: int = 112
    batch_size: int = 16  # windows per forward pass


@dataclass
class BackgroundConfig:
    class_name: str | None = None  # YAML key `class`: the background / clutter class
    threshold: float = 0.0  # a pixel whose best class probability is below this gets the background class


@dataclass
class ZeroShotConfig:
    classes: list[str]
    text_queries: list[str] | dict[str, str | list[str]]  # a mapping: class -> its query or queries
    query_to_class: dict | None = None
    label_to_class: dict | None = None
    templates: str | list[str] = "none"
    logit_scale: float = 50.0
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    palette: list[list[int]] | None = None  # one [r, g, b] per class (default: the dataset's usual colours)
    dense: DenseConfig = field(default_factory=DenseConfig)
    sliding: SlidingConfig = field(default_factory=SlidingConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    dataset: str | None = None  # a name for captions and outputs
    seed: int = 0
    source: str | None = field(default=None, metadata={"yaml": False})  # the file it was read from

    # -- derived ---------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return self.source or "config"

    def query_set(self):
        from clipseg_lab.zeroshot.text import build_query_set

        return build_query_set(self.classes, self.text_queries, self.query_to_class,
                               background=self.background.class_name, where=self.where)

    @property
    def background_index(self) -> int | None:
        return self.classes.index(self.background.class_name) if self.background.class_name else None

    def resolved_label_to_class(self) -> dict | None:
        """`label_to_class` with 'ignore' as 255 and "r,g,b" keys as tuples (None: the coding's own mapping)."""
        if self.label_to_class is None:
            return None
        out: dict = {}
        for key, value in self.label_to_class.items():
            out[parse_label_key(key, self.where)] = (255 if isinstance(value, str) and value.lower() in IGNORE_WORDS
                                                     else value)
        return out

    def validate(self) -> ZeroShotConfig:
        from clipseg_lab.data.remote_sensing import CODINGS
        from clipseg_lab.zeroshot.dense import check_variant
        from clipseg_lab.zeroshot.sam import check_param_sets
        from clipseg_lab.zeroshot.sliding import check_window
        from clipseg_lab.zeroshot.text import resolve_templates

        where = self.where
        try:
            check_values(self, rules(), aliases={BackgroundConfig: {"class_name": "class"}})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if self.background.class_name is not None and self.background.class_name not in self.classes:
            raise ConfigError(f"{where}: background.class {self.background.class_name!r} is not one of the classes "
                              f"{self.classes}")
        self.query_set()
        if self.model.num_classes is not None and self.model.num_classes != len(self.classes):
            raise ConfigError(f"{where}: model.num_classes is {self.model.num_classes} but {len(self.classes)} classes "
                              f"are listed: {self.classes}")
        try:  # these checks are shared with the Python API, which has no file to name: add it here
            resolve_templates(self.templates)
            check_variant(self.dense.variant)
            check_window(self.sliding.window, self.sliding.stride)
        except ConfigError as exc:
            key = ("templates" if "template" in str(exc) else "dense.variant" if "variant" in str(exc)
                   else "sliding")
            raise ConfigError(f"{where}: {key}: {exc}") from exc
        if self.label_to_class is None and len(CODINGS[self.input.coding].class_names) != len(self.classes):
            raise ConfigError(f"{where}: {len(self.classes)} classes but the label coding {self.input.coding!r} has "
                              f"{len(CODINGS[self.input.coding].class_names)}: give label_to_class")
        if self.label_to_class is not None:
            from clipseg_lab.data.remote_sensing import resolve_label_to_class

            try:
                resolve_label_to_class(self.resolved_label_to_class(), self.classes)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        att = self.attention
        if att.num_sam_attention_layers:
            check_param_sets(att.sam_param_sets, f"{where}: attention.sam_param_sets")
            if not att.sam_param_sets:
                raise ConfigError(f"{where}: attention.sam_param_sets is empty but num_sam_attention_layers > 0")
            if self.model.sam_checkpoint is None:
                raise ConfigError(f"{where}: num_sam_attention_layers > 0 needs model.sam_checkpoint (a SAM .pth, "
                                  "vit_h / vit_l / vit_b, or tiny-random for tests)")
        if self.palette is not None and len(self.palette) != len(self.classes):
            raise ConfigError(f"{where}: palette needs one [r, g, b] per class ({len(self.classes)})")
        return self

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        data["background"] = {"class": data["background"].pop("class_name"), **data["background"]}
        return data


ALIASES = {BackgroundConfig: {"class": "class_name"}}


def rules() -> dict[str, Rule]:
    """What each value may be beyond its type hint (dotted YAML keys; None passes where the hint allows it). The
    checks that need more than one value (classes vs queries, window vs stride, ...) stay in `validate`."""
    from clipseg_lab.data.remote_sensing import BAND_PRESETS, CODINGS
    from clipseg_lab.zeroshot.masks import OUTSIDE_POLICIES

    positive, count = ((lambda v: v >= 1), "an integer >= 1"), ((lambda v: v >= 0), "an integer >= 0")
    return {
        "logit_scale": ((lambda v: v > 0), "a number > 0"),
        "background.threshold": ((lambda v: 0 <= v <= 1), "a probability in [0, 1]"),
        "palette": ((lambda v: all(len(c) == 3 and all(0 <= x <= 255 for x in c) for c in v)),
                    "a list of [r, g, b] colours (0..255), one per class"),
        "dense.gaussian_std": ((lambda v: v > 0), "a number > 0 (patches)"),
        "sliding.short_side": positive, "sliding.window": positive, "sliding.stride": positive,
        "sliding.batch_size": positive,
        "attention.num_initial_layers": count, "attention.num_neighbor_attention_layers": count,
        "attention.num_sam_attention_layers": count, "attention.neighbourhood_radius": count,
        "attention.min_region_area": count,
        "attention.outside_regions": one_of(*OUTSIDE_POLICIES),
        "attention.cls_token": one_of("global", "isolated"),
        "attention.sam_mode": one_of("merged", "per_layer"),
        "model.img_size": positive, "model.patch_size": positive, "model.num_classes": positive,
        "model.sam_model_type": one_of(*SAM_MODEL_TYPES),
        "model.dtype": one_of("float32", "float16", "bfloat16"),
        "input.layout": one_of("auto", "reseg", "mmseg"),
        "input.coding": one_of(*CODINGS),
        "input.bands": ((lambda v: v in BAND_PRESETS if isinstance(v, str) else bool(v) and min(v) >= 0),
                        f"one of {', '.join(BAND_PRESETS)}, or a list of band indices (>= 0) into the image file"),
        "input.target_image_name": relative_path("each tile folder"),
        "input.label_name": relative_path("each tile folder"),
        "output.base_dir": ((lambda v: bool(v.strip())), "a folder name"),
        "output.visualizations_subdir": relative_path("output.base_dir"),
        "output.overlay_alpha": ((lambda v: 0 <= v <= 1), "a number in [0, 1]"),
    }


def parse_label_key(key: Any, where: str = "config") -> int | tuple[int, int, int]:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, (list, tuple)):
        return tuple(int(v) for v in key)
    text = str(key).strip().strip("()[]")
    try:
        parts = [int(p) for p in text.replace(" ", "").split(",")]
    except ValueError as exc:
        raise ConfigError(f"{where}: label_to_class key {key!r} is neither a label value "
                          "nor an 'r,g,b' colour") from exc
    return parts[0] if len(parts) == 1 else tuple(parts)


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def from_dict(cls: type, data: Mapping[str, Any] | None, where: str, path: str = "") -> Any:
    """A dataclass from a mapping, recursively; unknown keys are a `ConfigError` naming `where` and the key."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {path or 'the file'} must be a mapping of settings, got {data!r}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    aliases = ALIASES.get(cls, {})
    inverse = {v: k for k, v in aliases.items()}
    names = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)}
    shown = sorted(inverse.get(n, n) for n in names)
    kwargs = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name not in names:
            where_key = f"{path}.{key}" if path else str(key)
            hint = difflib.get_close_matches(str(key), shown, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            if key == "class_mapping":
                extra = (": the seed's class_mapping is split into query_to_class (text query -> class) and "
                         "label_to_class (ground-truth label value -> class)")
            raise ConfigError(f"{where}: unknown key {where_key!r}{extra}. Allowed here: {shown}")
        tp = _strip_optional(hints[name])
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            value = from_dict(tp, value, where, f"{path}.{key}" if path else str(key))
        kwargs[name] = value
    missing = [n for n, f in names.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {[f'{path}.{m}' if path else m for m in missing]}")
    return cls(**kwargs)


def load_config(path: str | os.PathLike | Mapping[str, Any], *, validate: bool = True) -> ZeroShotConfig:
    """Read and check a zero-shot config from a YAML file (or an already-parsed mapping)."""
    if isinstance(path, Mapping):
        data, source = dict(path), None
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: no such config file (see configs/zeroshot/ for examples)")
        data, source = load_yaml(file, example="configs/zeroshot/potsdam.yaml"), str(file)
    config = from_dict(ZeroShotConfig, data, source or "config")
    config.source = source
    return config.validate() if validate else config


def with_overrides(config: ZeroShotConfig, **changes: Any) -> ZeroShotConfig:
    """A copy with dotted-key changes, e.g. `with_overrides(c, **{"model.clip_model_name": "tiny-random"})` (a None
    value sets the key to None). The copy is validated."""
    data = config.to_dict()
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split(".")
        for p in parents:
            if p not in target or not isinstance(target[p], dict):
                sections = sorted(k for k, v in target.items() if isinstance(v, dict))
                raise ConfigError(f"cannot override {dotted!r}: no section {p!r}; sections here: {sections}")
            target = target[p]
        if last not in target:
            hint = difflib.get_close_matches(last, list(target), n=1)
            raise ConfigError(f"cannot override {dotted!r}: unknown key {last!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "") + f". Allowed: {sorted(target)}")
        target[last] = value
    new = from_dict(ZeroShotConfig, data, config.where)
    new.source = config.source
    return new.validate()


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`["sliding.stride=56", "templates=none"]` -> `{"sliding.stride": 56, "templates": "none"}`; each value is
    read as YAML (numbers, null, lists, mappings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set sliding.stride=56")
        try:
            out[key.strip()] = yaml.load(text, Loader=ConfigLoader) if text.strip() else None  # 1e-3: a float
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
    return out


def parse_layers(layers: str | Sequence[int]) -> tuple[int, int, int]:
    """'N,M,L' or three integers: unrestricted, neighbourhood and SAM-region attention blocks."""
    try:
        values = [int(v) for v in (layers.split(",") if isinstance(layers, str) else layers)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"layers {layers!r}: expected three integers N,M,L (e.g. 18,2,4)") from exc
    if len(values) != 3:
        raise ConfigError(f"layers {layers!r}: expected three integers N,M,L (e.g. 18,2,4)")
    return values[0], values[1], values[2]


def prepare_config(config: ZeroShotConfig | str | os.PathLike, *, input_dir: str | os.PathLike | None = None,
                   output_dir: str | os.PathLike | None = None, backbone: str | None = None, sam: str | None = None,
                   layers: str | Sequence[int] | None = None, variant: str | None = None, device: str | None = None,
                   overrides: Mapping[str, Any] | None = None) -> ZeroShotConfig:
    """A config with a run's changes applied and checked: what `clipseg-lab rs-infer` and notebook 09 do with their
    options. `overrides` (dotted keys) are applied last, so they win over the named options."""
    if not isinstance(config, ZeroShotConfig):
        config = load_config(config)
    changes: dict[str, Any] = {}
    if input_dir is not None:
        changes["input.dir"] = str(input_dir)
    if output_dir is not None:
        changes["output.base_dir"] = str(output_dir)
    if variant is not None:
        changes["dense.variant"] = variant
    if device is not None:
        changes["model.device"] = device
    if backbone:  # the config's patch size belongs to its own backbone, as does a checkpoint file
        changes.update({"model.clip_model_name": str(backbone), "model.clip_checkpoint": None,
                        "model.patch_size": None})
    if sam:
        changes["model.sam_checkpoint"] = str(sam)
        if str(sam) in SAM_MODEL_TYPES:
            changes["model.sam_model_type"] = str(sam)
    if layers is not None:
        n, m, l_ = parse_layers(layers)
        changes.update({"attention.num_initial_layers": n, "attention.num_neighbor_attention_layers": m,
                        "attention.num_sam_attention_layers": l_})
    changes.update(overrides or {})
    return with_overrides(config, **changes) if changes else config
