"""The full profile, rehearsed (`make rehearsal`): every notebook with params/full.yaml + params/rehearsal.yaml, on
real-size random weights in the real on-disk layouts and small datasets in the real folder layouts.

One module-scoped run; the checks read what it left. The world is deleted at the end (it holds several GB).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
import torch

from clipseg_lab.notebooks import find_repo_root, numbered_notebooks

pytestmark = [pytest.mark.rehearsal, pytest.mark.timeout(3600)]

ROOT = find_repo_root()
BUDGET_S = 35 * 60  # the rehearsal's budget on 2 CPU cores (the CI run, .ci/run, has 75 minutes in all)
ARCHITECTURES = ("ViT-B/16", "ViT-L/14", "clip-vit-base-patch16", "clip-vit-large-patch14", "clipseg-rd64-refined")


@pytest.fixture(scope="module")
def rehearsal():
    from huggingface_hub import constants

    from clipseg_lab.rehearsal.run import Rehearsal, rehearse, summary_line

    # CLIPSEG_LAB_REHEARSAL_DIR (+ _KEEP): build in and keep a given folder; + _REUSE: check its finished run again
    world = Path(os.environ.get("CLIPSEG_LAB_REHEARSAL_DIR") or tempfile.mkdtemp(prefix="clipseg-lab-rehearsal-"))
    saved_cache = constants.HF_HUB_CACHE
    try:
        reuse = os.environ.get("CLIPSEG_LAB_REHEARSAL_REUSE") and (world / "rehearsal.json").is_file()
        result = Rehearsal.load(world) if reuse else rehearse(world, root=ROOT)
        os.environ.update(result.environment())
        print("\n" + result.report() + "\n" + summary_line(result))
        constants.HF_HUB_CACHE = str(world / "hf_home" / "hub")  # for the checks that read the world's cache here
        yield result
    finally:
        constants.HF_HUB_CACHE = saved_cache
        if not os.environ.get("CLIPSEG_LAB_REHEARSAL_KEEP"):
            shutil.rmtree(world, ignore_errors=True)


def test_every_notebook_runs_in_the_rehearsed_full_profile(rehearsal):
    books = {b.name for b in numbered_notebooks(ROOT)}
    records = {r["notebook"]: r for r in rehearsal.records}
    assert set(records) == books, f"not run: {sorted(books - set(records))}"
    failed = {name: r.get("error") for name, r in records.items() if r["status"] != "ok"}
    assert not failed, failed


def test_the_rehearsal_fits_its_budget(rehearsal):
    total = rehearsal.seconds.get("world", 0) + rehearsal.seconds.get("notebooks", 0)
    assert total < BUDGET_S, f"the rehearsal took {total:.0f} s"


def test_every_figure_names_a_real_architecture_with_random_weights(rehearsal):
    figures = json.loads((rehearsal.figures / "manifest.json").read_text())
    assert figures
    for name, record in figures.items():
        provenance = record.get("provenance")
        if not provenance:  # a figure of data only (01's samples, 08's distributions)
            continue
        assert record["untrained"], f"{name}: a rehearsal figure must say its weights are random"
        assert "tiny-random" not in json.dumps(provenance), f"{name}: made with tiny-random"
        assert "random weights: rehearsal" in record["caption"], f"{name}: {record['caption']}"


def test_weights_were_found_where_the_readme_says(rehearsal):
    """The hub cache and $CLIPSEG_LAB_WEIGHTS, never tiny-random and never a download."""
    world = str(rehearsal.world)
    for book in numbered_notebooks(ROOT):
        executed = nbformat.read(str(rehearsal.runs / book.name), as_version=4)
        text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                         for o in c.get("outputs", []))
        assert "huggingface.co" not in text, f"{book.name} reached for the hub"
    figures = json.loads((rehearsal.figures / "manifest.json").read_text())
    sources = {r["provenance"]["backbone_source"] for r in figures.values() if r.get("provenance")}
    for source in sources:
        for part in source.split("; "):
            part = part.split(": ", 1)[-1]
            if part != "-":  # "-": a model without CLIP (the plain UNet)
                assert part.startswith(world), f"weights from outside the rehearsal's world: {part}"


def test_notebook_00_matches_transformers_on_the_same_cache(rehearsal):
    """The released checkpoint's path end to end: our Segmenter vs CLIPSegProcessor + CLIPSegForImageSegmentation
    from the same cache directory, on the same raw photo (notebook 00's)."""
    from skimage import data
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    import clipseg_lab as cl
    from clipseg_lab.backbones.weights import resolve_weights

    executed = nbformat.read(str(rehearsal.runs / "00_quickstart.ipynb"), as_version=4)
    params = json.loads(json.dumps(next(r for r in rehearsal.records if r["notebook"].startswith("00"))["parameters"]))
    prompts, checkpoint = params["prompts"], params["checkpoint"]
    assert executed.cells and checkpoint == "CIDAS/clipseg-rd64-refined"
    snapshot = resolve_weights(checkpoint, allow_download=False, what="checkpoint").path
    assert str(snapshot).startswith(str(rehearsal.world / "hf_home")), snapshot
    photo = data.chelsea()
    model = cl.models.load_default_model(checkpoint, device="cpu")
    seg = cl.Segmenter(model)
    seg.set_image(photo)
    ours = seg.predict_logits(prompts).sigmoid()
    processor = CLIPSegProcessor.from_pretrained(snapshot, backend="torchvision")
    reference = CLIPSegForImageSegmentation.from_pretrained(snapshot).eval()
    inputs = processor(text=prompts, images=[photo] * len(prompts), padding="max_length", return_tensors="pt")
    with torch.inference_mode():
        theirs = reference(**inputs).logits.sigmoid()
    assert (ours - theirs).abs().max() <= 1e-4


def test_checkpoints_published_by_02_and_03_are_the_ones_07_loads(rehearsal):
    manifest = json.loads((rehearsal.runs / "checkpoints" / "manifest.json").read_text())
    params = next(r for r in rehearsal.records if r["notebook"].startswith("07"))["parameters"]
    used = [*params["model_checkpoints"].values(), *params["loss_checkpoints"].values()]
    for name in used:
        assert name in manifest, f"07 uses {name}, which nobody published"
        assert manifest[name]["notebook"] in ("02_model_variants", "03_loss_comparison"), (name, manifest[name])
