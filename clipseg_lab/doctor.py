"""`clipseg-lab doctor`: are the weights the README names here, where were they found, and do they compute what
their publishers say they compute?

For each file it prints one line: `pass`, `fail`, `missing` or `skip`, the name, where it was found (an explicit
path, `$CLIPSEG_LAB_WEIGHTS`, the Hugging Face cache) and the check. The checks that exist for them:

- every CLIP: loads, and its text and image embeddings are finite and of the published width;
- the released CLIPSeg (`CIDAS/clipseg-rd64-refined`): transformers' own integration test
  (`tests/models/clipseg/test_modeling_clipseg.py`, `test_inference_image_segmentation`): on COCO val2017 image
  39769 (two cats on a blanket, fetched when online or given with `--image`) and the prompts "a cat", "a remote",
  "a blanket", the logits' top-left 3x3 of the first prompt and the first conditional embedding values;
- SAM: loads strictly into segment-anything's model of its type (there are no published values to compare).

Nothing is downloaded unless `--download` (the weights) is given; the test image is fetched only when online.
Weights the rehearsal wrote (random, marked) are reported as such: their reference check is expected to fail.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# transformers' CLIPSeg integration test (CLIPSegModelIntegrationTest.test_inference_image_segmentation)
REFERENCE_IMAGE_URL = "http://images.cocodataset.org/val2017/000000039769.jpg"
REFERENCE_PROMPTS = ("a cat", "a remote", "a blanket")
REFERENCE_LOGITS = ((-7.4613, -7.4785, -7.3628), (-7.3268, -7.0899, -7.1333), (-6.9838, -6.7900, -6.8913))
REFERENCE_CONDITIONAL = (0.5601, -0.0314, 0.1980)
REFERENCE_ATOL = 1e-2  # the test's own is 1e-3; image resizing backends differ by a few 1e-3 in the logits

CLIPS = ("ViT-B/16", "ViT-L/14")
CHECKPOINT = "CIDAS/clipseg-rd64-refined"
SAMS = ("vit_h", "vit_b")


@dataclass
class Finding:
    status: str  # pass | fail | missing | skip
    name: str
    where: str
    detail: str

    def line(self) -> str:
        return f"{self.status:7s} {self.name}: {self.detail}" + (f" [{self.where}]" if self.where else "")


def _status(exc: Exception) -> str:
    """Not found is `missing`; found but unreadable or of the wrong kind is `fail`."""
    from clipseg_lab.errors import WeightsNotFoundError

    return "missing" if isinstance(exc, WeightsNotFoundError) else "fail"


def _where(path: Path) -> str:
    from clipseg_lab.backbones.weights import ENV_WEIGHTS, _hf_cache_dir

    text = str(path)
    root = os.environ.get(ENV_WEIGHTS)
    if root and text.startswith(str(Path(root).expanduser())):
        return f"${ENV_WEIGHTS}: {path}"
    if text.startswith(str(_hf_cache_dir())):
        return f"Hugging Face cache: {path}"
    return str(path)


def _random_note(path: Path) -> str:
    from clipseg_lab.backbones.weights import rehearsal_note

    note = rehearsal_note(path)
    return f" ({note}: a failing reference check is expected)" if note else ""


def reference_image(path: str | os.PathLike | None):
    """The integration test's image: `path`, else a download when online, else None."""
    from clipseg_lab.images import load_rgb

    if path:
        return load_rgb(path)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    try:
        import io
        import urllib.request

        from PIL import Image

        with urllib.request.urlopen(REFERENCE_IMAGE_URL, timeout=10) as response:
            return load_rgb(Image.open(io.BytesIO(response.read())).convert("RGB"))
    except OSError as exc:
        log.info("reference image not fetched: %s", exc)
        return None


