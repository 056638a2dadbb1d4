"""Shared fixtures: tiny CLIPs with random weights in every format the package reads.

No test downloads anything: HF_HUB_OFFLINE is set for the whole session, and weights are built here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("CLIPSEG_LAB_SAMPLES", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs real weights, a GPU or minutes; left out of `make test`")
    config.addinivalue_line("markers", "rehearsal: the full-profile rehearsal (make rehearsal)")


def _jitter_norms(module: torch.nn.Module, seed: int) -> None:
    """LayerNorms start at weight 1 / bias 0; randomise them so that a wrongly mapped norm shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))


def small_hf_clip(seed: int = 1, image_size: int = 64, layers: int = 4):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        projection_dim=32,
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                           image_size=image_size, patch_size=16),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                         max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407),
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    _jitter_norms(model, seed)
    return model


def small_openai_clip(seed: int = 2):
    """An OpenAI-architecture CLIP (the `clip` package's own class) with random weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from clip.model import CLIP
    torch.manual_seed(seed)
    model = CLIP(embed_dim=32, image_resolution=64, vision_layers=3, vision_width=128, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
                 transformer_layers=3).float().eval()
    _jitter_norms(model, seed)
    # OpenAI released fp16 weights, and clip.load rounds every weight through fp16 (convert_weights):
    # start from fp16-exact values so that the reference loader is lossless too.
    return model.half().float()


SMALL_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407)
SMALL_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, image_size=64,
                    patch_size=16)


def small_hf_clipseg(refined: bool = False, seed: int = 3):
    """transformers' CLIPSegForImageSegmentation, small, random, with every weight randomised."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(CLIPSegConfig(
        text_config=SMALL_TEXT, vision_config=SMALL_VISION, projection_dim=32, extract_layers=(1, 2, 3),
        reduce_dim=16, decoder_num_attention_heads=2, decoder_intermediate_size=64,
        use_complex_transposed_convolution=refined)).eval()
    _jitter_norms(model, seed)
    with torch.no_grad():  # biases start at zero: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.01 * torch.randn_like(p))
        if refined:  # its default init gives logits in the hundreds; scale to the released models' range (~ +-20)
            model.decoder.transposed_convolution[4].weight.mul_(0.05)
    return model


@pytest.fixture(scope="session")
def hf_clipseg_dirs(tmp_path_factory) -> dict[str, Path]:
    """`save_pretrained` directories of a plain and a refined small CLIPSeg."""
    out = {}
    for kind in ("plain", "refined"):
        path = tmp_path_factory.mktemp(f"clipseg_{kind}")
        small_hf_clipseg(refined=kind == "refined").save_pretrained(path)
        out[kind] = path
    return out


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf_clip")
    small_hf_clip().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def openai_clip_files(tmp_path_factory) -> dict[str, Path]:
    """The same random OpenAI CLIP as a plain state dict and as a traced TorchScript archive (the release format)."""
    path = tmp_path_factory.mktemp("openai_clip")
    model = small_openai_clip()
    state = path / "state_dict.pt"
    torch.save(model.state_dict(), state)
    traced = torch.jit.trace(model, (torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)),
                             check_trace=False)
    jit = path / "jit.pt"
    traced.save(str(jit))
    return {"state_dict": state, "jit": jit}


@pytest.fixture(scope="session")
def tiny_backbone():
    import clipseg_lab as cl

    return cl.load_backbone("tiny-random", device="cpu")


@pytest.fixture()
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {SAMPLES} (set CLIPSEG_LAB_SAMPLES)")
    return SAMPLES
