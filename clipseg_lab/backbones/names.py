"""Names users type for CLIP backbones, and what each one stands for."""

from __future__ import annotations

from dataclasses import dataclass

TINY_RANDOM = "tiny-random"  # the random stand-in models built in code, for tests and smoke runs (CLIP and SAM)
TINY_RANDOM_SEED = 0  # their weights' seed, so every tiny-random model is the same one


@dataclass(frozen=True)
class BackboneName:
    """One well-known CLIP: its short alias, Hugging Face hub id and OpenAI checkpoint file."""

    alias: str  # what `clip.available_models()` calls it
    hub_id: str  # Hugging Face `CLIPModel` repository
    openai_file: str  # file name `clip.load` downloads into ~/.cache/clip

    @property
    def repo_name(self) -> str:
        return self.hub_id.split("/", 1)[1]


KNOWN_BACKBONES: tuple[BackboneName, ...] = (
    BackboneName("ViT-B/32", "openai/clip-vit-base-patch32", "ViT-B-32.pt"),
    BackboneName("ViT-B/16", "openai/clip-vit-base-patch16", "ViT-B-16.pt"),
    BackboneName("ViT-L/14", "openai/clip-vit-large-patch14", "ViT-L-14.pt"),
    BackboneName("ViT-L/14@336px", "openai/clip-vit-large-patch14-336", "ViT-L-14-336px.pt"),
)


def lookup(name: str) -> BackboneName | None:
    """The known backbone for an alias, hub id or OpenAI file name (case-insensitive), else None."""
    key = name.strip().lower()
    for known in KNOWN_BACKBONES:
        if key in (known.alias.lower(), known.hub_id.lower(), known.openai_file.lower(), known.repo_name.lower()):
            return known
    return None


def known_names() -> list[str]:
    """Every name `load_backbone` accepts without a path, for error messages and `--help`."""
    return [TINY_RANDOM] + [f"{k.alias} (= {k.hub_id})" for k in KNOWN_BACKBONES]


def looks_like_path(text: str) -> bool:
    """A weights file name or a relative / absolute path, rather than an alias or a hub id."""
    return text.endswith((".pt", ".pth", ".bin", ".safetensors")) or text.startswith((".", "/", "~"))


def closest_name(name: str) -> str | None:
    """The known backbone name nearest to a misspelled one (case-insensitive), for "did you mean" hints."""
    import difflib

    candidates = {TINY_RANDOM.lower(): TINY_RANDOM}
    for known in KNOWN_BACKBONES:
        for text in (known.alias, known.hub_id, known.openai_file):
            candidates[text.lower()] = text
    close = difflib.get_close_matches(name.strip().lower(), list(candidates), n=1)
    return candidates[close[0]] if close else None


def unknown_backbone_message(name: str) -> str:
    close = closest_name(name)
    hint = f"; did you mean {close!r}?" if close else "."
    return (f"unknown backbone {name!r}{hint} Known names: {', '.join(known_names())}; "
            "or a Hugging Face hub id, a local CLIP directory or an OpenAI .pt file.")
