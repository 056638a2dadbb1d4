"""The `clipseg-lab` command."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from clipseg_lab.errors import ClipsegLabError


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def cmd_segment(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    import clipseg_lab as cl
    from clipseg_lab.files import save_png, write_json
    from clipseg_lab.viz import plot_prompts, save_figure

    image = cl.data.load_rgb(args.image)  # fail on a bad image before loading any weights
    if args.checkpoint:
        model = cl.load_model(args.checkpoint, backbone=args.backbone, device=args.device)
    else:
        model = cl.build_model(args.model, backbone=args.backbone or "ViT-B/16", device=args.device)
    prov = model.provenance
    if prov.untrained:
        print(f"warning: {prov.caption()}: untrained weights, the masks show no learned segmentation. "
              "Pass --checkpoint and a real --backbone for real results.", file=sys.stderr)
    seg = cl.Segmenter(model)
    seg.set_image(image)
    probs = seg.predict(args.prompts)
    out = Path(args.out or Path("outputs") / Path(args.image).stem)
    meta = {"provenance": prov.caption(), "image": str(args.image)}
    files = []
    for i, (prompt, p) in enumerate(zip(args.prompts, probs)):
        values = (p > args.threshold).numpy() * 255 if args.threshold is not None else p.numpy() * 255
        path = out / f"{i:02d}_{_slug(prompt)}.png"
        save_png(Image.fromarray(np.round(values).astype(np.uint8)), path, {**meta, "prompt": prompt})
        files.append(path.name)
    fig = plot_prompts(seg.image, probs, args.prompts, prov, threshold=args.threshold)
    save_figure(fig, out / "overlay.png", provenance=prov, data=str(args.image))
    plt.close(fig)
    write_json(out / "segment.json", {"image": str(args.image), "prompts": args.prompts, "masks": files,
                                      "threshold": args.threshold, "provenance": prov.as_dict()})
    print(f"wrote {len(files)} masks and overlay.png to {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from clipseg_lab.engine import TrainConfig, train

    config = TrainConfig.from_yaml(args.config)
    if args.out:
        config.out_dir = args.out
    if args.device:
        config.device = args.device
    config.resume = config.resume or args.resume
    result = train(config)
    print(f"{result.stopped}; best epoch {result.best_epoch}: {result.monitor} "
          f"{result.best_metrics.get(result.monitor, float('nan')):.4f}; outputs in {result.out_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import clipseg_lab as cl
    from clipseg_lab.data.registry import open_dataset
    from clipseg_lab.engine.evaluate import evaluate_model, plot_predictions, write_evaluation
    from clipseg_lab.viz import save_figure

    model = cl.load_model(args.checkpoint, backbone=args.backbone, device=args.device)
    options = {"images": "placeholder"} if args.placeholder_images else {}
    dataset = open_dataset(args.dataset, args.data, args.split, **options)
    result = evaluate_model(model, dataset, batch_size=args.batch_size, threshold=args.threshold, limit=args.limit)
    files = write_evaluation(result, args.out)
    if model.provenance.untrained:
        print(f"warning: {model.provenance.caption()}", file=sys.stderr)
    if args.visualize_samples:
        fig = plot_predictions(model, dataset, args.visualize_samples, args.threshold)
        files.append(save_figure(fig, Path(args.out) / "samples.png", provenance=model.provenance,
                                 data=f"{args.dataset} {args.split}"))
        plt.close(fig)
    o = result["overall"]
    print(f"{result['samples']} samples: IoU_FG {o['iou_fg']:.4f}, mIoU {o['miou']:.4f}, Dice {o['dice']:.4f}, "
          f"AP {o['ap']:.4f}; wrote {', '.join(f.name for f in files)} to {args.out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from clipseg_lab.data.prepare import prepare_dataset

    options = {"images": "placeholder"} if args.placeholder_images else {}
    manifest = prepare_dataset(args.dataset, args.data, args.out, network_size=args.network_size,
                               backbone_size=args.backbone_size, overwrite=args.overwrite, limit=args.limit, **options)
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['samples']} samples" + (f" ({info['note']})" if "note" in info else ""))
    if manifest["skipped"]:
        print(f"skipped {len(manifest['skipped'])} samples: see {args.out}/manifest.json", file=sys.stderr)
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from clipseg_lab.notebooks import run_notebooks

    only = [s for part in (args.only or []) for s in part.split(",") if s]
    results = run_notebooks(profile=args.profile, only=only or None, device=args.device,
                            run_root=args.run_dir, figures_root=args.figures_dir)
    failed = [r for r in results if r["status"] != "ok"]
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipseg-lab", description="Text-prompted segmentation on a frozen CLIP.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and from where")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment one image for one or more text prompts",
                       description="Writes one mask PNG per prompt, overlay.png and segment.json.")
    p.add_argument("image", help="image file (any format Pillow reads)")
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompt(s), e.g. 'a cat'")
    p.add_argument("--model", default="clipseg-rd64", help="model preset (default clipseg-rd64; see list_models())")
    p.add_argument("--backbone", default=None,
                   help="CLIP backbone: ViT-B/16 (default), a hub id, a local dir, an OpenAI .pt, or tiny-random")
    p.add_argument("--checkpoint", default=None, help="trained decoder checkpoint (.safetensors from clipseg-lab)")
    p.add_argument("--out", default=None, help="output folder (default outputs/<image name>)")
    p.add_argument("--threshold", type=float, default=None, help="write binary masks at this probability")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("train", help="train a decoder from a YAML config",
                       description="Writes training_config.json, training_log.csv, checkpoints/, snapshots/ and "
                                   "evaluation_results.json into the config's out_dir.")
    p.add_argument("--config", required=True, help="YAML file (see configs/)")
    p.add_argument("--out", default=None, help="override out_dir")
    p.add_argument("--device", default=None, help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoints/last.safetensors")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a model on a dataset split (JSON + CSV, optional figure)")
    p.add_argument("--checkpoint", required=True, help="our .safetensors, a CLIPSeg HF dir / hub id, or a .pth")
    p.add_argument("--dataset", required=True, help="a dataset name (see `clipseg-lab prepare --help`)")
    p.add_argument("--data", default=None, help="the dataset's folder or annotation file")
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backbone", default=None, help="backbone override (default: the checkpoint's)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--visualize-samples", type=int, default=0, metavar="N",
                   help="also save image | ground truth | prediction for N samples")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--placeholder-images", action="store_true", help="RefCOCO without images (smoke only)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("prepare", help="write a resized, rasterised copy of a dataset (Train/Val/Test)",
                       description="Images at the network and backbone sizes, masks (nearest), samples.csv, manifest.")
    p.add_argument("--dataset", required=True,
                   help="oxford_pet, phrasecut, refcoco, refcoco+, refcocog, potsdam, vaihingen, loveda, synthetic_shapes")
    p.add_argument("--data", default=None, help="the dataset's folder (or annotation file for RefCOCO)")
    p.add_argument("--out", required=True, help="output folder (written whole or not at all)")
    p.add_argument("--network-size", type=int, default=512)
    p.add_argument("--backbone-size", type=int, default=352)
    p.add_argument("--limit", type=int, default=None, help="at most this many samples per split")
    p.add_argument("--placeholder-images", action="store_true",
                   help="RefCOCO without COCO images: grey placeholders of the true sizes (smoke runs only)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("notebooks", help="run the numbered notebooks headless through papermill",
                       description="Executes notebooks/NN_*.ipynb in order with params/<profile>.yaml.")
    p.add_argument("--profile", default="smoke", choices=["smoke", "full"])
    p.add_argument("--only", action="append", help="notebook numbers, e.g. --only 00,02")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the profile's)")
    p.add_argument("--run-dir", default=None, help="where executed notebooks go (default papermill_runs/<profile>)")
    p.add_argument("--figures-dir", default=None, help="where figures go (default figures/<profile>)")
    p.set_defaults(func=cmd_notebooks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except ClipsegLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
