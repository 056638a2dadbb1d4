"""Never execute data: OpenAI's TorchScript `.pt` files are read as archives of tensors, and every `torch.load`
in the package reads with `weights_only=True`."""

from __future__ import annotations

import ast
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import clipseg_lab
from clipseg_lab.backbones.loading import read_openai_state_dict, read_torchscript_state_dict
from clipseg_lab.errors import WeightsFormatError

PACKAGE = Path(clipseg_lab.__file__).parent


def _jit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated: here it is the reference only
        return torch.jit.load(str(path), map_location="cpu").state_dict()


def _assert_same_state(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert list(ours) == list(reference)  # the same dotted names, in the same order
    for key, expected in reference.items():
        got = ours[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        assert torch.equal(got, expected), key


def test_a_traced_clip_reads_as_torch_jit_load_gives_it(openai_clip_files, monkeypatch):
    reference = _jit_state_dict(openai_clip_files["jit"])
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    _assert_same_state(read_torchscript_state_dict(openai_clip_files["jit"]), reference)
    _assert_same_state(read_openai_state_dict(openai_clip_files["jit"]), reference)


def test_the_release_layout_with_fp16_weights_and_buffers_reads_the_same(tmp_path, monkeypatch):
    """ViT-B-16.pt as the rehearsal writes it (the `clip` package's fp16 CLIP, traced, with the released files'
    input_resolution / context_length / vocab_size buffers), at tiny scale."""
    from clipseg_lab.rehearsal import weights as rw

    entry = rw._write_openai_jit(tmp_path, "tiny", seed=4)
    path = tmp_path / entry["path"]
    reference = _jit_state_dict(path)
    assert {"input_resolution", "context_length", "vocab_size"} <= set(reference)
    assert reference["visual.conv1.weight"].dtype == torch.float16
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    _assert_same_state(read_openai_state_dict(path), reference)


def _with_data_pkl(source: Path, dest: Path, data_pkl: bytes) -> Path:
    """A copy of the TorchScript archive `source` whose data.pkl is `data_pkl`."""
    return _rewrite(source, dest, lambda name, data: data_pkl if name.endswith("/data.pkl") else data)


def _rewrite(source: Path, dest: Path, change) -> Path:
    """A copy of the zip `source`, each entry's bytes replaced by `change(name, bytes)` (None: left out)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for name in src.namelist():
            data = change(name, src.read(name))
            if data is not None:
                out.writestr(zipfile.ZipInfo(name), data)
    return dest


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))


@pytest.mark.parametrize("payload", [
    b"cos\nsystem\n(S'touch EXPLOITED'\ntR.",  # names os.system, as a crafted file would
    pickle.dumps(_Exploit(), protocol=2),  # what pickling such an object writes (posix.system)
    b"c__torch__.clip.model\nCLIP\n(S'touch EXPLOITED'\ntR.",  # a module class called with arguments
    b"cbuiltins\neval\n(S'open(\"EXPLOITED\", \"w\")'\ntR.",
])
def test_a_crafted_archive_is_refused_and_runs_nothing(openai_clip_files, tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    crafted = _with_data_pkl(openai_clip_files["jit"], tmp_path / "ViT-B-16.pt", payload)
    with pytest.raises(WeightsFormatError, match=r"ViT-B-16\.pt: refused as a TorchScript archive"):
        read_openai_state_dict(crafted)
    import clipseg_lab as cl

    with pytest.raises(WeightsFormatError, match=r"ViT-B-16\.pt"):
        cl.load_backbone(crafted, device="cpu")
    assert not (tmp_path / "EXPLOITED").exists()


def test_an_archive_with_a_missing_or_short_storage_is_one_error(openai_clip_files, tmp_path):
    source = openai_clip_files["jit"]
    _rewrite(source, tmp_path / "short.pt", lambda name, data: data[:7] if name.endswith("/data/0") else data)
    _rewrite(source, tmp_path / "missing.pt", lambda name, data: None if name.endswith("/data/0") else data)
    for name in ("short.pt", "missing.pt"):
        with pytest.raises(WeightsFormatError, match=name):
            read_openai_state_dict(tmp_path / name)


def _calls(attribute_chain: tuple[str, ...]):
    """(file, line, keywords) of every call of e.g. torch.load in the package's source."""
    for file in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            chain, func = [], node.func
            while isinstance(func, ast.Attribute):
                chain.insert(0, func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                chain.insert(0, func.id)
            if tuple(chain) == attribute_chain:
                yield file.relative_to(PACKAGE.parent), node.lineno, node.keywords


def test_every_torch_load_in_the_package_reads_weights_only():
    found = list(_calls(("torch", "load")))
    assert found, "the scan found no torch.load at all: is it still looking at the package?"
    unsafe = [f"{file}:{line}" for file, line, keywords in found
              if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in keywords)]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
    text = "\n".join(f.read_text() for f in PACKAGE.rglob("*.py"))
    assert "weights_only=False" not in text


def test_nothing_in_the_package_loads_torchscript_or_unrestricted_pickles():
    for chain in (("torch", "jit", "load"), ("pickle", "load"), ("pickle", "loads"), ("torch", "package")):
        assert not list(_calls(chain)), f"{'.'.join(chain)} is called in the package"
