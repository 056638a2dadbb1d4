"""Every numbered notebook runs headless through papermill in the smoke profile, as a user's first command does.

The main run works in a copy of the working tree's tracked files (committed outputs included, so uncommitted work
is what is tested) with no `../shared` beside it and no `$CLIPSEG_LAB_SAMPLES`: what a fresh clone sees. A second,
short run covers the notebooks that read the real samples, with the samples present. Nothing is written into the
tracked figures/ and papermill_runs/ of the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from clipseg_lab.notebooks import find_repo_root, numbered_notebooks, run_notebooks
from tests.conftest import SAMPLES

ROOT = find_repo_root()
BOOKS = numbered_notebooks(ROOT)
SAMPLE_BOOKS = ["01", "05", "08", "09"]  # the notebooks whose data changes when the real samples are present


# the budget for the whole smoke run on 2 CPU cores (make test has 15 minutes in all)
SMOKE_BUDGET_S = 7 * 60


def tracked_copy(dest: Path) -> Path:
    """The working tree's tracked files (as they are now, uncommitted edits included) copied to `dest/repo`."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    repo = dest / "repo"
    for name in filter(None, (f.decode() for f in files)):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    return repo


def _run(root: Path, **kw) -> dict:
    start = time.perf_counter()
    results = run_notebooks("smoke", root=root, **kw)
    seconds = time.perf_counter() - start
    runs = Path(kw.get("run_root") or root / "papermill_runs" / "smoke")
    figures = Path(kw.get("figures_root") or root / "figures" / "smoke")
    print(f"\nsmoke run in {root}: {seconds:.0f} s; "
          + ", ".join(f"{r['notebook'][:2]} {r['seconds']:.0f} s" for r in results))
    return {"results": {r["notebook"]: r for r in results}, "seconds": seconds, "runs": runs,
            "manifest": json.loads((runs / "manifest.json").read_text()),
            "figures": json.loads((figures / "manifest.json").read_text())}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """All numbered notebooks in order, as `make notebooks` runs them on a fresh clone without the samples:
    into the copy's own papermill_runs/ and figures/, over whatever is committed there."""
    mp = pytest.MonkeyPatch()
    mp.delenv("CLIPSEG_LAB_SAMPLES", raising=False)
    try:
        repo = tracked_copy(tmp_path_factory.mktemp("fresh_clone"))
        assert not (repo.parent / "shared").exists()
        return _run(repo)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def samples_run(tmp_path_factory):
    """The notebooks that read the real samples, with the samples present."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {SAMPLES} (set CLIPSEG_LAB_SAMPLES)")
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPSEG_LAB_SAMPLES", str(SAMPLES))
    try:
        out = tmp_path_factory.mktemp("with_samples")
        return _run(tracked_copy(out), only=SAMPLE_BOOKS, run_root=out / "runs", figures_root=out / "figures")
    finally:
        mp.undo()


@pytest.mark.parametrize("book", BOOKS, ids=[b.stem for b in BOOKS])
def test_notebook_runs_in_smoke_profile(book, smoke_run):
    record = smoke_run["results"].get(book.name)
    assert record is not None, ("not run: an earlier notebook failed "
                                f"({smoke_run['manifest'].get('skipped_after_failure')})")
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


def test_without_samples_every_substitute_is_said(smoke_run):
    """A fresh clone has no samples: the sections that need them say so in one visible line (and still run)."""
    for number in SAMPLE_BOOKS:
        book = next(b for b in BOOKS if b.name.startswith(number))
        executed = nbformat.read(smoke_run["runs"] / book.name, as_version=4)
        text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))
        if number != "08":  # 08's own note says which data it tested (see stats.run_sample_datasets)
            assert "CLIPSEG_LAB_SAMPLES" in text, f"{book.name} does not say that it ran without the samples"


@pytest.mark.parametrize("number", SAMPLE_BOOKS)
def test_sample_notebooks_run_with_the_samples(number, samples_run):
    record = next((r for name, r in samples_run["results"].items() if name.startswith(number)), None)
    assert record is not None and record["status"] == "ok", record
    executed = nbformat.read(samples_run["runs"] / record["notebook"], as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "instead; to use the real samples" not in text, f"{record['notebook']} substituted data with samples present"


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


@pytest.mark.parametrize("profile", ["smoke", "full", "full+rehearsal"])
def test_profile_overrides_name_declared_parameters(profile):
    """A typo in params/<profile>.yaml would be filtered out silently: every override must be declared."""
    import papermill

    from clipseg_lab.notebooks import load_params

    profile, _, overlay = profile.partition("+")
    params = load_params(profile, ROOT, overlay or None)
    names = {b.stem: b for b in BOOKS}
    for stem, overrides in (params.get("notebooks") or {}).items():
        assert stem in names, f"params/{profile}.yaml names {stem}, which is not a numbered notebook"
        undeclared = set(overrides) - set(papermill.inspect_notebook(str(names[stem])))
        assert not undeclared, f"params/{profile}.yaml: {stem} does not declare {sorted(undeclared)}"


COMMITTED_OUTPUTS_LIMIT = 10 * 2**20


def test_committed_outputs_are_light_and_whole():
    """figures/ and papermill_runs/ hold one complete smoke run (or nothing), under 10 MB, and no caches."""
    files = subprocess.run(["git", "ls-files", "figures", "papermill_runs"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    files = [f for f in files if (ROOT / f).is_file()]
    total = sum((ROOT / f).stat().st_size for f in files)
    assert total < COMMITTED_OUTPUTS_LIMIT, f"committed outputs take {total / 2**20:.1f} MB"
    heavy = [f for f in files if f.endswith((".npz", ".safetensors", ".pt", ".pth", ".bin"))
             or any(part in f.split("/") for part in ("cache", "activation_cache", "snapshots", "prepared"))]
    assert not heavy, f"caches or weights are committed: {heavy[:5]}"
    manifest = ROOT / "papermill_runs" / "smoke" / "manifest.json"
    if not manifest.is_file():
        return
    records = json.loads(manifest.read_text())
    assert {r["notebook"] for r in records["notebooks"]} == {b.name for b in BOOKS}, "a partial run is committed"
    assert all(r["status"] == "ok" for r in records["notebooks"])
    assert all((manifest.parent / b.name).is_file() for b in BOOKS)
    figures = json.loads((ROOT / "figures" / "smoke" / "manifest.json").read_text())
    assert all((ROOT / "figures" / "smoke" / name).is_file() for name in figures), "the manifest names missing figures"
