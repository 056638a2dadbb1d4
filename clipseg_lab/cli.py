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

    import yaml

    import clipseg_lab as cl
    from clipseg_lab.data.registry import open_dataset
    from clipseg_lab.engine.evaluate import analysis_figures, evaluate_model, plot_predictions, write_evaluation
    from clipseg_lab.errors import ConfigError
    from clipseg_lab.viz import save_figure

    model = cl.load_model(args.checkpoint, backbone=args.backbone, device=args.device)
    # the loader options the checkpoint was trained with (e.g. SyntheticShapes' mode), for the same dataset
    trained_on = (model.provenance.extra.get("config") or {}).get("data") or {}
    options = dict(trained_on.get("options") or {}) if trained_on.get("dataset") == args.dataset else {}
    if args.placeholder_images:
        options["images"] = "placeholder"
    for item in args.data_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--data-option {item!r}: expected KEY=VALUE, e.g. target=species")
        options[key] = yaml.safe_load(value)
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
        for stem, fig in analysis_figures(model, dataset, args.visualize_samples, args.threshold).items():
            files.append(save_figure(fig, Path(args.out) / f"{stem}.png", provenance=model.provenance,
                                     data=f"{args.dataset} {args.split}"))
            plt.close(fig)
    o = result["overall"]
    scores = (f"IoU_FG {o['iou_fg']:.4f}, mIoU {o['miou']:.4f}, Dice {o['dice']:.4f}, AP {o['ap']:.4f}" if "iou_fg" in o
              else f"pixel accuracy {o['pixel_accuracy']:.4f}, mIoU {o['miou']:.4f}, mean foreground Dice "
                   f"{o['mean_foreground_dice']:.4f}")
    print(f"{result['samples']} samples: {scores}; wrote {', '.join(f.name for f in files)} to {args.out}")
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


