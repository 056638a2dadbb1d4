"""`Segmenter`: encode an image once, then segment it for any number of text prompts."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from clipseg_lab.backbones.tokenizer import check_prompts
from clipseg_lab.images import ImageLike, load_rgb
from clipseg_lab.models.base import ImageFeatures, TextPromptedModel


class Segmenter:
    """A predictor over one image at a time.

    >>> seg = Segmenter(model)
    >>> seg.set_image("cat.jpg")            # the frozen backbone and image-only decoder part run here, once
    >>> probs = seg.predict(["a cat", "a dog"])   # (2, H, W) in [0, 1] at the image's own resolution
    >>> for prompt, p in seg.predict_iter(["a cat", "a dog"]):  # one (H, W) map at a time (big photos)
    ...     save(prompt, p)

    The K prompts are encoded as one text batch and decoded as one batch (in chunks of `prompt_batch`)
    against the image's cached features, which broadcast over the prompts instead of being copied.
    """

    def __init__(self, model: TextPromptedModel, *, threshold: float | None = None, prompt_batch: int = 64):
        self.model = model.eval()
        self.threshold = threshold
        self.prompt_batch = prompt_batch
        self.image: torch.Tensor | None = None  # (3, H, W) uint8
        self.features: ImageFeatures | None = None

    @classmethod
    def from_pretrained(cls, checkpoint=None, backbone=None, device=None, **options) -> Segmenter:
        """A Segmenter over `load_default_model(checkpoint, backbone)`: with neither, the released
        CIDAS/clipseg-rd64-refined (found in $CLIPSEG_LAB_WEIGHTS, the Hugging Face cache, or downloaded)."""
        from clipseg_lab.models.loading import load_default_model

        return cls(load_default_model(checkpoint, backbone=backbone, device=device), **options)

    @property
    def provenance(self):
        return self.model.provenance

    @torch.inference_mode()
    def set_image(self, image: ImageLike) -> None:
        """Read the image (path, PIL, array or tensor) and compute its features. A photo's EXIF orientation is
        applied, so the maps line up with the photo as a viewer shows it."""
        self.image = load_rgb(image, orientation="exif")
        self.features = self.model.image_features(self.model.preprocess(self.image))

    @torch.inference_mode()
    def predict_logits(self, prompts: str | list[str]) -> torch.Tensor:
        """Logits `(K, S, S)` at the network resolution."""
        self._require_image()
        cond = self.model.prompt_embeddings(check_prompts(prompts))
        return self.predict_logits_from_embeddings(cond)

    @torch.inference_mode()
    def predict_logits_from_embeddings(self, cond: torch.Tensor) -> torch.Tensor:
        """Logits `(K, S, S)` for K conditional embeddings (text, visual or a mix of both)."""
        self._require_image()
        cond = cond.to(self.model.backbone.device, next(self.model.decoder.parameters()).dtype)
        chunks = [self.model.decode(self.features, cond[i:i + self.prompt_batch])
                  for i in range(0, cond.shape[0], self.prompt_batch)]
        return torch.cat(chunks)

    def _require_image(self) -> None:
        if self.features is None:
            raise RuntimeError("call set_image(image) before predict(prompts)")

    def _logits(self, prompts: str | list[str] | torch.Tensor) -> torch.Tensor:
        if isinstance(prompts, torch.Tensor):  # conditional embeddings, e.g. from visual prompts
            return self.predict_logits_from_embeddings(prompts)
        return self.predict_logits(prompts)

    @torch.inference_mode()
    def _full_size(self, logits: torch.Tensor, threshold: float | None) -> torch.Tensor:
        """One prompt's `(S, S)` logits as `(H, W)` probabilities (or a mask) at the image's resolution, on the CPU."""
        assert self.image is not None
        size = tuple(self.image.shape[-2:])
        probs = F.interpolate(logits[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
        probs = probs.sigmoid_().cpu()
        return probs > threshold if threshold is not None else probs

    def predict_iter(self, prompts: str | list[str] | torch.Tensor,
                     threshold: float | None = None) -> Iterator[tuple[str | int, torch.Tensor]]:
        """`(prompt, map)` one prompt at a time: each `(H, W)` map as `predict` gives it (for a tensor of
        embeddings, the embedding's index instead of the prompt).

        The network runs for all prompts here, at once, at its own resolution; each full-resolution map is made
        when it is asked for, so memory holds one of them at a time whatever the number of prompts (a 24 MP
        photo's map is 96 MB)."""
        logits = self._logits(prompts)  # a bad prompt is an error now, not at the first map
        labels = range(len(logits)) if isinstance(prompts, torch.Tensor) else check_prompts(prompts)
        threshold = self.threshold if threshold is None else threshold
        return ((label, self._full_size(row, threshold)) for label, row in zip(labels, logits))

    @torch.inference_mode()
    def predict(self, prompts: str | list[str] | torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Probabilities `(K, H, W)` in [0, 1] at the input image's resolution, on the CPU.

        `prompts`: text prompts, or a `(K, embed_dim)` tensor of conditional embeddings (visual prompts).

        With a threshold (here or in the constructor) the result is a boolean mask `probs > threshold`.
        The K maps take K x H x W x 4 bytes together; `predict_iter` gives them one at a time.
        """
        return torch.stack([m for _, m in self.predict_iter(prompts, threshold)])


@torch.inference_mode()
def predict_sample(model, image: torch.Tensor, prompt: str | None = None,
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """Probabilities for one uint8 image `(3, H, W)` at `size` (default: the image's), on the CPU.

    Prompt models (`TextPromptedModel`) give `(H, W)` sigmoid probabilities for `prompt`; multi-class models
    (`clip-unet`, `unet`) give `(C, H, W)` softmax probabilities and take no prompt.
    """
    size = size or tuple(image.shape[-2:])
    if isinstance(model, TextPromptedModel):
        if prompt is None:
            raise ValueError(f"{model.provenance.model} segments what a prompt names: give a prompt")
        logits = model(model.preprocess([image]), [prompt])[:, None]
    else:
        logits = model.segment(image[None])
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)[0].cpu()
    return logits[0].sigmoid() if isinstance(model, TextPromptedModel) else logits.softmax(0)
