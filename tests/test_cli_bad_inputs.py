"""Every subcommand, each kind of bad input: one `error:` line on stderr, a non-zero exit, never a traceback.

Table-driven: each case builds its bad input in a temporary folder and runs the CLI in-process (an exception
that escapes `main` fails the test with its traceback, which is the bug this file guards against)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image

import clipseg_lab as cl
from clipseg_lab.cli import main
from tests.conftest import REPO


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A photo, a folder of photos, good and broken checkpoints, configs: what the cases point at."""
    root = tmp_path_factory.mktemp("bad")
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(root / "photo.png")
    (root / "photos").mkdir()
    Image.fromarray(np.full((40, 50, 3), 60, np.uint8)).save(root / "photos" / "a.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "afile").write_text("a file, not a folder")
    model = cl.build_model("clipseg-rd64", backbone="tiny-random", input_size=64)
    cl.save_model(model, root / "good.safetensors")
    unet = cl.build_model("unet", num_classes=3, use_clip=False)
    cl.save_model(unet, root / "multiclass.safetensors")
    good = (root / "good.safetensors").read_bytes()
    size = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + size])
    for name, meta in (("notjson", "{not json"), ("noconfig", json.dumps({"format": "clipseg_lab.checkpoint/1",
                                                                          "model": "clipseg-rd64"}))):
        h = dict(header, __metadata__={"clipseg_lab": meta})
        text = json.dumps(h).encode()
        (root / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + good[8 + size:])
    (root / "hf").mkdir()  # a Hugging Face folder whose weights file is not one
    (root / "hf" / "config.json").write_text(json.dumps({"model_type": "clipseg"}))
    (root / "hf" / "pytorch_model.bin").write_bytes(b"garbage")
    (root / "empty.yaml").write_text("# nothing yet\n")
    (root / "negative_lr.yaml").write_text("optim:\n  lr: -0.01\n")
    (root / "list.yaml").write_text("- epochs: 2\n")
    (root / "train_into_file.yaml").write_text(f"out_dir: {root / 'afile'}\nepochs: 1\n")
    (root / "not_rs").mkdir()
    return root


