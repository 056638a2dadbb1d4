"""CLIP's byte-pair tokenizer, with the real 49,408-token vocabulary.

The vocabulary ships inside the `clip` package (clip-anytorch); Hugging Face's CLIPTokenizer was converted
from the same file, so one tokenizer serves every backbone source.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache

import torch

from clipseg_lab.errors import PromptError

log = logging.getLogger(__name__)

CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def _simple_tokenizer():
    with warnings.catch_warnings():  # clip-anytorch imports pkg_resources, which warns on import
        warnings.simplefilter("ignore")
        from clip.simple_tokenizer import SimpleTokenizer
    return SimpleTokenizer()


def check_prompts(prompts: str | list[str] | tuple[str, ...]) -> list[str]:
    """A list of non-empty prompts, or a `PromptError` that says what is wrong."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise PromptError("empty prompt list: pass at least one text prompt, e.g. ['a cat'].")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise PromptError(f"prompt {i} is a {type(p).__name__}, not a string: {p!r}")
        if not p.strip():
            raise PromptError(f"prompt {i} is empty: every prompt needs some text.")
    return prompts


def tokenize(prompts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids `(N, context_length)`: start token, BPE tokens, end token, zero padding.

    Prompts longer than the context are cut to fit (the end token kept), with a warning naming them.
    """
    prompts = check_prompts(prompts)
    tok = _simple_tokenizer()
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    out = torch.zeros(len(prompts), context_length, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids = [sot, *tok.encode(prompt), eot]
        if len(ids) > context_length:
            warnings.warn(f"prompt {i} has {len(ids)} tokens, more than CLIP's {context_length}: truncated "
                          f"({prompt[:40]!r}...)", stacklevel=2)
            ids = ids[: context_length - 1] + [eot]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def write_hf_tokenizer_files(folder) -> list:
    """`vocab.json` and `merges.txt` for Hugging Face's `CLIPTokenizer`, from the BPE file the `clip` package ships
    (the file OpenAI's tokenizer and the hub's openai/clip-* tokenizers were both made from). Returns the paths."""
    import gzip
    import json
    from pathlib import Path

    from clipseg_lab.files import atomic_path

    tok = _simple_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from clip.simple_tokenizer import default_bpe
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1: 49152 - 256 - 2 + 1]  # the merges SimpleTokenizer uses
    folder = Path(folder)
    vocab, merges_file = folder / "vocab.json", folder / "merges.txt"
    with atomic_path(vocab) as tmp:
        tmp.write_text(json.dumps(tok.encoder, ensure_ascii=False))
    with atomic_path(merges_file) as tmp:
        tmp.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return [vocab, merges_file]