def check_clip(name: str, allow_download: bool) -> Finding:
    from clipseg_lab.backbones.loading import load_backbone
    from clipseg_lab.backbones.weights import resolve_weights
    from clipseg_lab.errors import ClipsegLabError

    try:
        path = resolve_weights(name, allow_download=allow_download).path
        backbone = load_backbone(name, device="cpu", allow_download=allow_download)
    except ClipsegLabError as exc:
        return Finding(_status(exc), name, "", str(exc).splitlines()[0])
    text = backbone.encode_text(["a photo of a cat"])
    pixels = torch.zeros(1, 3, backbone.image_size, backbone.image_size)
    image = backbone.encode_image(pixels, pooled=True).pooled
    ok = bool(torch.isfinite(text).all() and torch.isfinite(image).all()) and text.shape[-1] == backbone.embed_dim
    detail = (f"{backbone.num_layers} blocks, width {backbone.width}, embeddings {backbone.embed_dim}: "
              + ("finite text and image embeddings" if ok else "NON-FINITE or mis-sized embeddings"))
    return Finding("pass" if ok else "fail", name, _where(path), detail + _random_note(path))


def check_clipseg(image, allow_download: bool) -> Finding:
    from clipseg_lab.backbones.weights import resolve_weights
    from clipseg_lab.errors import ClipsegLabError
    from clipseg_lab.models.loading import load_model
    from clipseg_lab.segmenter import Segmenter

    try:
        path = resolve_weights(CHECKPOINT, allow_download=allow_download, what="checkpoint").path
        model = load_model(CHECKPOINT, device="cpu", allow_download=allow_download)
    except ClipsegLabError as exc:
        return Finding(_status(exc), CHECKPOINT, "", str(exc).splitlines()[0])
    if image is None:
        return Finding("skip", CHECKPOINT, _where(path), "loaded; the integration test's image is not here (offline): "
                       f"pass --image with {REFERENCE_IMAGE_URL.rsplit('/', 1)[1]}" + _random_note(path))
    seg = Segmenter(model)
    seg.set_image(image)
    logits = seg.predict_logits(list(REFERENCE_PROMPTS))
    conditional = model.prompt_embeddings(list(REFERENCE_PROMPTS))
    got = logits[0, :3, :3].float()
    logit_error = float((got - torch.tensor(REFERENCE_LOGITS)).abs().max())
    cond_error = float((conditional[0, :3].float().cpu() - torch.tensor(REFERENCE_CONDITIONAL)).abs().max())
    ok = logits.shape[-2:] == (352, 352) and logit_error <= REFERENCE_ATOL and cond_error <= REFERENCE_ATOL
    detail = (f"transformers' integration test: logits max |error| {logit_error:.2e}, conditional embedding "
              f"{cond_error:.2e} (tolerance {REFERENCE_ATOL:g})")
    return Finding("pass" if ok else "fail", CHECKPOINT, _where(path), detail + _random_note(path))


def check_sam(name: str) -> Finding:
    from clipseg_lab.errors import ClipsegLabError
    from clipseg_lab.zeroshot.sam import load_sam, resolve_sam_checkpoint

    try:
        path, _ = resolve_sam_checkpoint(name)
        sam = load_sam(name, device="cpu")
    except ClipsegLabError as exc:
        return Finding(_status(exc), f"SAM {name}", "", str(exc).splitlines()[0])
    params = sum(p.numel() for p in sam.model.parameters())
    return Finding("pass", f"SAM {name}", _where(path),
                   f"loads strictly into segment-anything's {sam.model_type} ({params / 1e6:.1f} M parameters; no "
                   "published reference values to compare)" + _random_note(path))


def run_doctor(image: str | os.PathLike | None = None, *, allow_download: bool = False, sam: bool = True,
               report: Callable[[str], None] = print) -> list[Finding]:
    """Every check, each reported as one line as it finishes; returns the findings."""
    findings: list[Finding] = []

    def add(finding: Finding) -> None:
        findings.append(finding)
        report(finding.line())

    for name in CLIPS:
        add(check_clip(name, allow_download))
    add(check_clipseg(reference_image(image), allow_download))
    if sam:
        for name in SAMS:
            add(check_sam(name))
    return findings
