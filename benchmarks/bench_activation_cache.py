"""Decoder training with the activation cache vs recomputing the frozen backbone at every step, same run.

Two epochs of CLIPSeg-rd64 training (BCE, AdamW) on SyntheticShapes at 352 px, batch 8, on a random
ViT-B/16-sized CLIP (or `--tiny`). Epoch 1 fills the cache; from epoch 2 on every image is a hit. Compared
side by side: recomputing the whole backbone at every step (what transformers' CLIPSeg does), our online path
(the backbone stopped at the deepest layer the decoder reads), and the cache. Prints the mean seconds per step
of each epoch, the per-step ratios from epoch 2, the cache's hit rate and size, and the largest difference
between the online and cached losses (the same activations up to the cache's float16 storage).

    python benchmarks/bench_activation_cache.py            # ViT-B/16-sized, CPU: about two minutes
    python benchmarks/bench_activation_cache.py --tiny     # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import CLIPConfig, CLIPModel

import clipseg_lab as cl
from clipseg_lab.backbones import ClipBackbone
from clipseg_lab.data.cache import ActivationCache
from clipseg_lab.data.synthetic import SyntheticShapes
from clipseg_lab.data.transforms import JointTransform


def vit_b16_sized_backbone() -> ClipBackbone:
    torch.manual_seed(0)
    config = CLIPConfig(vision_config=dict(patch_size=16, image_size=224, hidden_size=768, intermediate_size=3072,
                                           num_hidden_layers=12, num_attention_heads=12),
                        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                         num_attention_heads=8, bos_token_id=49406, eos_token_id=49407),
                        projection_dim=512)
    return ClipBackbone(CLIPModel(config), name="random ViT-B/16-sized CLIP", source="random init, seed 0",
                        trained=False)


def train(model, loader, mode: str, epochs: int,
          cache: ActivationCache | None = None) -> tuple[list[float], list[float]]:
    """Mean seconds per step for each epoch, and every step's loss.

    mode "cached": activations from the cache; "online": the backbone run at every step up to the deepest
    layer the decoder reads (this package's online path); "full": the whole backbone at every step, as
    transformers' CLIPSeg runs it (all blocks, pooled output)."""
    torch.manual_seed(0)
    decoder_state = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=1e-3)
    model.train()
    per_epoch, losses = [], []
    for _ in range(epochs):
        times = []
        for batch in loader:
            start = time.perf_counter()
            if mode == "cached":
                activations, grid = cache.encode(batch["image"])
                features = model.features_from_activations(activations, grid)
            elif mode == "online":
                features = model.image_features(model.preprocess(list(batch["image"])))
            else:
                encoding = model.backbone.encode_image(model.preprocess(list(batch["image"])),
                                                       layers=model.decoder.extract_layers, pooled=True)
                features = model.features_from_activations(encoding.activations, encoding.grid)
            logits = model.decode(features, model.prompt_embeddings(list(batch["prompt"])))
            loss = F.binary_cross_entropy_with_logits(logits, batch["mask"].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
        per_epoch.append(sum(times) / len(times))
    model.decoder.load_state_dict(decoder_state)  # the other run starts from the same weights
    return per_epoch, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backbone = cl.load_backbone("tiny-random", device="cpu") if args.tiny else vit_b16_sized_backbone()
    model = cl.build_model("clipseg-rd64", backbone=backbone, dropout=0.0)
    data = SyntheticShapes(num_scenes=args.images // 2, size=352, seed=0, transform=None)
    data.transform = JointTransform(model.input_size)  # deterministic: cacheable
    indices = list(range(min(args.images, len(data))))
    loader = DataLoader(torch.utils.data.Subset(data, indices), batch_size=args.batch, shuffle=False)
    print(f"CLIPSeg-rd64 on {backbone.label}, {model.input_size} px, batch {args.batch}, {len(indices)} images, "
          f"{args.epochs} epochs, CPU {torch.get_num_threads()} threads")
    full, _ = train(model, loader, "full", args.epochs)
    plain, plain_losses = train(model, loader, "online", args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ActivationCache.for_model(model, tmp)
        cached, cached_losses = train(model, loader, "cached", args.epochs, cache)
        report = cache.report()
    print(f"{'epoch':>5} {'full backbone s/step':>21} {'online s/step':>14} {'cached s/step':>14} "
          f"{'ratio vs full':>14} {'ratio vs online':>16}")
    for e, (f, a, b) in enumerate(zip(full, plain, cached), 1):
        print(f"{e:>5} {f:>21.3f} {a:>14.3f} {b:>14.3f} {f / b:>13.1f}x {a / b:>15.1f}x")
    ratio_full = sum(full[1:]) / sum(cached[1:]) if args.epochs > 1 else float("nan")
    ratio = sum(plain[1:]) / sum(cached[1:]) if args.epochs > 1 else float("nan")
    diff = max(abs(a - b) for a, b in zip(plain_losses, cached_losses))
    print(f"per-step speed-up from epoch 2 on: {ratio_full:.1f}x vs recomputing the whole backbone, {ratio:.1f}x vs "
          f"our online path (backbone stopped at the deepest layer read); {report}; "
          f"max |loss difference| cached vs online {diff:.2e}")
    if args.json:
        args.json.write_text(json.dumps({"full": full, "online": plain, "cached": cached,
                                         "ratio_vs_full_from_epoch_2": ratio_full,
                                         "ratio_vs_online_from_epoch_2": ratio,
                                         "hit_rate": cache.stats.hit_rate, "max_loss_diff": diff}, indent=2))


if __name__ == "__main__":
    main()
