"""The `clipseg-lab` command."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from clipseg_lab.errors import ClipsegLabError


def cmd_segment(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    from clipseg_lab.backbones.loading import check_backbone_name
    from clipseg_lab.backbones.names import TINY_RANDOM
    from clipseg_lab.backbones.tokenizer import check_prompts
    from clipseg_lab.batch import check_out_dir, collect_images, segment_images
    from clipseg_lab.errors import ConfigError
    from clipseg_lab.images import load_rgb
    from clipseg_lab.models.loading import load_default_model
    from clipseg_lab.models.registry import get_preset

    # everything that can be wrong with the arguments fails here, before any weights are loaded
    images = collect_images(args.input)
    check_out_dir(args.out, images, overwrite=args.overwrite)
    check_prompts(args.prompts)
    if len(images) == 1:
        load_rgb(images[0])  # one image: an unreadable one is the command's error
    if args.backbone:
        check_backbone_name(args.backbone)
    if args.model is not None:
        get_preset(args.model)
        if args.checkpoint or args.backbone != TINY_RANDOM:  # it would be ignored: say so instead
            brings = f"--checkpoint {args.checkpoint}" if args.checkpoint else "the released model"
            raise ConfigError(f"--model {args.model}: {brings} brings its own decoder; --model picks the untrained "
                              "smoke model on --backbone tiny-random only. Drop --model")
    model = load_default_model(checkpoint=args.checkpoint, backbone=args.backbone,
                               preset=args.model or "clipseg-rd64", device=args.device)
    prov = model.provenance
    if prov.untrained:
        print(f"warning: {prov.caption()}: untrained weights, the masks show no learned segmentation. "
              "Pass --checkpoint and a real --backbone for real results.", file=sys.stderr)
    result = segment_images(images, args.prompts, model, args.out, threshold=args.threshold,
                            overwrite=args.overwrite, progress=not args.no_progress,
                            report=lambda line: tqdm.write(line, file=sys.stderr))
    print(result.report())
    if not result.succeeded:
        print(f"error: none of the {len(images)} input image(s) could be segmented", file=sys.stderr)
        return 2
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from clipseg_lab.engine import TrainConfig, train
    from clipseg_lab.engine.trainer import TrainingInterrupted

    config = TrainConfig.from_yaml(args.config)
    if args.init_from:
        config.model.init_from = args.init_from
    if args.out:
        config.out_dir = args.out
    if args.device:
        config.device = args.device
    config.resume = config.resume or args.resume
    config.overwrite = config.overwrite or args.overwrite
    try:
        result = train(config)
    except TrainingInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 130
    print(f"{result.stopped}; best epoch {result.best_epoch}: {result.monitor} "
          f"{result.best_metrics.get(result.monitor, float('nan')):.4f}; outputs in {result.out_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    import clipseg_lab as cl
    from clipseg_lab.data.registry import DATASETS, open_dataset
    from clipseg_lab.engine.evaluate import evaluate_model, write_evaluation
    from clipseg_lab.errors import ConfigError
    from clipseg_lab.viz import save_figure
    from clipseg_lab.viz.evaluation import analysis_figures, plot_predictions

    if args.dataset not in DATASETS:  # the unknown-name error (with its suggestion) before any weights load
        open_dataset(args.dataset, args.data, args.split)
    ownership = _claim_out("evaluate", args, ("checkpoint", "dataset", "data", "split", "backbone", "threshold",
                                              "visualize_samples", "limit", "placeholder_images", "data_option"))
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
    ownership.record(*files, *Path(args.out).glob("manifest.json"))  # the figures' manifest, when there are figures
    o = result["overall"]
    scores = (f"IoU_FG {o['iou_fg']:.4f}, mIoU {o['miou']:.4f}, Dice {o['dice']:.4f}, AP {o['ap']:.4f}" if "iou_fg" in o
              else f"pixel accuracy {o['pixel_accuracy']:.4f}, mIoU {o['miou']:.4f}, mean foreground Dice "
                   f"{o['mean_foreground_dice']:.4f}")
    print(f"{result['samples']} samples: {scores}; wrote {', '.join(f.name for f in files)} to {args.out}")
    return 0


def _claim_out(command: str, args: argparse.Namespace, keys: tuple[str, ...]):
    """`--out` for this command's run (clipseg_lab.ownership): the same arguments rewrite their own outputs; another
    run's folder needs --overwrite (which removes only that run's listed files); a foreign folder is refused."""
    from clipseg_lab.ownership import claim

    inputs = {}
    for key in keys:
        value = getattr(args, key)
        is_path = key in ("checkpoint", "data", "image_dir") and value and Path(value).exists()
        inputs[key] = str(Path(value).resolve()) if is_path else value
    return claim(args.out, command, inputs, overwrite=args.overwrite, can_resume=False)


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
    from clipseg_lab.preflight import PreflightError

    try:
        results = run_notebooks(profile=args.profile, only=_notebook_numbers(args.only), device=args.device,
                                run_root=args.run_dir, figures_root=args.figures_dir)
    except PreflightError as exc:  # one line per missing input, then stop: nothing was run
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    failed = [r for r in results if r["status"] != "ok"]
    return 1 if failed else 0


def _notebook_numbers(only: list[str] | None) -> list[str] | None:
    """`--only 00,02 --only 05` as ["00", "02", "05"]; None for all."""
    return [s for part in (only or []) for s in part.split(",") if s] or None


def cmd_doctor(args: argparse.Namespace) -> int:
    from clipseg_lab.doctor import run_doctor

    findings = run_doctor(args.image, allow_download=args.download, sam=not args.no_sam)
    counts = {s: sum(f.status == s for f in findings) for s in ("pass", "fail", "missing", "skip")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0 if not counts["fail"] and not counts["missing"] else 1


def cmd_rehearse(args: argparse.Namespace) -> int:
    from clipseg_lab.rehearsal.run import rehearse, summary_line

    result = rehearse(args.world, keep=args.keep, only=_notebook_numbers(args.only), device=args.device)
    print(result.report())
    print(summary_line(result))
    return 0 if result.ok else 1


def cmd_hypothesis(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from clipseg_lab.stats import HypothesisConfig, run_hypothesis
    from clipseg_lab.stats.report import format_p
    from clipseg_lab.viz.hypothesis import write_report

    distance = int(args.pair_distance) if args.pair_distance.isdigit() else args.pair_distance
    try:
        config = HypothesisConfig(mode=args.mode, pair_distance=distance, neighbourhood=args.neighbourhood,
                                  random_pairs=args.random_pairs, subsample=args.subsample, objects=args.objects,
                                  seed=args.seed, limit=args.limit)
    except ValueError as exc:  # --pair-distance / --subsample that do not parse
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = {"image_dir": args.image_dir} if args.image_dir else {}
    ownership = _claim_out("hypothesis", args, ("dataset", "data", "pair_distance", "subsample", "mode",
                                                "neighbourhood", "random_pairs", "objects", "split", "limit",
                                                "image_dir", "seed"))
    result = run_hypothesis(args.dataset, args.data, config, splits=args.split, **options)
    files = write_report(result, args.out)
    ownership.record(*files.values(), *Path(args.out).glob("manifest.json"))
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
                  progress=not args.no_progress, overwrite=args.overwrite)
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


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def probability(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a probability in [0, 1], e.g. 0.5") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1], e.g. 0.5")
    return value


CHECKPOINT_FORMATS = ("a hub id (e.g. CIDAS/clipseg-rd64-refined), a Hugging Face CLIPSeg "
                      "directory, an original CLIPSeg decoder .pth (rd64-uni.pth, rd64-uni-refined.pth, rd16-uni.pth) "
                      "or a clipseg-lab .safetensors from `clipseg-lab train`")


OVERWRITE_HELP = ("replace another run's outputs in the output folder: only the files its .clipseg-lab-owner.json "
                  "lists are removed, nothing else")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's -v only sets the flag, so `clipseg-lab -v segment` is not undone by its default
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log what is loaded and from where")
    parser = _Parser(prog="clipseg-lab", description="Text-prompted segmentation on a frozen CLIP.")
    parser.add_argument("-v", "--verbose", action="store_true", default=False, help="log what is loaded and from where")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add_parser("segment", help="segment images (a file, a folder or a glob) for one or more text prompts",
                   description="Builds the model once, then writes OUT/<image name>/ for every image: one mask PNG "
                               "per prompt (00_a-cat.png, ...), overlay.png and segment.json (written last); and "
                               "OUT/summary.csv with image, prompt, mean_probability and area_fraction (the mask's "
                               "area at --threshold, or at 0.5 without one). A rerun into the same OUT skips images "
                               "whose outputs are complete for the same prompts, threshold, model and input file, "
                               "and redoes the rest. Unreadable images are reported and skipped.")
    p.add_argument("input", metavar="INPUT",
                   help="an image file (any format Pillow reads), a folder (its image files, not recursive) or a "
                        "quoted glob, e.g. \"photos/*.jpg\"")
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompt(s), e.g. 'a cat'")
    p.add_argument("--checkpoint", default=None,
                   help=f"the model: {CHECKPOINT_FORMATS}. Default: the released CIDAS/clipseg-rd64-refined (from "
                        "$CLIPSEG_LAB_WEIGHTS, the Hugging Face cache, or the hub when online)")
    p.add_argument("--backbone", default=None,
                   help="CLIP backbone (default: the checkpoint's, or ViT-B/16 for the released model): a name, hub "
                        "id, local dir, OpenAI .pt, or tiny-random (an untrained smoke model, with --model)")
    p.add_argument("--model", default=None,
                   help="decoder preset for an untrained smoke model on --backbone tiny-random (default clipseg-rd64; "
                        "see list_models()); checkpoints and the released model bring their own")
    p.add_argument("--out", default="outputs", help="output folder (default outputs/): OUT/<image name>/ per image")
    p.add_argument("--threshold", type=probability, default=None,
                   help="write binary masks (0/255) at this probability in [0, 1] (default: probability masks); "
                        "summary.csv's area_fraction uses it, or 0.5 without one")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty OUT that segment did not write (replaces only segment's own files)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_segment)

    p = add_parser("train", help="train a decoder from a YAML config",
                       description="Writes training_config.json, training_log.csv, checkpoints/, snapshots/ and "
                                   "evaluation_results.json into the config's out_dir, each epoch committed once; "
                                   "Ctrl-C stops after the current step, and the same command resumes.")
    p.add_argument("--config", required=True, help="YAML file (see configs/)")
    p.add_argument("--out", default=None, help="override out_dir")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the config's)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in out_dir with this config (e.g. more epochs); the same command with the "
                        "same config resumes without it")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start the decoder from these weights (sets model.init_from; same forms as evaluate's "
                        "--checkpoint)")
    p.set_defaults(func=cmd_train)

    p = add_parser("evaluate", help="evaluate a model on a dataset split (JSON + CSV, optional figure)")
    p.add_argument("--checkpoint", required=True, help=f"the model: {CHECKPOINT_FORMATS}")
    p.add_argument("--dataset", required=True, help="a dataset name (see `clipseg-lab prepare --help`)")
    p.add_argument("--data", default=None, help="the dataset's folder or annotation file")
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backbone", default=None, help="backbone override (default: the checkpoint's)")
    p.add_argument("--threshold", type=probability, default=0.5,
                   help="mask probability threshold in [0, 1] (default 0.5)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--visualize-samples", type=int, default=0, metavar="N",
                   help="also save, for N samples: image | ground truth | prediction (samples.png), per-class "
                        "confidence heatmaps (confidence.png), error maps (errors.png) and Grad-CAM (gradcam.png)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--placeholder-images", action="store_true", help="RefCOCO without images (smoke only)")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="a dataset loader option (YAML value), repeatable; default: the options the checkpoint was "
                        "trained with when --dataset is its training dataset")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when present)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = add_parser("prepare", help="write a resized, rasterised copy of a dataset (Train/Val/Test)",
                       description="Images at the network and backbone sizes, masks (nearest), samples.csv, manifest.")
    p.add_argument("--dataset", required=True,
                   help="oxford_pet, phrasecut, refcoco, refcoco+, refcocog, potsdam, vaihingen, loveda, "
                        "synthetic_shapes")
    p.add_argument("--data", default=None, help="the dataset's folder (or annotation file for RefCOCO)")
    p.add_argument("--out", required=True, help="output folder (written whole or not at all)")
    p.add_argument("--network-size", type=int, default=512)
    p.add_argument("--backbone-size", type=int, default=352)
    p.add_argument("--limit", type=int, default=None, help="at most this many samples per split")
    p.add_argument("--placeholder-images", action="store_true",
                   help="RefCOCO without COCO images: grey placeholders of the true sizes (smoke runs only)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=cmd_prepare)

    p = add_parser("hypothesis", help="test: do intensities vary less inside objects than across boundaries?",
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
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=cmd_hypothesis)

    p = add_parser("rs-infer", help="training-free segmentation of remote-sensing tiles (ReSeg-CLIP and relatives)",
                       description="Walks every tile of input.dir (<tile>/R_G_B_IR.png + L.png folders, recursively, "
                                   "or mmseg img_dir/ann_dir) and writes output.base_dir/visualizations_subdir/<tile>/"
                                   "{pred_mask,pred_overlay,gt_mask,gt_overlay}.png and tile.json, plus metrics.json "
                                   "and CSVs. Finished tiles are skipped on a rerun. See configs/zeroshot/.")
    p.add_argument("--config", required=True, help="YAML file (configs/zeroshot/*.yaml)")
    p.add_argument("--input", default=None, help="override input.dir")
    p.add_argument("--output", default=None, help="override output.base_dir")
    p.add_argument("--backbone", default=None,
                   help="override the CLIP: a name, hub id, local dir, OpenAI .pt, or tiny-random")
    p.add_argument("--sam", default=None,
                   help="override the SAM: a checkpoint .pth, vit_h / vit_l / vit_b, or tiny-random")
    p.add_argument("--layers", default=None, metavar="N,M,L",
                   help="attention blocks: N unrestricted, M neighbourhood, L SAM-region (must add up to the depth)")
    p.add_argument("--variant", default=None, help="dense features: vanilla, maskclip, sclip, clearclip, naclip")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="take tiles i, i+N, ... (0-based i) of the sorted list; 'auto' reads torchrun's "
                        "RANK/WORLD_SIZE or a Slurm job array. Combine the shards with rs-merge")
    p.add_argument("--limit", type=int, default=None, help="only the first N tiles (sorted by name)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--no-resume", action="store_true", help="segment finished tiles again")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (dotted; the value is read as YAML), e.g. --set sliding.stride=56 "
                        "--set templates=none; repeatable, applied after the options above")
    p.set_defaults(func=cmd_rs_infer)

    p = add_parser("rs-merge", help="combine the metrics of rs-infer shards (sums their confusion matrices)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="rs-infer output folder(s) (output.base_dir)")
    p.add_argument("--out", default=None, help="where metrics.json and the CSVs go (default: the first DIR)")
    p.set_defaults(func=cmd_rs_merge)

    p = add_parser("notebooks", help="run the numbered notebooks headless through papermill",
                       description="Executes notebooks/NN_*.ipynb in order with params/<profile>.yaml.")
    p.add_argument("--profile", default="smoke", choices=["smoke", "full"])
    p.add_argument("--only", action="append", help="notebook numbers, e.g. --only 00,02")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the profile's)")
    p.add_argument("--run-dir", default=None, help="where executed notebooks go (default papermill_runs/<profile>)")
    p.add_argument("--figures-dir", default=None, help="where figures go (default figures/<profile>)")
    p.set_defaults(func=cmd_notebooks)

    p = add_parser("rehearse", help="rehearse the full profile on real-size random weights (about 30 min on 2 cores)",
                   description="Builds a throw-away world (a Hugging Face cache, $CLIPSEG_LAB_WEIGHTS with an OpenAI "
                               ".pt, an original CLIPSeg .pth and SAM checkpoints, all random weights of the real "
                               "architectures in the real layouts; small datasets in the real folder layouts), runs "
                               "every notebook with params/full.yaml + params/rehearsal.yaml, reports times and peak "
                               "memory, and deletes the world unless --keep.")
    p.add_argument("--world", default=None, help="build the world here (kept; default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the temporary world (several GB) for inspection")
    p.add_argument("--only", action="append", help="notebook numbers, e.g. --only 00,09")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(func=cmd_rehearse)

    p = add_parser("doctor", help="check the weights the README names: where each is, and does it compute right",
                   description="One line per file (pass / fail / missing / skip): the CLIPs ViT-B/16 and ViT-L/14, "
                               "the released CIDAS/clipseg-rd64-refined (against transformers' published "
                               "integration-test values on its COCO image) and SAM vit_h / vit_b.")
    p.add_argument("--image", default=None, help="the integration test's image (COCO val2017 000000039769.jpg); "
                                                 "fetched when online and not given")
    p.add_argument("--download", action="store_true", help="download weights that are missing (default: only "
                                                         "look where they should be)")
    p.add_argument("--no-sam", action="store_true", help="skip the SAM checkpoints")
    p.set_defaults(func=cmd_doctor)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's or the environment's problem: one `error:` line, exit 2, no traceback."""
    from clipseg_lab.data.base import DatasetError
    from clipseg_lab.data.masks import MaskError

    return ClipsegLabError, DatasetError, MaskError, OSError  # OSError: FileExistsError, PermissionError, ...


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if getattr(args, "device", None) is not None:  # every subcommand with --device: one check, one message
            from clipseg_lab.devices import check_device

            check_device(args.device)
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        if args.verbose and not isinstance(exc, ClipsegLabError):
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
