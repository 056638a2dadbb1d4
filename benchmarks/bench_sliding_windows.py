"""Sliding-window inference over one 512x512 tile: windows batched vs one window at a time, and the SAM cache.

The reference is the straightforward loop (ReSeg-CLIP's seed ran one crop per forward pass): the same
`ZeroShotSegmenter` with `sliding.batch_size: 1`. Ours batches the windows (`batch_size: 16`: all 9 windows of a
448 px tile in one pass). Both run the full ReSeg-CLIP block plan (unrestricted, neighbourhood and SAM-region
blocks; per-window attention masks), SegEarth-OV's geometry (short side 448, window 224, stride 112), on the shared
Potsdam tile when it is there (else a seeded random tile), with randomly initialised weights (none can be
downloaded here), so the numbers are speed only.

    python benchmarks/bench_sliding_windows.py            # ViT-B/16-sized CLIP (768 wide, 12 blocks), CPU
    python benchmarks/bench_sliding_windows.py --tiny     # tiny-random only: a seconds-long smoke run (tests)
    python benchmarks/bench_sliding_windows.py --device cuda

Prints, per backbone: both times, the speed-up, the max |logit difference| and the image tower's achieved GFLOP/s
(batching can only gain what one window at a time leaves of the machine's peak); the SAM regions computed once and
then served from the cache (computed / cache hits, seconds with and without SAM); seconds per 512x512 tile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TILE = Path(os.environ.get("CLIPSEG_LAB_SAMPLES", REPO.parent / "shared" / "data")) / "remote_sensing" / "potsdam" / \
    "img_dir" / "2_10_0_0_512_512.png"
SMALL_SAM = [{"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}]


def vit_b16_sized(device: str):
    """A CLIP of ViT-B/16's size (vision 768 wide, 12 blocks, 12 heads, patch 16; text 512 wide) with seeded
    random weights, wrapped like a loaded backbone and labelled untrained."""
    from transformers import CLIPConfig, CLIPModel

    from clipseg_lab.backbones.clip_backbone import ClipBackbone

    config = CLIPConfig(projection_dim=512, vision_config=dict(hidden_size=768, intermediate_size=3072,
                                                               num_hidden_layers=12, num_attention_heads=12,
                                                               image_size=224, patch_size=16, hidden_act="quick_gelu"),
                        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                         num_attention_heads=8, hidden_act="quick_gelu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config)
    backbone = ClipBackbone(model, name="ViT-B/16-sized random", source="random init, seed 0", trained=False)
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    return backbone.to(device=device, dtype=dtype)


def load_tile() -> tuple[torch.Tensor, str]:
    if TILE.is_file():
        from PIL import Image

        return torch.from_numpy(np.array(Image.open(TILE).convert("RGB"))).permute(2, 0, 1).contiguous(), TILE.name
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 255, (3, 512, 512), dtype=np.uint8)), "random 512x512"


def segmenters(backbone, device: str, sam=None):
    from clipseg_lab.zeroshot.config import prepare_config
    from clipseg_lab.zeroshot.pipeline import ZeroShotSegmenter

    base = prepare_config(REPO / "configs" / "zeroshot" / "potsdam.yaml", backbone=backbone.name, sam="tiny-random",
                          layers=(backbone.num_layers - 4, 2, 2), device=device,
                          overrides={"templates": "none", "model.img_size": None,
                                     "attention.sam_param_sets": SMALL_SAM})
    one = ZeroShotSegmenter(prepare_config(base, overrides={"sliding.batch_size": 1}), backbone=backbone, sam=sam)
    batched = ZeroShotSegmenter(prepare_config(base, overrides={"sliding.batch_size": 16}), backbone=backbone,
                                sam=one.sam, regions=one.regions)
    return one, batched


def window_gflop(backbone, size: int = 224) -> float:
    """Floating-point work of the CLIP image tower on one window (multiply-adds x 2): patch embedding, and per
    block the q/k/v/out projections, the MLP and the two attention products. It says how close to the machine's
    peak a time is, i.e. how much batching could still gain."""
    cfg = backbone.clip.config.vision_config
    tokens = 1 + (size // cfg.patch_size) ** 2
    w, mlp = cfg.hidden_size, cfg.intermediate_size
    macs = cfg.num_hidden_layers * (tokens * (4 * w * w + 2 * w * mlp) + 2 * tokens * tokens * w)
    macs += (tokens - 1) * 3 * cfg.patch_size ** 2 * w
    return 2 * macs / 1e9


def timed(fn, repeats: int, device: str) -> tuple[float, object]:
    """Median seconds of `repeats` calls (after one warm-up call), and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_backbone(backbone, image, name: str, device: str, repeats: int, sam=None) -> dict:
    one, batched = segmenters(backbone, device, sam)
    regions = one.regions
    start = time.perf_counter()
    first = batched.segment(image, name)  # SAM runs here, once for this tile
    with_sam = time.perf_counter() - start
    computed_after_first = regions.computed
    t_one, (logits_one, _) = timed(lambda: one.query_logits(image, name), repeats, device)
    t_batched, (logits_batched, _) = timed(lambda: batched.query_logits(image, name), repeats, device)
    t_tile, _ = timed(lambda: batched.segment(image, name), repeats, device)
    diff = (logits_one.float() - logits_batched.float()).abs().max().item()
    windows = len(one.window.boxes(*first.regions.shape[-2:]))
    gflop = windows * window_gflop(backbone, one.img_size)
    return {"backbone": backbone.name, "windows": windows, "gflop": gflop, "gflops_one": gflop / t_one,
            "gflops_batched": gflop / t_batched, "one_s": t_one, "batched_s": t_batched,
            "ratio": t_one / t_batched, "max_abs_diff": diff, "tile_s_first": with_sam, "tile_s": t_tile,
            "sam_computed": regions.computed, "sam_computed_after_first": computed_after_first,
            "sam_cache_hits": regions.hits, "sam": one.sam.label, "_sam": one.sam}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny-random CLIP only: a smoke run in seconds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import clipseg_lab as cl

    image, name = load_tile()
    threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ""
    print(f"one {image.shape[2]}x{image.shape[1]} tile ({name}), short side 448, window 224, stride 112, "
          f"{args.device}{threads}; random weights (speed only), SAM tiny-random {SMALL_SAM[0]}")
    backbones = [cl.load_backbone("tiny-random", device=args.device)]
    if not args.tiny:
        backbones.append(vit_b16_sized(args.device))
    rows, sam = [], None
    print(f"{'backbone':<24} {'windows':>7} {'one at a time s':>16} {'batched s':>10} {'speed-up':>9} "
          f"{'max |diff|':>11} {'GFLOP/s one / batched':>22}")
    for backbone in backbones:
        row = bench_backbone(backbone, image, name, args.device, args.repeats, sam)
        sam = row.pop("_sam")  # one SAM for every backbone
        rows.append(row)
        print(f"{row['backbone']:<24} {row['windows']:>7} {row['one_s']:>16.3f} {row['batched_s']:>10.3f} "
              f"{row['ratio']:>8.2f}x {row['max_abs_diff']:>11.2e} "
              f"{row['gflops_one']:>11.0f} / {row['gflops_batched']:<8.0f}", flush=True)
    print()
    for row in rows:
        print(f"SAM region cache ({row['backbone']}): computed {row['sam_computed']} time(s) for "
              f"{row['sam_computed'] + row['sam_cache_hits']} calls ({row['sam_cache_hits']} cache hits); first call "
              f"with SAM {row['tile_s_first']:.3f} s, then {row['tile_s']:.3f} s")
    for row in rows:
        print(f"{row['backbone']:<24} {row['tile_s']:.3f} s per 512x512 tile (regions cached; "
              f"{row['tile_s_first']:.3f} s with the SAM pass)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "device": args.device, "tile": name,
                                         "max_abs_diff": max(r["max_abs_diff"] for r in rows),
                                         "sam_computed": rows[0]["sam_computed"],
                                         "sam_cache_hits": rows[0]["sam_cache_hits"]}, indent=2))


if __name__ == "__main__":
    main()
