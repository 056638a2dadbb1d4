"""Never execute data: the refer toolkit's pickles are read as plain data only."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from clipseg_lab.data.base import DatasetError
from clipseg_lab.files import load_data_pickle


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_plain_data_loads_and_code_is_refused(tmp_path, monkeypatch):
    plain = [{"ref_id": 1, "split": "val", "sentences": [{"sent": "a cat"}], "bbox": [1.0, 2.5, 3, 4]}, ("x", None),
             {1, 2}, frozenset({"a"})]
    (tmp_path / "plain.p").write_bytes(pickle.dumps(plain, protocol=2))
    assert load_data_pickle(tmp_path / "plain.p") == plain
    monkeypatch.chdir(tmp_path)
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps([_Exploit()]))
    with pytest.raises(DatasetError, match=r"refs\(unc\).p: refused.*posix.system|refs\(unc\).p: refused.*os.system"):
        load_data_pickle(tmp_path / "refs(unc).p")
    assert not (tmp_path / "EXPLOITED").exists()


def test_a_crafted_refer_pickle_is_refused_by_the_loader_and_the_cli(tmp_path, monkeypatch, capsys):
    from clipseg_lab.cli import main

    folder = tmp_path / "refcoco"
    folder.mkdir()
    (folder / "refs(unc).p").write_bytes(pickle.dumps([_Exploit()]))
    (folder / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    monkeypatch.chdir(tmp_path)
    from clipseg_lab.data.registry import open_dataset

    with pytest.raises(DatasetError, match="refused, not a pickle of plain data"):
        open_dataset("refcoco", tmp_path, "val", images="placeholder")
    code = main(["hypothesis", "--dataset", "refcoco", "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "refused, not a pickle of plain data" in err and "Traceback" not in err  # each split said
    assert not (tmp_path / "EXPLOITED").exists()


def test_the_real_refer_sample_reads(samples):
    refs = load_data_pickle(samples / "refcoco" / "refer_format" / "refcoco" / "refs(unc).p")
    assert refs and all(isinstance(r, dict) and "split" in r for r in refs)