def cmd_hypothesis(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from clipseg_lab.stats import HypothesisConfig, run_hypothesis
    from clipseg_lab.stats.report import format_p, write_report

    distance = int(args.pair_distance) if args.pair_distance.isdigit() else args.pair_distance
    try:
        config = HypothesisConfig(mode=args.mode, pair_distance=distance, neighbourhood=args.neighbourhood,
                                  random_pairs=args.random_pairs, subsample=args.subsample, objects=args.objects,
                                  seed=args.seed, limit=args.limit)
    except ValueError as exc:  # --pair-distance / --subsample that do not parse
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = {"image_dir": args.image_dir} if args.image_dir else {}
    result = run_hypothesis(args.dataset, args.data, config, splits=args.split, **options)
    files = write_report(result, args.out)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.skipped:
        print(f"skipped {len(result.skipped)} image(s), listed in {files['skipped_csv']}:", file=sys.stderr)
        reasons: dict[str, list[str]] = {}
        for s in result.skipped:
            reasons.setdefault(s["reason"], []).append(s["name"])
        for reason, names in reasons.items():
            print(f"  {len(names)} x {reason} (e.g. {names[0]})", file=sys.stderr)
    for row in result.rows:
        print(f"{row['dataset']} {row['split']}: {row['images']} images, d={row['pair_distance']}, n_A={row['n_A']}, "
              f"n_B={row['n_B']}, mean A {row['mean_A']:.2f} vs B {row['mean_B']:.2f}, Welch t={row['welch_t']:.2f} "
              f"(dof {row['dof']:.0f}), {format_p(row['p_value'])}, g={row['hedges_g']:.3f}, "
              f"{format_p(row['image_p_two_sided'], 'per-image p')}\n  subsampled: {row['verdict_subsample']}")
    print(f"wrote {', '.join(p.name for p in files.values())} to {args.out}")
    if not result.rows:
        print(f"error: no usable image in {args.dataset} at {args.data}; nothing was tested", file=sys.stderr)
        return 1
    return 0


def cmd_rs_infer(args: argparse.Namespace) -> int:
    from clipseg_lab.zeroshot.config import parse_assignments, prepare_config
    from clipseg_lab.zeroshot.pipeline import parse_shard, run

    config = prepare_config(args.config, input_dir=args.input, output_dir=args.output, backbone=args.backbone,
                            sam=args.sam, layers=args.layers, variant=args.variant, device=args.device,
                            overrides=parse_assignments(args.set))
    summary = run(config, shard=parse_shard(args.shard), resume=not args.no_resume, limit=args.limit,
                  progress=not args.no_progress)
    print(summary.report())
    where = config.output.base_dir
    print(f"outputs in {where}/{config.output.visualizations_subdir}/<tile>/"
          + ("" if summary.metrics is not None else f"; combine the shards with: clipseg-lab rs-merge {where}"))
    return 1 if summary.skipped and not (summary.processed or summary.resumed) else 0


def cmd_rs_merge(args: argparse.Namespace) -> int:
    from clipseg_lab.zeroshot.pipeline import UNTRAINED_NOTE, merge_outputs

    result = merge_outputs(args.dirs, args.out)
    out = args.out or args.dirs[0]
    if result["oa"] is not None:
        print(f"{result['tiles']} tiles ({result['tiles_with_labels']} labelled): OA {result['oa']:.4f}, "
              f"mIoU {result['miou']:.4f}, mF1 {result['mf1']:.4f}; wrote metrics.json and CSVs to {out}")
    else:
        print(f"{result['tiles']} tiles, none labelled; wrote metrics.json to {out}")
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])}: " + "; ".join(f"{w} ({why})" for w, why in result["skipped"]))
    if result["missing"]:
        print(f"not finished yet: {len(result['missing'])} tile(s), e.g. {result['missing'][:3]}", file=sys.stderr)
    if result["untrained"]:
        print(f"warning: {UNTRAINED_NOTE}", file=sys.stderr)
    return 0


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
                   help="also save, for N samples: image | ground truth | prediction (samples.png), per-class "
                        "confidence heatmaps (confidence.png), error maps (errors.png) and Grad-CAM (gradcam.png)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--placeholder-images", action="store_true", help="RefCOCO without images (smoke only)")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="a dataset loader option (YAML value), repeatable; default: the options the checkpoint was "
                        "trained with when --dataset is its training dataset")
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

    p = sub.add_parser("hypothesis", help="test: do intensities vary less inside objects than across boundaries?",
                       description="Two populations of grayscale (ITU-R 601-2 luma) differences |I(p) - I(q)|: A, "
                                   "pairs inside one object; B, pairs across objects (ignored pixels excluded). "
                                   "Welch's t (dof, p, CI, Hedges' g), Mann-Whitney U, a per-image paired test and "
                                   "subsampled tests, per dataset split. Writes hypothesis.json, hypothesis.csv, "
                                   "hypothesis_images.csv, hypothesis_skipped.csv and hypothesis_distributions.png.")
    p.add_argument("--dataset", required=True,
                   help="oxford_pet, potsdam, vaihingen, loveda, cityscapes, pennfudan, refcoco, phrasecut, ...")
    p.add_argument("--data", required=True, help="the dataset's folder (or annotation file for RefCOCO)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pair-distance", default="auto",
                   help="pixels between the two pixels of a pair, or 'auto' (default): spans the ignore band "
                        "(e.g. the Pet trimap boundary), 1 where labels touch")
    p.add_argument("--subsample", default="random:10000",
                   help="pairs the subsampled tests use: random:N (or just N; default random:10000), every:K, "
                        "or none")
    p.add_argument("--mode", default="neighbours", choices=["neighbours", "random"],
                   help="neighbouring pairs at the pair distance, or random pairs at any distance")
    p.add_argument("--neighbourhood", type=int, default=4, choices=[4, 8])
    p.add_argument("--random-pairs", type=int, default=10_000, help="mode random: pairs per image and population")
    p.add_argument("--objects", default="labels", choices=["labels", "components"],
                   help="an object is a label value, or a connected component of one")
    p.add_argument("--split", action="append", default=None, help="split(s) to test (default: every split)")
    p.add_argument("--limit", type=int, default=None, help="at most N images per split")
    p.add_argument("--image-dir", default=None, help="RefCOCO / PhraseCut images folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_hypothesis)

    p = sub.add_parser("rs-infer", help="training-free segmentation of remote-sensing tiles (ReSeg-CLIP and relatives)",
                       description="Walks every tile of input.dir (<tile>/R_G_B_IR.png + L.png folders, recursively, "
                                   "or mmseg img_dir/ann_dir) and writes output.base_dir/visualizations_subdir/<tile>/"
                                   "{pred_mask,pred_overlay,gt_mask,gt_overlay}.png and tile.json, plus metrics.json "
                                   "and CSVs. Finished tiles are skipped on a rerun. See configs/zeroshot/.")
    p.add_argument("--config", required=True, help="YAML file (configs/zeroshot/*.yaml)")
    p.add_argument("--input", default=None, help="override input.dir")
    p.add_argument("--output", default=None, help="override output.base_dir")
    p.add_argument("--backbone", default=None, help="override the CLIP: a name, hub id, local dir, OpenAI .pt, or tiny-random")
    p.add_argument("--sam", default=None, help="override the SAM: a checkpoint .pth, vit_h / vit_l / vit_b, or tiny-random")
    p.add_argument("--layers", default=None, metavar="N,M,L",
                   help="attention blocks: N unrestricted, M neighbourhood, L SAM-region (must add up to the depth)")
    p.add_argument("--variant", default=None, help="dense features: vanilla, maskclip, sclip, clearclip, naclip")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="take tiles i, i+N, ... (0-based i) of the sorted list; 'auto' reads torchrun's RANK/WORLD_SIZE "
                        "or a Slurm job array. Combine the shards with rs-merge")
    p.add_argument("--limit", type=int, default=None, help="only the first N tiles (sorted by name)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--no-resume", action="store_true", help="segment finished tiles again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (dotted; the value is read as YAML), e.g. --set sliding.stride=56 "
                        "--set templates=none; repeatable, applied after the options above")
    p.set_defaults(func=cmd_rs_infer)

    p = sub.add_parser("rs-merge", help="combine the metrics of rs-infer shards (sums their confusion matrices)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="rs-infer output folder(s) (output.base_dir)")
    p.add_argument("--out", default=None, help="where metrics.json and the CSVs go (default: the first DIR)")
    p.set_defaults(func=cmd_rs_merge)

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
