"""An ipywidgets explorer for text prompts: pick an image (samples, upload or path), type prompts, move the
threshold and overlay sliders, switch models.

What runs when:
* a new image (or model) runs the frozen backbone and the decoder's image-only part once: a `Segmenter` per
  (model, image) is kept (the last `keep_images`);
* a new prompt runs only the text encoder and the decoder against those cached features;
* the sliders re-render the cached probabilities: no model runs at all.

Images are read as a viewer shows them (a photo's EXIF orientation applied), and those larger than `MAX_SIDE`
are scaled down when added, so redrawing stays quick.

`counts` records each kind of work, so the callbacks are testable without a browser. Headless (papermill)
use `figure()` for one static frame.
"""

from __future__ import annotations

import html
import io
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
import torch
from PIL import Image

from clipseg_lab.errors import ClipsegLabError
from clipseg_lab.images import ImageLike, load_rgb
from clipseg_lab.segmenter import Segmenter
from clipseg_lab.viz.overlay import blend, fit_image, plot_prompts

PROMPT_SEPARATOR = ";"


MAX_SIDE = 1024  # larger images are shown (and segmented) at this size: the frame stays quick to redraw


def split_prompts(text: str) -> list[str]:
    """ "a cat; a dog" -> ["a cat", "a dog"] (empty parts dropped; the model rejects an empty list)."""
    return [p.strip() for p in text.split(PROMPT_SEPARATOR) if p.strip()]


