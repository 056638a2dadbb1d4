"""Every numbered notebook runs headless through papermill in the smoke profile.

Outputs go to a temporary folder, never to the tracked figures/ and papermill_runs/.
"""

from __future__ import annotations

import json
import time

import nbformat
import pytest

from clipseg_lab.notebooks import find_repo_root, numbered_notebooks, run_notebooks

ROOT = find_repo_root()
BOOKS = numbered_notebooks(ROOT)


# DESIGN.md's budget for the whole smoke run on 2 CPU cores
SMOKE_BUDGET_S = 7 * 60


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """All numbered notebooks in order, as `make notebooks` runs them: later ones load what earlier ones
    published (e.g. 07 the decoders of 02 and 03)."""
    out = tmp_path_factory.mktemp("smoke")
    start = time.perf_counter()
    results = run_notebooks("smoke", run_root=out / "runs", figures_root=out / "figures", root=ROOT)
    seconds = time.perf_counter() - start
    print(f"\nwhole smoke run: {seconds:.0f} s; " + ", ".join(f"{r['notebook'][:2]} {r['seconds']:.0f} s" for r in results))
    return {"results": {r["notebook"]: r for r in results}, "seconds": seconds, "out": out,
            "manifest": json.loads((out / "runs" / "manifest.json").read_text()),
            "figures": json.loads((out / "figures" / "manifest.json").read_text())}


@pytest.mark.parametrize("book", BOOKS, ids=[b.stem for b in BOOKS])
def test_notebook_runs_in_smoke_profile(book, smoke_run):
    record = smoke_run["results"].get(book.name)
    assert record is not None, f"not run: an earlier notebook failed ({smoke_run['manifest'].get('skipped_after_failure')})"
    assert record["status"] == "ok", record
    assert smoke_run["manifest"]["commit"] and smoke_run["manifest"]["packages"]
    figs = {name: rec for name, rec in smoke_run["figures"].items() if name.startswith(book.name[:3])}
    assert figs, "a notebook should save at least one figure, named after it (NN_...)"
    with_model = [rec for rec in figs.values() if rec["provenance"]]
    assert all(rec["untrained"] for rec in with_model), "smoke figures of models must be labelled as untrained"
    assert all(rec["data"] or rec["provenance"] for rec in figs.values()), "every figure says what it shows"
    for name, rec in figs.items():  # a figure of several models names each one's decoder
        for model in (rec["provenance"] or {}).get("model", "").split(" vs ")[1:]:
            assert f"{model}: " in rec["provenance"]["decoder"], f"{name}: {model} is not named in its provenance"


def test_whole_smoke_run_fits_the_budget(smoke_run):
    assert smoke_run["seconds"] < SMOKE_BUDGET_S, f"smoke run took {smoke_run['seconds']:.0f} s"


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
