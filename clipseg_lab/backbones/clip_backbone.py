"""A frozen CLIP: preprocessing, tokenizer, text embeddings and per-layer image token activations.

The weights live in a Hugging Face `CLIPModel` (SDPA attention) whatever format they came from; the image
tower is stepped layer by layer here so that a caller can stop at the deepest layer it needs and read the
token activations of any layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from transformers import CLIPModel

from clipseg_lab.backbones.tokenizer import CONTEXT_LENGTH, check_prompts, tokenize
from clipseg_lab.images import ImageLike, load_rgb

# OpenAI CLIP's normalisation (every released ViT CLIP uses it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet's: what the released CLIPSeg decoders were trained and are run with (timojl/clipseg, and the
# preprocessor_config.json of the CIDAS/clipseg-* hub repositories).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """The per-channel mean / std a model's pixels are normalised with, and where that choice came from.

    It belongs to the weights, not to the CLIP: the same CLIP runs with CLIP statistics under a decoder we
    trained and with ImageNet statistics under the released CLIPSeg decoders.
    """

    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    source: str = "CLIP's statistics"

    def __post_init__(self):
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3 or (name == "std" and min(value) <= 0):
                raise ValueError(f"normalisation {name} must be three numbers{' > 0' if name == 'std' else ''}, "
                                 f"not {getattr(self, name)!r} ({self.source})")
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict:
        return {"image_mean": list(self.mean), "image_std": list(self.std), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict, source: str) -> Normalization:
        return cls(tuple(data["image_mean"]), tuple(data["image_std"]), data.get("source", source))


CLIP_NORMALIZATION = Normalization()
IMAGENET_NORMALIZATION = Normalization(IMAGENET_MEAN, IMAGENET_STD, "ImageNet statistics (original CLIPSeg)")


@dataclass
class ImageEncoding:
    """What `ClipBackbone.encode_image` returns for a batch of B images.

    activations: one tensor per requested layer, `(B, 1 + h*w, width)`: the class token first, then the
        patch tokens in row-major order; "layer i" is the output of transformer block i (0-based), i.e.
        Hugging Face's `hidden_states[i + 1]`, the convention of CLIPSeg's `extract_layers`.
    layers: the block indices, in the order of `activations`.
    pooled: `(B, embed_dim)` projected image embedding (not normalised), or None when not asked for.
    grid: `(h, w)` patch grid.
    """

    activations: list[torch.Tensor]
    layers: tuple[int, ...]
    pooled: torch.Tensor | None
    grid: tuple[int, int]


class ClipBackbone(nn.Module):
    """A frozen CLIP ViT. Build it with `clipseg_lab.load_backbone`, not directly."""

    def __init__(self, model: CLIPModel, *, name: str, source: str, trained: bool,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        super().__init__()
        self.clip = model.eval().requires_grad_(False)
        self.name = name  # what the user asked for, e.g. "ViT-B/16" or "tiny-random"
        self.source = source  # where the weights came from
        self.trained = trained  # False for tiny-random and the rehearsal's: every output says "untrained backbone"
        self.untrained_note = ""  # why it is random, when that is not "untrained backbone" (the rehearsal's)
        vision, text = model.config.vision_config, model.config.text_config
        self.image_size: int = vision.image_size
        self.patch_size: int = vision.patch_size
        self.width: int = vision.hidden_size
        self.text_width: int = text.hidden_size
        self.embed_dim: int = model.config.projection_dim
        self.num_layers: int = vision.num_hidden_layers
        self.context_length: int = text.max_position_embeddings
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        same = tuple(mean) == CLIP_MEAN and tuple(std) == CLIP_STD
        self.normalization = (CLIP_NORMALIZATION if same
                              else Normalization(tuple(mean), tuple(std), f"the preprocessing of {source}"))

    # -- bookkeeping ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ClipBackbone:
        return super().train(False)  # frozen: always in eval mode, whatever the parent does

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.visual_projection.weight.dtype

    @property
    def label(self) -> str:
        """A short description for captions and logs."""
        return (self.name if self.trained
                else f"{self.name} ({self.untrained_note or 'untrained backbone: random weights'})")

    def patch_grid(self, size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """Patch grid `(h, w)` for an input of `size` pixels (default: the native resolution)."""
        h, w = _pair(size or self.image_size)
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    # -- inputs --------------------------------------------------------------------------------
    def preprocess(self, images: ImageLike | Sequence[ImageLike], size: int | tuple[int, int] | None = None,
                   normalization: Normalization | None = None) -> torch.Tensor:
        """Images to normalised pixels `(B, 3, H, W)` at `size` (default the native resolution).

        The whole image is resized (bilinear, antialiased, on uint8 as transformers' image processors do) to
        the square size with no crop, as CLIPSeg does, so a prediction maps back onto every pixel of the input.
        `normalization`: the weights' own (a model's `normalization`); default the backbone's.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        h, w = _pair(size or self.image_size)
        self.patch_grid((h, w))  # validates the size
        batch = [TF.resize(load_rgb(im), [h, w], antialias=True) for im in images]
        pixels = torch.stack(batch).to(self.device, torch.float32) / 255.0
        if normalization is None:
            mean, std = self.mean, self.std
        else:
            mean = torch.tensor(normalization.mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(normalization.std, device=self.device).view(1, 3, 1, 1)
        return ((pixels - mean) / std).to(self.dtype)

    def tokenize(self, prompts: str | list[str]) -> torch.Tensor:
        """CLIP BPE token ids `(N, 77)` (long prompts truncated with a warning)."""
        return tokenize(prompts, self.context_length)

    # -- encoders ------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_text(self, prompts: str | list[str], batch_size: int = 256) -> torch.Tensor:
        """Projected text embeddings `(N, embed_dim)`, not normalised (CLIPSeg conditions on these)."""
        prompts = check_prompts(prompts)
        out = []
        for start in range(0, len(prompts), batch_size):
            ids = self.tokenize(prompts[start:start + batch_size])
            # The text tower is causal and pools at the end token, so the padding after the longest prompt's
            # end token cannot change the result: drop it (about 10x less text compute for short prompts).
            ids = ids[:, : int(ids.argmax(dim=1).max()) + 1].to(self.device)
            out.append(self.clip.get_text_features(input_ids=ids).pooler_output)
        return torch.cat(out)

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor, layers: Sequence[int] = (), pooled: bool = True,
                     project: bool = False) -> ImageEncoding:
        """Token activations of the requested blocks, and the projected embedding if `pooled`.

        Any input size that is a multiple of the patch size works; the position embeddings are
        interpolated (bicubic, as CLIPSeg and transformers do) when it differs from the native one.
        Without `pooled`, blocks after the deepest requested layer are not run. With `project`, every token
        of the returned layers goes through the final norm and the image projection (`(B, T, embed_dim)`),
        as the pooled class token does: patch tokens in the joint image-text space.
        """
        layers = tuple(self._check_layer(i) for i in layers)
        if not layers and not pooled:
            raise ValueError("encode_image needs layers=[...] or pooled=True")
        vision = self.clip.vision_model
        grid = self.patch_grid(tuple(pixels.shape[-2:]))
        hidden = vision.embeddings(pixels.to(self.dtype), interpolate_pos_encoding=True)
        hidden = vision.pre_layrnorm(hidden)
        last = self.num_layers - 1 if pooled else max(layers)
        kept: dict[int, torch.Tensor] = {}
        for index, block in enumerate(vision.encoder.layers[: last + 1]):
            hidden = block(hidden, attention_mask=None)
            if index in layers:
                kept[index] = hidden
        embedding = self.clip.visual_projection(vision.post_layernorm(hidden[:, 0])) if pooled else None
        activations = [kept[i] for i in layers]
        if project:
            activations = [self.clip.visual_projection(vision.post_layernorm(a)) for a in activations]
        return ImageEncoding(activations, layers, embedding, grid)

    def _check_layer(self, index: int) -> int:
        if not -self.num_layers <= index < self.num_layers:
            raise ValueError(f"layer {index} does not exist: {self.name} has blocks 0..{self.num_layers - 1}")
        return index % self.num_layers


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


__all__ = ["CLIP_MEAN", "CLIP_NORMALIZATION", "CLIP_STD", "CONTEXT_LENGTH", "IMAGENET_MEAN", "IMAGENET_NORMALIZATION",
           "IMAGENET_STD", "ClipBackbone", "ImageEncoding", "Normalization"]