class PromptExplorer:
    """`PromptExplorer(models, images).widget()` in a notebook; see the module docstring."""

    def __init__(self, models: Mapping[str, torch.nn.Module] | None, images: Mapping[str, ImageLike], *,
                 prompts: str = "a cat; a dog", threshold: float = 0.5, alpha: float = 0.5, keep_images: int = 8,
                 keep_predictions: int = 64):
        """`models`: label -> model; None gives the released CIDAS/clipseg-rd64-refined (`load_default_model`)."""
        import ipywidgets as w

        if models is None:
            from clipseg_lab.models.loading import DEFAULT_CHECKPOINT, load_default_model

            models = {DEFAULT_CHECKPOINT: load_default_model()}
        if not models or not images:
            raise ValueError("PromptExplorer needs at least one model and one image")
        self.models = dict(models)
        self.images = {name: self._read(image) for name, image in images.items()}
        self._muted = False  # set while the image list is swapped, so no stale image is rendered in between
        self.keep_images, self.keep_predictions = keep_images, keep_predictions
        self.counts: Counter[str] = Counter()  # image_encodings, prompt_runs, renders
        self._segmenters: OrderedDict[tuple[str, str], Segmenter] = OrderedDict()
        self._probs: OrderedDict[tuple[str, str, tuple[str, ...]], torch.Tensor] = OrderedDict()

        self.model_picker = w.Dropdown(options=list(self.models), description="model")
        self.image_picker = w.Dropdown(options=list(self.images), description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.path = w.Text(placeholder="path/to/image.jpg, then Enter", description="path", continuous_update=False)
        self.prompt = w.Text(value=prompts, description="prompts", continuous_update=False,
                             placeholder=f"one or more prompts, separated by '{PROMPT_SEPARATOR}'",
                             layout=w.Layout(width="60%"))
        self.threshold = w.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.01, description="threshold",
                                       continuous_update=True)
        self.alpha = w.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="overlay α",
                                   continuous_update=True)
        self.view = w.Image(format="png")
        self.caption = w.HTML()
        self.status = w.HTML()
        for control in (self.model_picker, self.image_picker, self.prompt, self.threshold, self.alpha):
            control.observe(self.update, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.path.observe(self._on_path, names="value")
        self.update()

    # -- the model work, cached --------------------------------------------------------------------------
    def segmenter(self, model_name: str, image_name: str) -> Segmenter:
        key = (model_name, image_name)
        if key not in self._segmenters:
            segmenter = Segmenter(self.models[model_name])
            segmenter.set_image(self.images[image_name])
            self.counts["image_encodings"] += 1
            self._segmenters[key] = segmenter
            while len(self._segmenters) > self.keep_images:
                self._segmenters.popitem(last=False)
        self._segmenters.move_to_end(key)
        return self._segmenters[key]

    def probabilities(self) -> torch.Tensor:
        """`(K, H, W)` for the current model, image and prompts."""
        prompts = tuple(split_prompts(self.prompt.value))
        key = (self.model_picker.value, self.image_picker.value, prompts)
        if key not in self._probs:
            segmenter = self.segmenter(*key[:2])
            self._probs[key] = segmenter.predict(list(prompts))  # raises PromptError when there is none
            self.counts["prompt_runs"] += 1
            while len(self._probs) > self.keep_predictions:
                self._probs.popitem(last=False)
        self._probs.move_to_end(key)
        return self._probs[key]

    # -- rendering ---------------------------------------------------------------------------------------
    def frame(self) -> np.ndarray:
        """uint8 RGB: the image with the thresholded masks (one colour per prompt) | the highest probability."""
        probs = self.probabilities()
        image = self.images[self.image_picker.value]
        masks = (probs > self.threshold.value).float()
        left = blend(image, masks, self.alpha.value)
        right = matplotlib.colormaps["magma"](probs.max(0).values.numpy())[..., :3]
        gap = np.ones((left.shape[0], 8, 3))
        return (np.concatenate([left, gap, right], axis=1) * 255).round().astype(np.uint8)

    def update(self, change: Any = None) -> None:
        """Re-render after any control changed. Errors are shown under the frame, not raised: an exception in a
        widget callback would only reach JupyterLab's log console and leave the widget looking frozen."""
        if self._muted:
            return
        try:
            array = self.frame()
        except Exception as exc:  # noqa: BLE001 (any error, e.g. an empty prompt or running out of memory)
            kind = "" if isinstance(exc, ClipsegLabError) else f"{type(exc).__name__}: "
            self.status.value = f"<span style='color:firebrick'>{html.escape(kind + str(exc))}</span>"
            return
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="png")
        self.view.value = buffer.getvalue()
        self.counts["renders"] += 1
        self.status.value = ""
        self.caption.value = self._caption()

    def _caption(self) -> str:
        provenance = self.models[self.model_picker.value].provenance
        colour = "firebrick" if provenance.untrained else "dimgray"
        prompts = ", ".join(f"“{p}”" for p in split_prompts(self.prompt.value))
        return (f"<span style='color:{colour}'>{html.escape(provenance.caption())}</span><br>"
                f"left: masks above {self.threshold.value:.2f} for {html.escape(prompts)}; right: highest probability")

    # -- new images --------------------------------------------------------------------------------------
    @staticmethod
    def _read(image: ImageLike) -> torch.Tensor:
        return fit_image(load_rgb(image, orientation="exif"), MAX_SIDE)

    def add_image(self, name: str, image: ImageLike) -> None:
        """Add an image to the picker and show it."""
        self.images[name] = self._read(image)
        for key in [k for k in self._segmenters if k[1] == name]:  # a replaced image is encoded anew
            del self._segmenters[key]
        for key in [k for k in self._probs if k[1] == name]:
            del self._probs[key]
        self._muted = True  # new options reset the selection to the first image: do not render that one
        try:
            self.image_picker.options = list(self.images)
            self.image_picker.value = name
        finally:
            self._muted = False
        self.update()

    def _on_upload(self, change: Any) -> None:
        for item in change["new"] or ():
            try:
                self.add_image(item["name"], Image.open(io.BytesIO(bytes(item["content"]))))
            except (OSError, ClipsegLabError) as exc:
                self.status.value = (f"<span style='color:firebrick'>{html.escape(item['name'])}: not a readable "
                                     f"image ({html.escape(str(exc))}); upload a PNG or JPEG</span>")

    def _on_path(self, change: Any) -> None:
        path = change["new"].strip()
        if not path:
            return
        try:
            self.add_image(path, path)
        except ClipsegLabError as exc:
            self.status.value = f"<span style='color:firebrick'>{html.escape(str(exc))}</span>"

    # -- display -----------------------------------------------------------------------------------------
    def widget(self):
        import ipywidgets as w

        sources = w.HBox([self.image_picker, self.upload, self.path])
        controls = w.HBox([self.model_picker, self.threshold, self.alpha])
        return w.VBox([sources, self.prompt, controls, self.view, self.caption, self.status])

    def figure(self):
        """A static matplotlib frame of the current state (for papermill and saved figures): the image, each
        prompt's mask at the current threshold, and all masks over the image at the current overlay alpha."""
        model = self.models[self.model_picker.value]
        return plot_prompts(self.images[self.image_picker.value], self.probabilities(),
                            split_prompts(self.prompt.value), model.provenance, threshold=self.threshold.value,
                            alpha=self.alpha.value)