SEG = ["segment"]
CASES = {
    # segment
    "segment: missing image": lambda w: [*SEG, str(w / "nope.png"), "a cat", "--backbone", "tiny-random"],
    "segment: a URL": lambda w: [*SEG, "https://example.com/cat.jpg", "a cat", "--backbone", "tiny-random"],
    "segment: unreadable image": lambda w: [*SEG, str(w / "broken.png"), "a cat", "--backbone", "tiny-random",
                                            "--out", str(w / "o1")],
    "segment: --out is a file": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--backbone", "tiny-random",
                                           "--out", str(w / "afile")],
    "segment: --out is the input folder": lambda w: [*SEG, str(w / "photos"), "a cat", "--backbone", "tiny-random",
                                                     "--out", str(w / "photos")],
    "segment: empty prompt": lambda w: [*SEG, str(w / "photo.png"), "", "--backbone", "tiny-random"],
    "segment: threshold above 1": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--threshold", "2"],
    "segment: unknown backbone": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--backbone", "ViT-B/17"],
    "segment: unknown model": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--backbone", "tiny-random",
                                         "--model", "clipseg-rd65"],
    "segment: --model with --checkpoint": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--checkpoint",
                                                     str(w / "good.safetensors"), "--model", "clipseg-rd16"],
    "segment: a multi-class checkpoint": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--checkpoint",
                                                    str(w / "multiclass.safetensors"), "--out", str(w / "o2")],
    "segment: metadata not JSON": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--checkpoint",
                                             str(w / "notjson.safetensors"), "--out", str(w / "o3")],
    "segment: metadata without config": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--checkpoint",
                                                   str(w / "noconfig.safetensors"), "--out", str(w / "o4")],
    "segment: a .bin in a Hugging Face folder": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--checkpoint",
                                                           str(w / "hf"), "--out", str(w / "o5")],
    "segment: missing checkpoint": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--checkpoint",
                                              str(w / "nope.safetensors")],
    "segment: a device this machine lacks": lambda w: [*SEG, str(w / "photo.png"), "a cat", "--device", "cuda:7"],
    # train
    "train: missing config": lambda w: ["train", "--config", str(w / "nope.yaml")],
    "train: empty config": lambda w: ["train", "--config", str(w / "empty.yaml")],
    "train: negative lr": lambda w: ["train", "--config", str(w / "negative_lr.yaml")],
    "train: a list, not a mapping": lambda w: ["train", "--config", str(w / "list.yaml")],
    "train: out_dir is a file": lambda w: ["train", "--config", str(w / "train_into_file.yaml")],
    "train: init-from a missing file": lambda w: ["train", "--config",
                                                  str(REPO / "configs" / "smoke_synthetic_clipseg.yaml"),
                                                  "--init-from", str(w / "nope.safetensors"), "--out", str(w / "t1")],
    # evaluate
    "evaluate: missing checkpoint": lambda w: ["evaluate", "--checkpoint", str(w / "nope.safetensors"), "--dataset",
                                               "synthetic_shapes", "--out", str(w / "e1")],
    "evaluate: unknown dataset": lambda w: ["evaluate", "--checkpoint", str(w / "good.safetensors"), "--dataset",
                                            "synthetic_shape", "--out", str(w / "e2")],
    "evaluate: metadata not JSON": lambda w: ["evaluate", "--checkpoint", str(w / "notjson.safetensors"), "--dataset",
                                              "synthetic_shapes", "--out", str(w / "e3")],
    "evaluate: --out is a file": lambda w: ["evaluate", "--checkpoint", str(w / "good.safetensors"), "--dataset",
                                            "synthetic_shapes", "--out", str(w / "afile")],
    "evaluate: a foreign --out": lambda w: ["evaluate", "--checkpoint", str(w / "good.safetensors"), "--dataset",
                                            "synthetic_shapes", "--out", str(w / "photos")],
    "evaluate: bad --data-option": lambda w: ["evaluate", "--checkpoint", str(w / "good.safetensors"), "--dataset",
                                              "synthetic_shapes", "--out", str(w / "e4"), "--data-option", "size"],
    "evaluate: missing data folder": lambda w: ["evaluate", "--checkpoint", str(w / "good.safetensors"), "--dataset",
                                                "oxford_pet", "--data", str(w / "nope"), "--out", str(w / "e5")],
    # prepare
    "prepare: unknown dataset": lambda w: ["prepare", "--dataset", "oxford_pets", "--out", str(w / "p1")],
    "prepare: missing data folder": lambda w: ["prepare", "--dataset", "oxford_pet", "--data", str(w / "nope"),
                                               "--out", str(w / "p2")],
    "prepare: --out is a file": lambda w: ["prepare", "--dataset", "synthetic_shapes", "--out", str(w / "afile")],
    "prepare: a foreign --out": lambda w: ["prepare", "--dataset", "synthetic_shapes", "--out", str(w / "photos")],
    # hypothesis
    "hypothesis: missing data": lambda w: ["hypothesis", "--dataset", "oxford_pet", "--data", str(w / "nope"),
                                           "--out", str(w / "h1")],
    "hypothesis: unknown dataset": lambda w: ["hypothesis", "--dataset", "oxford_pets", "--data", str(w),
                                              "--out", str(w / "h2")],
    "hypothesis: bad pair distance": lambda w: ["hypothesis", "--dataset", "oxford_pet", "--data", str(w),
                                                "--out", str(w / "h3"), "--pair-distance", "far"],
    "hypothesis: a foreign --out": lambda w: ["hypothesis", "--dataset", "oxford_pet", "--data", str(w),
                                              "--out", str(w / "photos")],
    # rs-infer / rs-merge
    "rs-infer: missing config": lambda w: ["rs-infer", "--config", str(w / "nope.yaml")],
    "rs-infer: empty config": lambda w: ["rs-infer", "--config", str(w / "empty.yaml")],
    "rs-infer: missing input folder": lambda w: ["rs-infer", "--config",
                                                 str(REPO / "configs" / "zeroshot" / "potsdam.yaml"),
                                                 "--input", str(w / "nope"), "--output", str(w / "r1")],
    "rs-infer: bad --set": lambda w: ["rs-infer", "--config", str(REPO / "configs" / "zeroshot" / "potsdam.yaml"),
                                      "--set", "sliding.stride"],
    "rs-infer: bad --shard": lambda w: ["rs-infer", "--config", str(REPO / "configs" / "zeroshot" / "potsdam.yaml"),
                                        "--shard", "3/2"],
    "rs-merge: not an rs-infer folder": lambda w: ["rs-merge", str(w / "not_rs")],
    # notebooks
    "notebooks: unknown profile": lambda w: ["notebooks", "--profile", "nope"],
    "notebooks: unknown notebook": lambda w: ["notebooks", "--only", "99"],
    "notebooks: a foreign run folder": lambda w: ["notebooks", "--only", "00", "--run-dir", str(w / "photos")],
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_error_line(case, world, capsys):
    try:
        code = main(CASES[case](world))
    except SystemExit as exc:  # argparse's usage errors (one line too, see cli._Parser)
        code = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0, (case, err)
    assert "Traceback" not in err and len(errors) == 1, (case, err)
    assert len(errors[0]) > 30, errors  # says what is wrong, not just that something is


def test_nothing_was_written_into_the_foreign_folder(world):
    assert sorted(p.name for p in (world / "photos").iterdir()) == ["a.png"]
    assert (world / "afile").read_text() == "a file, not a folder"
