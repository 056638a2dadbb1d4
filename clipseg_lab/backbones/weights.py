"""Find CLIP weights on disk (or download them when online), in this order (the README's "Real weights: which,
and where" says the same):

1. an explicit path (a Hugging Face model directory or an OpenAI `.pt` file);
2. `$CLIPSEG_LAB_WEIGHTS`: `<root>/<hub id>`, `<root>/<repo name>` or `<root>/<OpenAI file>`;
3. the local Hugging Face cache, then `~/.cache/clip` (where `clip.load` keeps its downloads);
4. a download from the Hugging Face hub, unless offline (`HF_HUB_OFFLINE=1`) or `allow_download=False`.

Nothing found is one `WeightsNotFoundError` that lists every place looked. Random weights are never a
fallback: they come only from the name `tiny-random`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clipseg_lab.backbones.names import BackboneName, looks_like_path, lookup
from clipseg_lab.errors import WeightsFormatError, WeightsNotFoundError

log = logging.getLogger(__name__)

ENV_WEIGHTS = "CLIPSEG_LAB_WEIGHTS"
OPENAI_CACHE = Path("~/.cache/clip").expanduser()


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a backbone's weights are, and in which format."""

    kind: Literal["hf_dir", "openai_file"]
    path: Path
    name: str  # what the user asked for, kept for provenance


# The rehearsal (`clipseg-lab rehearse`) writes random weights of the real architectures in the real layouts, and
# this marker beside them (in a hub snapshot, or the folder of a .pt / .pth): every loader then labels what it
# loaded as random, so no figure of a rehearsal can pass for a real result.
REHEARSAL_MARKER = "clipseg-lab-rehearsal.json"
REHEARSAL_NOTE = "random weights: rehearsal"


def rehearsal_note(path: str | os.PathLike) -> str | None:
    """`REHEARSAL_NOTE` when the weights at `path` were written by the rehearsal, else None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return REHEARSAL_NOTE if (folder / REHEARSAL_MARKER).is_file() else None


def _hf_cache_dir() -> Path:
    """The hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def classify_path(path: Path) -> ResolvedWeights | None:
    """An existing path as weights, by its shape: a directory with config.json, or a file."""
    if path.is_dir() and (path / "config.json").is_file():
        return ResolvedWeights("hf_dir", path, str(path))
    if path.is_file():
        return ResolvedWeights("openai_file", path, str(path))
    return None


def _candidates_in_root(root: Path, name: str, known: BackboneName | None, hub_id: str | None) -> list[Path]:
    names = [name]
    if known is not None:
        names += [known.hub_id, known.repo_name, known.openai_file]
    if hub_id is not None:
        names += [hub_id, hub_id.split("/", 1)[1]]
    seen: list[Path] = []
    for n in names:
        p = root / n
        if p not in seen:
            seen.append(p)
    return seen


