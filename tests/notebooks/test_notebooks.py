"""Every numbered notebook runs headless through papermill in the smoke profile.

Outputs go to a temporary folder, never to the tracked figures/ and papermill_runs/.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from clipseg_lab.notebooks import find_repo_root, numbered_notebooks, run_notebooks

ROOT = find_repo_root()
BOOKS = numbered_notebooks(ROOT)


@pytest.mark.parametrize("book", BOOKS, ids=[b.stem for b in BOOKS])
def test_notebook_runs_in_smoke_profile(book, tmp_path):
    runs, figures = tmp_path / "runs", tmp_path / "figures"
    results = run_notebooks("smoke", only=[book.name[:2]], run_root=runs, figures_root=figures, root=ROOT)
    assert [r["status"] for r in results] == ["ok"], results
    manifest = json.loads((runs / "manifest.json").read_text())
    assert manifest["notebooks"][0]["notebook"] == book.name and manifest["commit"]
    figs = json.loads((figures / "manifest.json").read_text())
    assert figs, "a notebook should save at least one figure"
    with_model = [rec for rec in figs.values() if rec["provenance"]]
    assert all(rec["untrained"] for rec in with_model), "smoke figures of models must be labelled as untrained"
    assert all(rec["data"] or rec["provenance"] for rec in figs.values()), "every figure says what it shows"


@pytest.mark.parametrize("book", BOOKS, ids=[b.stem for b in BOOKS])
def test_source_notebook_is_thin_and_stripped(book):
    nb = nbformat.read(book, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "strip outputs: make strip-notebooks"
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "needs a tagged parameters cell"
    assert sum(len(c.source.splitlines()) for c in code) < 120, "keep notebooks thin: move logic into clipseg_lab"


def test_failing_notebook_stops_the_run(tmp_path):
    """A failing cell stops the run, names the error, and the manifest lists what was not run."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "params").mkdir()
    (root / "params" / "smoke.yaml").write_text("profile: smoke\n")
    for name, source in [("00_bad", "raise ValueError('boom')"), ("01_next", "x = 1")]:
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nb.cells = [nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(source)]
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    results = run_notebooks("smoke", run_root=tmp_path / "runs", figures_root=tmp_path / "figs", root=root)
    assert len(results) == 1 and results[0]["status"] == "failed" and "boom" in results[0]["error"]
    manifest = json.loads((tmp_path / "runs" / "manifest.json").read_text())
    assert manifest["skipped_after_failure"] == ["01_next.ipynb"]


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_profile_overrides_name_declared_parameters(profile):
    """A typo in params/<profile>.yaml would be filtered out silently: every override must be declared."""
    import papermill

    from clipseg_lab.notebooks import load_params

    params = load_params(profile, ROOT)
    names = {b.stem: b for b in BOOKS}
    for stem, overrides in (params.get("notebooks") or {}).items():
        assert stem in names, f"params/{profile}.yaml names {stem}, which is not a numbered notebook"
        undeclared = set(overrides) - set(papermill.inspect_notebook(str(names[stem])))
        assert not undeclared, f"params/{profile}.yaml: {stem} does not declare {sorted(undeclared)}"
