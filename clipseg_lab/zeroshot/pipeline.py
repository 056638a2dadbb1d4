"""The zero-shot remote-sensing pipeline: segment tiles, write predictions and metrics, shard, resume, merge.

`ZeroShotSegmenter` holds what is loaded once (the frozen CLIP, the query text embeddings, SAM) and segments
one tile: resize (short side), SAM regions once per tile (cached), sliding windows batched through the dense
CLIP with the per-block attention masks, overlapping query logits averaged, upsampled to the tile, class
probabilities, background threshold.

`run` walks every tile of `input.dir` (ReSeg-CLIP's `<tile>/R_G_B_IR.png` + `L.png` folders, found recursively,
or mmseg's `img_dir/ann_dir`), takes its shard of them (`shard=(i, N)`: tiles `i, i+N, ...` of the sorted list,
so N processes or machines split the work without overlap), and writes into
`output.base_dir/visualizations_subdir/<tile name>/`: `pred_mask.png` (colour-coded), `pred_labels.png` (class
indices), `pred_overlay.png`, and `gt_mask.png` / `gt_overlay.png` when the tile has a label, then `tile.json`
(metrics and the confusion matrix) last, atomically, as the commit marker. A tile counts as finished only when its
record is of the current format, its settings fingerprint equals this run's, its input fingerprint (size and
sha256 of the image and label files, plus the bands and label coding they are read with) equals that of the files
as they are now, and every output file the record lists exists with the recorded size. Anything else -- outputs
deleted, or absent as in a fresh git clone (the PNGs are not committed), an image replaced, other settings, an
old-format record -- and the tile is segmented again (its old record removed first, its outputs replaced); the
summary says how many were redone and why. A tile that cannot be read (no target image, a label of another size,
an unreadable file) is reported and skipped; the run goes on.

`merge_outputs` sums the per-tile confusion matrices of one or many output folders (the shards) -- exact, since
a confusion matrix is a sum over pixels -- and writes the cumulative `metrics.json`, `metrics.csv` (one row: OA,
mIoU, mF1), `metrics_per_class.csv` (IoU, F1, precision, recall per class), and the per-tile `metrics_per_tile.csv`
and `metrics_per_tile.json`. A record whose outputs are missing or changed, or of the old format, is not merged:
it is reported as unfinished (`missing`, with the reason in `incomplete`). A single-process run (N = 1) merges at
its end.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipseg_lab.data.base import DatasetError
from clipseg_lab.data.masks import IGNORE_INDEX, MaskError
from clipseg_lab.errors import ClipsegLabError, ConfigError
from clipseg_lab.files import file_sha256, json_safe, save_png, write_csv, write_json
from clipseg_lab.ownership import claim
from clipseg_lab.provenance import Provenance, git_commit
from clipseg_lab.seeding import seed_everything
from clipseg_lab.zeroshot.config import ZeroShotConfig, load_config
from clipseg_lab.zeroshot.dense import DenseClip
from clipseg_lab.zeroshot.masks import build_layer_masks, layer_plan, token_regions
from clipseg_lab.zeroshot.sliding import SlidingWindow, crop_windows, resize_short_side, slide
from clipseg_lab.zeroshot.text import class_probabilities, encode_queries, predict_classes, resolve_templates

log = logging.getLogger(__name__)

TILE_RECORD = "tile.json"
RECORD_FORMAT = 2  # tile.json with the input fingerprint and the list of outputs (format 1 had neither)
TILE_OUTPUTS = ("pred_mask.png", "pred_labels.png", "pred_overlay.png", "gt_mask.png", "gt_overlay.png")
RUN_CONFIG = "run_config.json"
TILE_ERRORS = (ClipsegLabError, MaskError, DatasetError, OSError, ValueError)
UNTRAINED_NOTE = ("UNTRAINED weights (random CLIP and/or SAM): these predictions and metrics show no learned "
                  "segmentation; they only check that the pipeline runs")


# -- the segmenter ------------------------------------------------------------------------------------
@dataclass
class TilePrediction:
    labels: torch.Tensor  # (H, W) long class indices at the tile's resolution
    probs: torch.Tensor  # (C, H, W) float32 class probabilities
    regions: np.ndarray | None  # (S, h, w) SAM partitions of the resized tile, or None
    seconds: float


class ZeroShotSegmenter:
    """Everything loaded once; `segment(image)` for each tile.

    `backbone` / `sam`: already-loaded models to reuse (a `ClipBackbone`, a `LoadedSam`); otherwise they are loaded
    from the config (SAM only when the config has SAM-region layers). `regions`: a `SamRegionGenerator` to share
    between segmenters (e.g. an ablation: SAM then runs once per tile for all settings).
    """

    def __init__(self, config: ZeroShotConfig, *, backbone=None, sam=None, regions=None,
                 device: str | torch.device | None = None, cache_dir: str | os.PathLike | None = None):
        from clipseg_lab.backbones import load_backbone

        self.config = config
        model = config.model
        device = device or model.device
        if backbone is None:
            backbone = load_backbone(model.clip_checkpoint or model.clip_model_name, device=device, dtype=model.dtype)
        self.backbone = backbone
        if model.patch_size is not None and model.patch_size != backbone.patch_size:
            raise ConfigError(f"{config.where}: model.patch_size is {model.patch_size} but the backbone "
                              f"{backbone.name} has patches of {backbone.patch_size}")
        self.window = SlidingWindow(config.sliding.window, config.sliding.stride, config.sliding.batch_size)
        self.img_size = model.img_size or config.sliding.window
        if self.img_size % backbone.patch_size:
            raise ConfigError(f"{config.where}: model.img_size {self.img_size} (the CLIP input size of each window) "
                              f"is not a multiple of the patch size {backbone.patch_size}")
        self.grid = backbone.patch_grid(self.img_size)
        att = config.attention
        self.plan = layer_plan(backbone.num_layers, att.num_initial_layers, att.num_neighbor_attention_layers,
                               att.num_sam_attention_layers)
        self.queries = config.query_set()
        self.templates = resolve_templates(config.templates)
        self.text = encode_queries(backbone, self.queries.queries, self.templates).to(backbone.device)
        self.dense = DenseClip(backbone, config.dense.variant, gaussian_std=config.dense.gaussian_std)
        self.sam = sam
        self._sam_given = sam
        self.regions = None  # the SAM region generator, when this plan has SAM layers
        self._region_pool = regions  # a generator shared with sibling segmenters (with_settings)
        if "sam" in self.plan:
            from clipseg_lab.zeroshot.sam import SamRegionGenerator, check_param_sets, load_sam

            pool = self._region_pool
            if pool is not None and (pool.param_sets, pool.min_region_area, pool.mode) == (
                    check_param_sets(att.sam_param_sets), att.min_region_area, att.sam_mode):
                self.regions = pool
            else:
                if self.sam is None:
                    self.sam = pool.sam if pool is not None else load_sam(model.sam_checkpoint, model.sam_model_type,
                                                                          device=backbone.device)
                self.regions = SamRegionGenerator(self.sam, att.sam_param_sets, min_region_area=att.min_region_area,
                                                  mode=att.sam_mode, cache_dir=cache_dir)
                self._region_pool = self.regions
            self.sam = self.regions.sam
        else:
            self.sam = None

    # -- description ------------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[int, int, int]:
        return tuple(self.plan.count(k) for k in ("full", "neighbourhood", "sam"))  # type: ignore[return-value]

    @property
    def untrained(self) -> bool:
        return not self.backbone.trained or (self.sam is not None and not self.sam.trained)

    @property
    def provenance(self) -> Provenance:
        n, m, l_ = self.layers
        if self.sam is None:
            decoder = "training-free (no decoder, no SAM)"
        elif self.sam.trained:
            decoder = f"training-free (no decoder); {self.sam.label}"
        else:
            decoder = f"untrained {self.sam.label}"
        return Provenance(model=f"zero-shot {self.config.dense.variant}, attention layers {n}/{m}/{l_}",
                          backbone=self.backbone.name, backbone_trained=self.backbone.trained,
                          backbone_source=self.backbone.source, decoder=decoder,
                          extra={"variant": self.config.dense.variant, "layers": [n, m, l_],
                                 "sam": self.sam.label if self.sam else None},
                          backbone_note=getattr(self.backbone, "untrained_note", ""))

    @property
    def fingerprint(self) -> str:
        """What the predictions depend on (not the input or output folders, nor the device)."""
        data = self.config.to_dict()
        for key in ("input", "output", "dataset"):
            data.pop(key, None)
        data["model"].pop("device", None)
        data["backbone"] = [self.backbone.name, self.backbone.source, str(self.backbone.dtype)]
        data["sam"] = [self.sam.model_type, self.sam.source] if self.sam else None
        data["layers"] = list(self.layers)
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def with_settings(self, *, variant: str | None = None, layers: Sequence[int] | None = None,
                      **overrides: Any) -> ZeroShotSegmenter:
        """A segmenter sharing this one's backbone, SAM and region cache, with another dense variant / layer split
        (the notebook's ablation). `overrides`: dotted config keys, as `config.with_overrides`."""
        from clipseg_lab.zeroshot.config import with_overrides

        changes = dict(overrides)
        if variant is not None:
            changes["dense.variant"] = variant
        if layers is not None:
            n, m, l_ = layers
            changes.update({"attention.num_initial_layers": n, "attention.num_neighbor_attention_layers": m,
                            "attention.num_sam_attention_layers": l_})
            sam = self.sam or self._sam_loaded()
            if l_ and self.config.model.sam_checkpoint is None and sam is not None:
                changes["model.sam_checkpoint"] = sam.name
        config = with_overrides(self.config, **changes)
        sibling = ZeroShotSegmenter(config, backbone=self.backbone, sam=self.sam or self._sam_loaded(),
                                    regions=self._region_pool)
        if self._region_pool is None:
            self._region_pool = sibling._region_pool
        return sibling

    def _sam_loaded(self):
        return self._region_pool.sam if self._region_pool is not None else self._sam_given

    # -- inference --------------------------------------------------------------------------------
    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        pixels = image.to(bb.device, torch.float32) / 255.0
        return ((pixels - bb.mean[0]) / bb.std[0]).to(bb.dtype)

    def _window_model(self, partitions: torch.Tensor | None):
        win, bb = self.window.window, self.backbone
        att = self.config.attention
        lam = self.config.dense.cls_token_lambda

        def model(crops: torch.Tensor, boxes) -> torch.Tensor:
            x = crops
            if self.img_size != win:
                x = F.interpolate(x.float(), size=(self.img_size, self.img_size), mode="bilinear",
                                  align_corners=False).to(bb.dtype)
            regions = None
            if partitions is not None:
                regions = []
                for part in partitions:  # one partition (merged) or one per SAM layer
                    cropped = crop_windows(part[None], boxes, win, pad_value=-1)[:, 0]
                    regions.append(token_regions(cropped, self.grid))
            masks = build_layer_masks(self.plan, self.grid, radius=att.neighbourhood_radius,
                                      outside=att.outside_regions, cls=att.cls_token, regions=regions,
                                      device=bb.device)
            out = self.dense(x, masks)
            logits = torch.einsum("bhwd,qd->bqhw", out.patches, self.text)
            if lam:
                logits = logits + lam * (out.cls @ self.text.T)[:, :, None, None]
            return F.interpolate(logits, size=(win, win), mode="bilinear", align_corners=False)

        return model

    @torch.inference_mode()
    def query_logits(self, image: torch.Tensor, name: str | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
        """Cosine similarity of every pixel with every query, `(Q, H, W)` float32, and the SAM partitions."""
        height, width = image.shape[-2:]
        resized = resize_short_side(image, self.config.sliding.short_side)
        partitions = None
        if self.regions is not None:
            partitions = self.regions.partitions(resized.permute(1, 2, 0).cpu().numpy(), name)
        parts_t = torch.from_numpy(partitions).to(self.backbone.device) if partitions is not None else None
        logits = slide(self.normalise(resized), self._window_model(parts_t), self.window).float()
        if tuple(logits.shape[-2:]) != (height, width):
            logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return logits, partitions

    @torch.inference_mode()
    def segment(self, image: torch.Tensor, name: str | None = None) -> TilePrediction:
        """`image`: `(3, H, W)` uint8 RGB. `name`: the tile's name (the key of the on-disk SAM region cache)."""
        start = time.perf_counter()
        logits, partitions = self.query_logits(image, name)
        probs = class_probabilities(logits, self.queries.query_class, self.queries.num_classes, self.config.logit_scale)
        labels = predict_classes(probs, self.config.background_index, self.config.background.threshold)
        return TilePrediction(labels.cpu(), probs.cpu(), partitions, time.perf_counter() - start)


# -- tiles, shards, outputs -----------------------------------------------------------------------------
def open_tiles(config: ZeroShotConfig, input_dir: str | os.PathLike | None = None):
    from clipseg_lab.data.remote_sensing import RemoteSensingTiles

    root = input_dir or config.input.dir
    if root is None:
        raise ConfigError(f"{config.where}: input.dir is not set (or pass --input DIR)")
    inp = config.input
    try:
        return RemoteSensingTiles(root, layout=inp.layout, coding=inp.coding, class_names=config.classes,
                                  label_to_class=config.resolved_label_to_class(), bands=inp.bands, split=inp.split,
                                  target_image_name=inp.target_image_name, label_name=inp.label_name)
    except ValueError as exc:
        raise ConfigError(f"{config.where}: cannot read the tiles in {root}: {exc}") from exc


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/N' (0-based i) or 'auto' (torchrun's RANK / WORLD_SIZE, else a Slurm job array) -> (i, N)."""
    if text is None:
        return 0, 1
    if text == "auto":
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if "SLURM_ARRAY_TASK_ID" in os.environ and "SLURM_ARRAY_TASK_COUNT" in os.environ:
            first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
            return int(os.environ["SLURM_ARRAY_TASK_ID"]) - first, int(os.environ["SLURM_ARRAY_TASK_COUNT"])
        return 0, 1
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise ConfigError(f"--shard {text!r}: expected i/N (e.g. 0/4 ... 3/4) or 'auto'") from exc
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= i < N")
    return index, count


def shard_tiles(tiles: Sequence[Any], shard: tuple[int, int]) -> list[Any]:
    """Tiles `i, i + N, i + 2N, ...` of the name-sorted list: disjoint shares that together cover every tile."""
    index, count = shard
    return sorted(tiles, key=lambda t: t.name)[index::count]


def _palette(config: ZeroShotConfig) -> np.ndarray:
    from clipseg_lab.zeroshot.viz import config_palette

    return config_palette(config)


def tile_metrics(confusion: torch.Tensor, classes: Sequence[str]) -> dict[str, Any] | None:
    from clipseg_lab.metrics import SegmentationMetrics

    metrics = SegmentationMetrics(len(classes), class_names=list(classes))
    metrics.confusion = confusion.clone().long()
    if int(metrics.confusion.sum()) == 0:
        return None
    result = metrics.compute()
    return json_safe({"oa": result["oa"], "miou": result["miou"], "mf1": result["mf1"], "pixels": result["pixels"],
                   "per_class": {name: {k: v[k] for k in ("iou", "f1", "precision", "recall", "support")}
                                 for name, v in result["per_class"].items()}})


def _png_meta(segmenter: ZeroShotSegmenter, tile: str) -> dict[str, str]:
    prov = segmenter.provenance
    meta = {"provenance": prov.caption(), "tile": tile, "classes": json.dumps(list(segmenter.config.classes)),
            "untrained": str(segmenter.untrained).lower()}
    if segmenter.untrained:
        meta["warning"] = UNTRAINED_NOTE
    return meta


def write_tile(tile_dir: Path, image: np.ndarray, prediction: TilePrediction, gt: np.ndarray | None,
               segmenter: ZeroShotSegmenter, *, record: dict[str, Any]) -> dict[str, Any]:
    """The tile's images, then its `tile.json` (last, atomically: the commit marker), listing every output file
    with its size and sha256. Outputs of an earlier run that this one does not write (a label since removed) go."""
    from PIL import Image

    from clipseg_lab.zeroshot.viz import colourise, overlay

    config = segmenter.config
    palette, alpha = _palette(config), config.output.overlay_alpha
    meta = _png_meta(segmenter, record["tile"])
    pred = prediction.labels.numpy().astype(np.uint8)
    pred_rgb = colourise(pred, palette)
    save_png(Image.fromarray(pred_rgb), tile_dir / "pred_mask.png", meta)
    save_png(Image.fromarray(pred, mode="L"), tile_dir / "pred_labels.png", meta)
    save_png(Image.fromarray(overlay(image, pred_rgb, alpha)), tile_dir / "pred_overlay.png", meta)
    confusion = None
    if gt is not None:
        gt_rgb = colourise(gt, palette)
        save_png(Image.fromarray(gt_rgb), tile_dir / "gt_mask.png", meta)
        save_png(Image.fromarray(overlay(image, gt_rgb, alpha, valid=gt != IGNORE_INDEX)), tile_dir / "gt_overlay.png",
                 meta)
        from clipseg_lab.metrics import SegmentationMetrics

        m = SegmentationMetrics(len(config.classes), class_names=list(config.classes))
        m.update(prediction.labels[None], torch.from_numpy(gt)[None])
        confusion = m.confusion
    record.update({"confusion": confusion.tolist() if confusion is not None else None,
                   "metrics": tile_metrics(confusion, config.classes) if confusion is not None else None,
                   "seconds": round(prediction.seconds, 4),
                   "regions": int(prediction.regions.max() + 1) if prediction.regions is not None else None})
    written = [name for name in TILE_OUTPUTS if name.startswith("pred_") or gt is not None]
    for name in set(TILE_OUTPUTS) - set(written):
        (tile_dir / name).unlink(missing_ok=True)
    record["format"] = RECORD_FORMAT
    record["outputs"] = {name: file_fingerprint(tile_dir / name) for name in written}
    write_json(tile_dir / TILE_RECORD, record)
    return record


def read_tile_record(tile_dir: Path) -> dict[str, Any] | None:
    """The tile's `tile.json` as written (None when absent or unreadable); whether the tile is finished is
    `tile_status`'s question."""
    file = tile_dir / TILE_RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """`{"bytes": size, "sha256": hex digest}` of a file's contents."""
    return {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def input_fingerprint(tile: Any, config: ZeroShotConfig) -> dict[str, Any]:
    """What a tile's prediction and metrics depend on besides the settings: the contents of its image and label
    files (not their paths: a moved or re-cloned data folder with the same files is the same input) and how they
    are read (bands, label coding; the rest of `input` only says where the files are)."""
    return json.loads(json.dumps({"image": file_fingerprint(tile.image),
                                  "label": file_fingerprint(tile.label) if tile.label is not None else None,
                                  "bands": config.input.bands, "coding": config.input.coding}))


def tile_status(tile_dir: str | os.PathLike, fingerprint: str | None = None,
                inputs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> tuple[str, str] | None:
    """None when the tile in `tile_dir` is finished; else `(reason, detail)`, the reason one of "no record",
    "unreadable record", "old-format record", "settings changed", "outputs missing", "outputs changed",
    "input changed". `fingerprint`: the settings fingerprint it must have (None: not checked). `inputs`: the
    current input fingerprint (`input_fingerprint`), or a function giving it, called only when everything else
    holds (hashing the inputs is the costly part); None: not checked."""
    tile_dir = Path(tile_dir)
    file = tile_dir / TILE_RECORD
    if not file.is_file():
        return "no record", f"no {TILE_RECORD}"
    record = read_tile_record(tile_dir)
    if record is None:
        return "unreadable record", f"{file} is not a JSON object"
    return record_status(record, tile_dir, fingerprint, inputs)


def record_status(record: dict[str, Any], tile_dir: str | os.PathLike, fingerprint: str | None = None,
                  inputs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> tuple[str, str] | None:
    """`tile_status` for a record already read from `tile_dir`."""
    tile_dir = Path(tile_dir)
    outputs = record.get("outputs")
    if (record.get("format") != RECORD_FORMAT or not isinstance(outputs, dict) or not outputs
            or not isinstance(record.get("input"), dict)):
        return "old-format record", f"{tile_dir / TILE_RECORD} lists no outputs or input fingerprint (older format)"
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return "settings changed", f"fingerprint {record.get('fingerprint')} != {fingerprint}"
    missing, changed = [], []
    for name, meta in sorted(outputs.items()):
        path = tile_dir / name
        if Path(name).name != name or not path.is_file():  # only plain file names of the tile's own folder
            missing.append(name)
        elif not isinstance(meta, dict) or path.stat().st_size != meta.get("bytes"):
            changed.append(name)
    if missing:
        return "outputs missing", ", ".join(missing)
    if changed:
        return "outputs changed", f"{', '.join(changed)}: another size than recorded"
    if inputs is not None:
        current = inputs() if callable(inputs) else inputs
        if record["input"] != current:
            what = [k for k in sorted(set(current) | set(record["input"]))
                    if current.get(k) != record["input"].get(k)]
            return "input changed", ", ".join(what)
    return None


def free_memory(device: torch.device) -> None:
    """Give the accelerator's cached blocks back between tiles (tiles differ in size, so the caching allocator
    would otherwise keep the peak of every size). On the CPU, reference counting already freed the tile's tensors
    and a full `gc.collect` only costs time (~0.2 s per tile with transformers imported)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    elif device.type == "mps":
        gc.collect()
        torch.mps.empty_cache()


@dataclass
class RunSummary:
    out_dir: Path
    shard: tuple[int, int]
    tiles: list[str] = field(default_factory=list)  # this shard's tiles
    processed: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    redone: list[tuple[str, str]] = field(default_factory=list)  # (tile, why): had a record but was not finished
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    metrics: dict[str, Any] | None = None  # cumulative (after the merge), when this run merged
    seconds: float = 0.0
    untrained: bool = False
    provenance: dict[str, Any] | None = None

    def report(self) -> str:
        redone = ""
        if self.redone:
            counts: dict[str, int] = {}
            for _, why in self.redone:
                counts[why] = counts.get(why, 0) + 1
            redone = f"; {len(self.redone)} redone: " + ", ".join(f"{why} ({n})" for why, n in counts.items())
        lines = [f"shard {self.shard[0]}/{self.shard[1]}: {len(self.tiles)} tiles: {len(self.processed)} segmented, "
                 f"{len(self.resumed)} already finished, {len(self.skipped)} skipped{redone}; {self.seconds:.1f} s"]
        lines += [f"  skipped {what}: {why}" for what, why in self.skipped]
        if self.metrics is not None and self.metrics.get("oa") is not None:
            lines.append(f"cumulative OA {self.metrics['oa']:.4f}, mIoU {self.metrics['miou']:.4f}, "
                         f"mF1 {self.metrics['mf1']:.4f} over {self.metrics['tiles_with_labels']} labelled tiles")
        if self.untrained:
            lines.append(UNTRAINED_NOTE)
        return "\n".join(lines)


def run(config: ZeroShotConfig | str | os.PathLike, *, shard: tuple[int, int] = (0, 1), resume: bool = True,
        limit: int | None = None, backbone=None, sam=None, device: str | None = None, progress: bool = True,
        merge: bool | None = None, overwrite: bool = False) -> RunSummary:
    """Segment this shard's tiles and write their outputs (see the module docstring). Returns what happened."""
    from tqdm.auto import tqdm

    if not isinstance(config, ZeroShotConfig):
        config = load_config(config)
    start = time.perf_counter()
    seed_everything(config.seed)
    if (device is None and config.model.device in (None, "cuda") and "LOCAL_RANK" in os.environ
            and torch.cuda.is_available()):  # torchrun: one GPU per process
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    out_dir = Path(config.output.base_dir)
    vis_dir = out_dir / config.output.visualizations_subdir
    dataset = open_tiles(config)
    tiles = sorted(dataset.records, key=lambda t: t.name)
    if limit is not None:
        tiles = tiles[:limit]
    mine = shard_tiles(tiles, shard)
    segmenter = ZeroShotSegmenter(config, backbone=backbone, sam=sam, device=device,
                                  cache_dir=out_dir / "cache" / "sam_regions")
    summary = RunSummary(out_dir, shard, tiles=[t.name for t in mine], untrained=segmenter.untrained,
                         provenance=segmenter.provenance.as_dict())
    summary.skipped += [(what, why) for what, why in dataset.skipped if "label missing" not in why]
    fingerprint = segmenter.fingerprint
    _claim_base_dir(config, fingerprint, overwrite)
    write_json(out_dir / RUN_CONFIG, {"config": config.to_dict(), "source": config.source, "fingerprint": fingerprint,
                                      "visualizations_subdir": config.output.visualizations_subdir,
                                      "classes": list(config.classes), "provenance": summary.provenance,
                                      "untrained": segmenter.untrained, "commit": git_commit(),
                                      "layers": list(segmenter.layers)})
    if segmenter.untrained:
        log.warning("%s", UNTRAINED_NOTE)
    bar = tqdm(mine, desc=f"tiles (shard {shard[0]}/{shard[1]})", disable=not progress)
    for tile in bar:
        tile_dir = vis_dir / tile.name
        hashed: list[dict[str, Any]] = []  # the tile's input fingerprint, computed at most once

        def current_inputs(tile=tile, hashed=hashed) -> dict[str, Any]:
            if not hashed:
                hashed.append(input_fingerprint(tile, config))
            return hashed[0]

        try:
            status = tile_status(tile_dir, fingerprint, current_inputs) if resume else ("resume off", "")
        except OSError as exc:  # an input file that cannot be read: loading it below reports it
            status = ("input unreadable", str(exc))
        if status is None:
            summary.resumed.append(tile.name)
            continue
        if resume and status[0] != "no record":
            summary.redone.append((tile.name, status[0]))
            log.warning("%s: not finished (%s: %s); segmenting it again", tile_dir, *status)
        (tile_dir / TILE_RECORD).unlink(missing_ok=True)  # no stale record claims the tile while it is redone
        try:
            inputs = current_inputs()  # hashed before loading: if a file changes in between, the next run redoes it
            sample = dataset.load(tile)
            image = sample["image"]
            if image.shape[0] != 3:
                raise ValueError(f"{tile.image}: {image.shape[0]} bands selected; the CLIP needs 3 (input.bands)")
            prediction = segmenter.segment(image, tile.name)
            gt = sample["mask"].numpy() if tile.label is not None else None
            record = {"tile": tile.name, "image": str(tile.image), "label": str(tile.label) if tile.label else None,
                      "size": list(image.shape[-2:]), "fingerprint": fingerprint, "input": inputs,
                      "classes": list(config.classes),
                      "untrained": segmenter.untrained, "provenance": summary.provenance}
            write_tile(tile_dir, image.permute(1, 2, 0).numpy(), prediction, gt, segmenter, record=record)
            summary.processed.append(tile.name)
            bar.set_postfix_str(f"{prediction.seconds:.2f} s/tile")
        except TILE_ERRORS as exc:
            summary.skipped.append((tile.name, f"{type(exc).__name__}: {exc}"))
            log.warning("skipped tile %s: %s", tile.name, exc)
        finally:
            sample = prediction = image = None  # noqa: F841 - drop the tile's tensors before the next one
            free_memory(segmenter.backbone.device)
    summary.seconds = time.perf_counter() - start
    shard_file = out_dir / "shards" / f"shard-{shard[0]:03d}-of-{shard[1]:03d}.json"
    write_json(shard_file, {"shard": list(shard), "fingerprint": fingerprint, "tiles": summary.tiles,
                            "processed": summary.processed, "resumed": summary.resumed,
                            "redone": [list(r) for r in summary.redone],
                            "skipped": [list(s) for s in summary.skipped], "seconds": round(summary.seconds, 3)})
    if summary.skipped:
        log.warning("shard %s: skipped %d: %s", shard, len(summary.skipped),
                    "; ".join(f"{w} ({why})" for w, why in summary.skipped))
    if merge if merge is not None else shard[1] == 1:
        summary.metrics = merge_outputs([out_dir])
    else:
        log.info("shard %d/%d done; combine the shards with `clipseg-lab rs-merge %s`", shard[0], shard[1], out_dir)
    return summary


MERGED_FILES = ("metrics.json", "metrics.csv", "metrics_per_class.csv", "metrics_per_tile.csv", "metrics_per_tile.json")


def _claim_base_dir(config: ZeroShotConfig, fingerprint: str, overwrite: bool) -> None:
    """output.base_dir is this run's (clipseg_lab.ownership): the same settings and inputs resume tile by tile
    (every shard claims the same folder with the same owner file); another run's folder needs `overwrite`, which
    removes only the entries its owner file lists; a folder no clipseg-lab command wrote is refused."""
    out_dir = Path(config.output.base_dir)
    vis = Path(config.output.visualizations_subdir).as_posix().strip("/")
    entries = [RUN_CONFIG, "shards/", f"{vis}/", "cache/", *MERGED_FILES]
    settings = {k: v for k, v in config.to_dict().items() if k != "output"}  # named in a refusal's message
    settings["model"] = {k: v for k, v in settings["model"].items() if k != "device"}  # where it runs is no setting
    try:  # a folder from before owner files: its run_config.json says whether it is this run
        same_settings = json.loads((out_dir / RUN_CONFIG).read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):
        same_settings = False
    ownership = claim(out_dir, "rs-infer", {**settings, "settings": fingerprint}, resume=same_settings,
                      overwrite=overwrite, option="output.base_dir", can_resume=False,
                      legacy=tuple(e.split("/")[0] for e in entries))
    ownership.entries = entries
    ownership.write()


# -- merge ---------------------------------------------------------------------------------------------
def _records(out_dir: Path) -> tuple[dict[str, Any], list[tuple[Path, dict[str, Any]]], list[dict[str, Any]]]:
    """The run's settings, its tile records (with the folder each was found in), its shard reports."""
    run_file = out_dir / RUN_CONFIG
    if not run_file.is_file():
        raise ConfigError(f"{out_dir}: no {RUN_CONFIG}; is this an rs-infer output folder (output.base_dir)?")
    run_info = json.loads(run_file.read_text())
    vis = out_dir / run_info["visualizations_subdir"]
    records = []
    for file in sorted(vis.rglob(TILE_RECORD)) if vis.is_dir() else []:
        record = read_tile_record(file.parent)
        if record is None:
            log.warning("%s: unreadable; left out of the merge", file)
            continue
        record.setdefault("tile", file.parent.relative_to(vis).as_posix())
        records.append((file.parent, record))
    shards = [json.loads(f.read_text()) for f in sorted((out_dir / "shards").glob("shard-*.json"))]
    return run_info, records, shards


def merge_outputs(dirs: Iterable[str | os.PathLike], out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Cumulative metrics over every finished tile of the output folder(s): the sum of the per-tile confusion
    matrices. Writes `metrics.json`, `metrics.csv`, `metrics_per_class.csv`, `metrics_per_tile.csv` and
    `metrics_per_tile.json` into `out` (default: the first folder) and returns the metrics dict."""
    import pandas as pd

    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ConfigError("rs-merge needs at least one output folder")
    out = Path(out) if out is not None else dirs[0]
    infos, tiles, shards = [], {}, []
    stale: list[str] = []
    incomplete: dict[str, str] = {}  # tile -> why its record does not count (outputs missing, old format)
    for d in dirs:
        run_info, records, shard_files = _records(d)
        infos.append(run_info)
        shards += shard_files
        for tile_dir, rec in records:
            if rec.get("fingerprint") != run_info["fingerprint"]:
                stale.append(rec["tile"])
                continue
            status = record_status(rec, tile_dir)
            if status is not None:
                incomplete[rec["tile"]] = f"{status[0]}: {status[1]} (in {tile_dir})"
                continue
            if rec["tile"] in tiles and tiles[rec["tile"]].get("confusion") != rec.get("confusion"):
                raise ConfigError(f"tile {rec['tile']!r} was segmented twice with different results (in {d}); "
                                  "merge only outputs of one run")
            tiles[rec["tile"]] = rec
    fingerprints = {i["fingerprint"] for i in infos}
    if len(fingerprints) > 1:
        raise ConfigError(f"the folders {[str(d) for d in dirs]} were made with different settings "
                          f"(fingerprints {sorted(fingerprints)}); merge only shards of one run")
    classes = infos[0]["classes"]
    untrained = any(i.get("untrained") for i in infos)
    incomplete = {t: why for t, why in incomplete.items() if t not in tiles}  # finished in another folder
    expected = {t for s in shards for t in s.get("tiles", [])} | set(incomplete)
    missing = sorted(expected - set(tiles) - {w for s in shards for w, _ in s.get("skipped", [])})
    skipped = sorted({tuple(x) for s in shards for x in s.get("skipped", [])})
    total = torch.zeros(len(classes), len(classes), dtype=torch.long)
    labelled = 0
    for rec in tiles.values():
        if rec.get("confusion") is not None:
            total += torch.tensor(rec["confusion"], dtype=torch.long)
            labelled += 1
    overall = tile_metrics(total, classes)
    result = {"oa": overall["oa"] if overall else None, "miou": overall["miou"] if overall else None,
              "mf1": overall["mf1"] if overall else None, "per_class": overall["per_class"] if overall else None,
              "pixels": overall["pixels"] if overall else 0, "classes": classes, "confusion": total.tolist(),
              "tiles": len(tiles), "tiles_with_labels": labelled, "skipped": [list(s) for s in skipped],
              "missing": missing, "incomplete": [[t, incomplete[t]] for t in sorted(incomplete)],
              "stale": sorted(set(stale)), "folders": [str(d) for d in dirs],
              "fingerprint": infos[0]["fingerprint"], "provenance": infos[0].get("provenance"),
              "untrained": untrained}
    if untrained:
        result["note"] = UNTRAINED_NOTE
    if missing:
        log.warning("merge: %d tile(s) of the shards are not finished yet: %s", len(missing), missing[:10])
    for name in sorted(incomplete):
        log.warning("merge: tile %s left out, not finished: %s", name, incomplete[name])
    write_json(out / "metrics.json", result)
    rows = []
    for name in sorted(tiles):
        rec, m = tiles[name], tiles[name].get("metrics") or {}
        row = {"tile": name, "oa": m.get("oa"), "miou": m.get("miou"), "mf1": m.get("mf1"), "pixels": m.get("pixels"),
               "seconds": rec.get("seconds"), "untrained": rec.get("untrained")}
        for cls in classes:
            per = (m.get("per_class") or {}).get(cls, {})
            row[f"iou {cls}"], row[f"f1 {cls}"] = per.get("iou"), per.get("f1")
        rows.append(row)
    write_csv(pd.DataFrame(rows), out / "metrics_per_tile.csv")
    write_json(out / "metrics_per_tile.json", {name: {"metrics": tiles[name].get("metrics"),
                                                      "seconds": tiles[name].get("seconds")} for name in sorted(tiles)})
    per_class = pd.DataFrame([{"class": c, **(overall["per_class"][c] if overall else {})} for c in classes])
    write_csv(per_class, out / "metrics_per_class.csv")
    write_csv(pd.DataFrame([{"tiles": len(tiles), "tiles_with_labels": labelled, "oa": result["oa"],
                              "miou": result["miou"], "mf1": result["mf1"], "pixels": result["pixels"],
                              "skipped": len(skipped), "missing": len(missing), "untrained": untrained}]),
               out / "metrics.csv")
    return result


# -- ablation ------------------------------------------------------------------------------------------
def ablation(segmenter: ZeroShotSegmenter, samples: Sequence[dict], variants: Sequence[str],
             layer_splits: Sequence[Sequence[int]], *, progress: bool = True):
    """mIoU / OA / mF1 of each (dense variant, attention layer split) over labelled samples (dicts with "image",
    "mask", "name"), sharing one backbone and one SAM region cache. Returns a pandas DataFrame."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    settings = [(v, tuple(s)) for v in variants for s in layer_splits]
    for variant, split in tqdm(settings, desc="ablation", disable=not progress):
        seg = segmenter.with_settings(variant=variant, layers=split)
        total = torch.zeros(len(seg.config.classes), len(seg.config.classes), dtype=torch.long)
        seconds = 0.0
        from clipseg_lab.metrics import SegmentationMetrics

        for sample in samples:
            pred = seg.segment(sample["image"], str(sample.get("name")))
            m = SegmentationMetrics(len(seg.config.classes))
            m.update(pred.labels[None], sample["mask"][None])
            total += m.confusion
            seconds += pred.seconds
        metrics = tile_metrics(total, seg.config.classes) or {}
        rows.append({"variant": variant, "layers": "/".join(map(str, split)), "miou": metrics.get("miou"),
                     "oa": metrics.get("oa"), "mf1": metrics.get("mf1"), "seconds": round(seconds, 3)})
    return pd.DataFrame(rows)


__all__ = ["RunSummary", "TilePrediction", "ZeroShotSegmenter", "ablation", "file_fingerprint", "input_fingerprint",
           "merge_outputs", "open_tiles", "parse_shard", "record_status", "run", "shard_tiles", "tile_status"]
