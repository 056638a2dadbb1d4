"""One image, K prompts: our Segmenter vs transformers' CLIPSeg called the usual way, same random weights.

transformers' usual call repeats the image per prompt (`images=[image] * K`), so its CLIP image tower runs K
times; ours runs it once (and only up to the deepest layer the decoder reads), encodes the K prompts as one
batch, and broadcasts the image's reduced activations over the prompts in the decoder.

    python benchmarks/bench_multi_prompt.py            # ViT-B/16-sized CLIPSeg at 352 px, CPU
    python benchmarks/bench_multi_prompt.py --tiny     # a seconds-long smoke version (used by the tests)

Prints per K: both times, the ratio, the max |logit difference|; and the peak memory at the largest K,
each side measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = ["a cat", "a dog", "a wooden door", "the sky", "grass", "a red car", "a person on the left", "a tree",
           "the road", "a window", "a bicycle", "a chair", "water", "a building", "a bird", "a lamp", "a book",
           "the floor", "a cup", "a plant on the right"]


def build_reference(tiny: bool):
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    if tiny:
        config = CLIPSegConfig(
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=12, num_attention_heads=4),
            vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=12, num_attention_heads=4,
                               patch_size=16),
            projection_dim=64)
    else:  # ViT-B/16-sized: the default CLIPSegConfig is ViT-B/32-sized, which is not what CLIPSeg ships
        config = CLIPSegConfig(vision_config=dict(patch_size=16))
    torch.manual_seed(0)
    return CLIPSegForImageSegmentation(config).eval()


def load_pair(tiny: bool, folder: Path):
    """transformers' model and ours, from the same weights on disk."""
    import clipseg_lab as cl

    reference = build_reference(tiny)
    reference.save_pretrained(folder)
    ours = cl.load_model(folder, device="cpu")
    return reference, ours


def run_reference(reference, pixels, prompts):
    from clipseg_lab.backbones.tokenizer import tokenize

    ids = tokenize(prompts)
    ids = ids[:, : int(ids.argmax(1).max()) + 1]  # as the processor's padding=True: pad to the longest prompt
    with torch.inference_mode():
        return reference(input_ids=ids, pixel_values=pixels.repeat(len(prompts), 1, 1, 1)).logits


def run_ours(ours, image, prompts):
    import clipseg_lab as cl

    seg = cl.Segmenter(ours)
    seg.set_image(image)
    return seg.predict_logits(prompts)


def peak_memory(which: str, tiny: bool, k: int) -> float:
    """MiB of resident memory above the loaded models, at the peak of one K-prompt call (sampled every ms)."""
    import threading

    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        reference, ours = load_pair(tiny, Path(tmp))
        image, pixels = _inputs(ours)
        process, peak, done = psutil.Process(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.001)

        base = process.memory_info().rss
        thread = threading.Thread(target=sample)
        thread.start()
        if which == "ours":
            run_ours(ours, image, PROMPTS[:k])
        else:
            run_reference(reference, pixels, PROMPTS[:k])
        done.set()
        thread.join()
        return (peak[0] - base) / 2**20


def _inputs(ours):
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (352, 352, 3), dtype=np.uint8)
    pixels = ours.preprocess(image)  # the same normalised 352 px pixels for both sides
    return image, pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small random CLIPSeg: a smoke run in seconds")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--memory", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.memory:  # child process for the memory measurement
        print(json.dumps({"mib": peak_memory(args.memory, args.tiny, max(args.ks))}))
        return

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference, ours = load_pair(args.tiny, Path(tmp))
        image, pixels = _inputs(ours)
        run_reference(reference, pixels, PROMPTS[:1]), run_ours(ours, image, PROMPTS[:1])  # warm-up
        size = "tiny" if args.tiny else "ViT-B/16-sized"
        print(f"CLIPSeg ({size}, random weights), one 352x352 image, CPU, {torch.get_num_threads()} threads, one run")
        print(f"{'K':>3} {'transformers s':>15} {'ours s':>8} {'speed-up':>9} {'max |diff|':>11}")
        for k in args.ks:
            prompts = PROMPTS[:k]
            t0 = time.perf_counter()
            expected = run_reference(reference, pixels, prompts)
            t1 = time.perf_counter()
            got = run_ours(ours, image, prompts)
            t2 = time.perf_counter()
            diff = (got - expected).abs().max().item()
            rows.append(dict(k=k, reference_s=t1 - t0, ours_s=t2 - t1, ratio=(t1 - t0) / (t2 - t1), max_abs_diff=diff))
            print(f"{k:>3} {t1 - t0:>15.3f} {t2 - t1:>8.3f} {rows[-1]['ratio']:>8.1f}x {diff:>11.2e}", flush=True)
    k = max(args.ks)
    memory = {}
    for which in ("reference", "ours"):
        cmd = [sys.executable, __file__, "--memory", which, "--ks", str(k)] + (["--tiny"] if args.tiny else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        memory[which] = json.loads(out)["mib"]
    print(f"peak memory above the loaded model at K={k}: transformers {memory['reference']:.0f} MiB, "
          f"ours {memory['ours']:.0f} MiB ({memory['reference'] / max(memory['ours'], 1):.1f}x less)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "peak_memory_mib": memory, "k_memory": k}, indent=2))


if __name__ == "__main__":
    main()