def resolve_weights(name_or_path: str | os.PathLike, *, allow_download: bool = True,
                    what: str = "backbone") -> ResolvedWeights:
    """Locate the weights for a backbone name, hub id or path, or raise `WeightsNotFoundError`.

    `what` names the kind of weights in the error ("backbone", "checkpoint"): the same order serves both.
    """
    text = str(name_or_path)
    looked: list[str] = []

    # 1. an explicit path
    explicit = Path(text).expanduser()
    if explicit.exists():
        found = classify_path(explicit)
        if found is None:  # a directory without config.json
            raise WeightsFormatError(
                f"{explicit}: a directory without config.json. Expected a Hugging Face CLIP model directory "
                "(what CLIPModel.save_pretrained writes: config.json + model.safetensors) or an OpenAI CLIP .pt file."
            )
        return found
    path_like = looks_like_path(text)
    if path_like:
        looked.append(f"the path {explicit} (does not exist)")

    known = lookup(text)
    hub_id = known.hub_id if known else (text if (text.count("/") == 1 and not path_like) else None)

    # 2. $CLIPSEG_LAB_WEIGHTS
    root = os.environ.get(ENV_WEIGHTS)
    if root:
        for candidate in _candidates_in_root(Path(root).expanduser(), text, known, hub_id):
            looked.append(f"${ENV_WEIGHTS}: {candidate}")
            found = classify_path(candidate)
            if found is not None:
                return ResolvedWeights(found.kind, found.path, text)
    else:
        looked.append(f"${ENV_WEIGHTS} (not set)")

    # 3. local caches
    if hub_id is not None:
        looked.append(f"the Hugging Face cache {_hf_cache_dir()} for {hub_id}")
        local = _snapshot(hub_id, local_only=True)
        if local is not None:
            return ResolvedWeights("hf_dir", local, text)
    if known is not None:
        candidate = OPENAI_CACHE / known.openai_file
        looked.append(f"the OpenAI clip cache: {candidate}")
        if candidate.is_file():
            return ResolvedWeights("openai_file", candidate, text)

    # 4. download
    if hub_id is not None:
        if not allow_download:
            looked.append(f"no download of {hub_id} (allow_download=False)")
        elif _offline():
            looked.append(f"no download of {hub_id} (HF_HUB_OFFLINE is set)")
        else:
            failures: list[str] = []
            local = _snapshot(hub_id, local_only=False, failures=failures)
            if local is not None:
                return ResolvedWeights("hf_dir", local, text)
            looked.append(f"a download of {hub_id} from the Hugging Face hub"
                          + (f" (failed: {failures[0]})" if failures else ""))

    how = (f"on a machine with internet run `hf download {hub_id} --local-dir {hub_id.split('/', 1)[1]}` and copy "
           f"that folder to ${ENV_WEIGHTS}/{hub_id}" if hub_id
           else f"pass the path of a Hugging Face {'CLIP' if what == 'backbone' else 'CLIPSeg'} directory or a "
                f"{'OpenAI .pt' if what == 'backbone' else 'checkpoint'} file")
    if known is not None:
        how += f", or put OpenAI's {known.openai_file} (what `clip.load('{known.alias}')` downloads) in ${ENV_WEIGHTS}/"
    raise WeightsNotFoundError(
        f"No weights found for {what} {text!r}. Looked in:\n  - " + "\n  - ".join(looked)
        + f"\nTo fix: {how}. For tests and smoke runs without weights, ask for the backbone 'tiny-random' "
        "(random weights, labelled untrained)."
    )


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")  # PyTorch weights, preferred first (no TF / Flax / ONNX)


def _weights_to_download(hub_id: str) -> str:
    """The one weight format a hub revision has, safetensors first: openai/clip-vit-base-patch16's main revision,
    for one, ships only pytorch_model.bin (read with weights_only=True), so asking for safetensors alone would
    download a config and no weights."""
    import fnmatch

    from huggingface_hub import HfApi

    # model_info: one request, no retry loop (list_repo_files retries a dead network for ~25 s)
    files = [sibling.rfilename for sibling in (HfApi().model_info(hub_id, timeout=10).siblings or [])]
    for pattern in WEIGHT_PATTERNS:
        if any(fnmatch.fnmatch(f, pattern) for f in files):
            return pattern
    raise WeightsNotFoundError(f"the hub repository {hub_id} holds no PyTorch weights (model.safetensors or "
                               f"pytorch_model.bin); its files: {', '.join(sorted(files)[:12])}")


def has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS)


def _snapshot(hub_id: str, *, local_only: bool, failures: list[str] | None = None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        weights = list(WEIGHT_PATTERNS) if local_only else [_weights_to_download(hub_id)]
        path = Path(snapshot_download(hub_id, local_files_only=local_only, cache_dir=_hf_cache_dir(),
                                      allow_patterns=["*.json", "*.txt", *weights]))
    except WeightsNotFoundError:
        raise
    except Exception as exc:  # not cached, offline, unknown repo: all mean "not here"
        log.debug("snapshot_download(%s, local_files_only=%s) failed: %s", hub_id, local_only, exc)
        if failures is not None:
            failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc)
                            else type(exc).__name__)
        return None
    found = classify_path(path)
    if found is None or found.kind != "hf_dir" or not has_weights(path):
        log.debug("%s: the cached snapshot %s holds no weights", hub_id, path)  # e.g. an interrupted download
        return None
    return path
