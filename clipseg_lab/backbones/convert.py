"""Convert CLIP weights between the OpenAI layout (what `clip.load` reads) and Hugging Face's `CLIPModel`.

OpenAI keys                                    Hugging Face keys
visual.conv1.weight                            vision_model.embeddings.patch_embedding.weight
visual.class_embedding                         vision_model.embeddings.class_embedding
visual.positional_embedding                    vision_model.embeddings.position_embedding.weight
visual.ln_pre / ln_post                        vision_model.pre_layrnorm / post_layernorm
visual.transformer.resblocks.i.attn.in_proj_*  vision_model.encoder.layers.i.self_attn.{q,k,v}_proj.*
  .attn.out_proj / ln_1 / mlp.c_fc             .self_attn.out_proj / layer_norm1 / mlp.fc1
  .mlp.c_proj / ln_2                           .mlp.fc2 / layer_norm2
visual.proj (width x embed, used as x @ proj)  visual_projection.weight (embed x width, transposed)
token_embedding / positional_embedding         text_model.embeddings.token_embedding / position_embedding
transformer.resblocks.i.*                      text_model.encoder.layers.i.*
ln_final                                       text_model.final_layer_norm
text_projection / logit_scale                  text_projection.weight (transposed) / logit_scale

Only ViT image towers are supported: the ResNet CLIPs (RN50, ...) have no patch tokens for a decoder.
"""

from __future__ import annotations

import re

import torch
from transformers import CLIPConfig

from clipseg_lab.errors import WeightsFormatError

StateDict = dict[str, torch.Tensor]

# OpenAI buffers that carry no weights (clip.model.build_model drops them too).
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")

_BLOCK_RENAMES = {  # inside one residual block, OpenAI suffix -> HF suffix (attn.in_proj is split apart)
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
}

_TOP_RENAMES = {  # OpenAI key -> (HF key, transpose?)
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
    "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
    "visual.ln_post.weight": ("vision_model.post_layernorm.weight", False),
    "visual.ln_post.bias": ("vision_model.post_layernorm.bias", False),
    "visual.proj": ("visual_projection.weight", True),
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text_model.final_layer_norm.weight", False),
    "ln_final.bias": ("text_model.final_layer_norm.bias", False),
    "text_projection": ("text_projection.weight", True),
    "logit_scale": ("logit_scale", False),
}

_TOWERS = (("visual.transformer.resblocks.", "vision_model.encoder.layers."),
           ("transformer.resblocks.", "text_model.encoder.layers."))


def _count_blocks(state_dict: StateDict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


def openai_config(state_dict: StateDict, source: str = "state dict") -> CLIPConfig:
    """Read the architecture off an OpenAI state dict, exactly as `clip.model.build_model` does."""
    if "visual.proj" not in state_dict or "visual.conv1.weight" not in state_dict:
        if any(k.startswith("visual.layer1.") for k in state_dict):
            raise WeightsFormatError(f"{source}: this is a ResNet CLIP (RN50/RN101/...); clipseg-lab needs a ViT CLIP "
                                     "such as ViT-B/16, whose patch tokens the decoders read.")
        raise WeightsFormatError(f"{source}: not an OpenAI CLIP state dict (no 'visual.proj' / 'visual.conv1.weight'). "
                                 "Expected what `clip.load` reads: a ViT-*.pt file from OpenAI's release.")
    vision_width = state_dict["visual.conv1.weight"].shape[0]
    patch_size = state_dict["visual.conv1.weight"].shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["ln_final.weight"].shape[0]
    return CLIPConfig(
        projection_dim=state_dict["text_projection"].shape[1],
        # OpenAI's logit scale is stored as a parameter; the init value only matters for training from scratch.
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
            num_attention_heads=vision_width // 64,  # OpenAI's fixed head width
            image_size=patch_size * grid,
            patch_size=patch_size,
            hidden_act="quick_gelu",
        ),
        text_config=dict(
            vocab_size=state_dict["token_embedding.weight"].shape[0],
            hidden_size=text_width,
            intermediate_size=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=_count_blocks(state_dict, "transformer.resblocks."),
            num_attention_heads=text_width // 64,
            max_position_embeddings=state_dict["positional_embedding"].shape[0],
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
        ),
    )


def openai_to_hf(state_dict: StateDict) -> StateDict:
    """Rename and reshape an OpenAI CLIP state dict into `CLIPModel` keys. Values are copied as float32 views."""
    out: StateDict = {}
    for key, value in state_dict.items():
        if key in _OPENAI_META_KEYS:
            continue
        if key in _TOP_RENAMES:
            new_key, transpose = _TOP_RENAMES[key]
            out[new_key] = value.t().contiguous() if transpose else value
            continue
        for old_prefix, new_prefix in _TOWERS:
            if key.startswith(old_prefix):
                index, suffix = key[len(old_prefix):].split(".", 1)
                base = f"{new_prefix}{index}."
                if suffix in ("attn.in_proj_weight", "attn.in_proj_bias"):
                    kind = "weight" if suffix.endswith("weight") else "bias"
                    q, k, v = value.chunk(3, dim=0)
                    out[f"{base}self_attn.q_proj.{kind}"] = q
                    out[f"{base}self_attn.k_proj.{kind}"] = k
                    out[f"{base}self_attn.v_proj.{kind}"] = v
                elif suffix in _BLOCK_RENAMES:
                    out[base + _BLOCK_RENAMES[suffix]] = value
                else:
                    raise WeightsFormatError(f"unexpected key in an OpenAI CLIP state dict: {key!r}")
                break
        else:
            raise WeightsFormatError(f"unexpected key in an OpenAI CLIP state dict: {key!r}")
    return out


def hf_to_openai(state_dict: StateDict) -> StateDict:
    """The inverse of `openai_to_hf`: `CLIPModel` keys back to the OpenAI layout."""
    top = {hf: (oa, transpose) for oa, (hf, transpose) in _TOP_RENAMES.items()}
    block = {hf: oa for oa, hf in _BLOCK_RENAMES.items()}
    out: StateDict = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):  # a non-persistent buffer in some transformers versions
            continue
        if key in top:
            old_key, transpose = top[key]
            out[old_key] = value.t().contiguous() if transpose else value
            continue
        for old_prefix, new_prefix in _TOWERS:
            if key.startswith(new_prefix):
                index, suffix = key[len(new_prefix):].split(".", 1)
                base = f"{old_prefix}{index}."
                if suffix.startswith("self_attn.") and suffix.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                    proj, kind = suffix.split(".")[1:]
                    pending.setdefault(f"{base}attn.in_proj_{kind}", {})[proj] = value
                elif suffix in block:
                    out[base + block[suffix]] = value
                else:
                    raise WeightsFormatError(f"unexpected key in a CLIPModel state dict: {key!r}")
                break
        else:
            raise WeightsFormatError(f"unexpected key in a CLIPModel state dict: {key!r}")
    for key, parts in pending.items():
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out
