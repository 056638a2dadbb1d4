"""Run the numbered notebooks headless with papermill, and write a run manifest.

`params/<profile>.yaml` holds the profile's values: top-level keys go to every notebook that declares them
in its `parameters` cell, and `notebooks: {NN_name: {...}}` overrides them for one notebook. Only declared
parameters are injected, so a notebook never receives a value it does not expect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from clipseg_lab.errors import ConfigError
from clipseg_lab.files import compact_png, write_json
from clipseg_lab.ownership import OWNER_FILE, claim
from clipseg_lab.provenance import git_commit, package_versions

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def find_repo_root(start: Path | None = None) -> Path:
    """The folder holding `notebooks/` and `params/`: searched upwards from the working directory."""
    for folder in [(start or Path.cwd()).resolve(), *(start or Path.cwd()).resolve().parents, PACKAGE_ROOT]:
        if (folder / "notebooks").is_dir() and (folder / "params").is_dir():
            return folder
    raise FileNotFoundError("no notebooks/ and params/ folders found above the working directory; run this from a "
                            "clipseg-lab checkout")


def _read_params(root: Path, name: str) -> dict[str, Any]:
    path = root / "params" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no parameters named {name!r} (expected params/smoke.yaml, params/full.yaml "
                                "or an overlay such as params/rehearsal.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter names to values")
    return data


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`: nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _substitute(value: Any, substitutions: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in substitutions.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, substitutions) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, substitutions) for v in value]
    return value


def load_params(profile: str, root: Path, overlay: str | None = None,
                substitutions: dict[str, str] | None = None) -> dict[str, Any]:
    """`params/<profile>.yaml`, with `params/<overlay>.yaml` merged over it (e.g. the rehearsal over full), and
    `{name}` placeholders in string values replaced from `substitutions` (e.g. `{world}`)."""
    params = _read_params(root, profile)
    if overlay:
        extra = _read_params(root, overlay)
        if extra.get("overlays", profile) != profile:
            raise ConfigError(f"params/{overlay}.yaml overlays the {extra['overlays']!r} profile, not {profile!r}")
        params = deep_merge(params, {k: v for k, v in extra.items() if k not in ("overlays", "environment")})
        params["environment"] = extra.get("environment") or {}
        params["overlay"] = overlay
    return _substitute(params, substitutions or {})


def numbered_notebooks(root: Path, only: list[str] | None = None) -> list[Path]:
    books = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.zfill(2) for o in only}
        unknown = wanted - {b.name[:2] for b in books}
        if unknown:
            raise ConfigError(f"--only: no notebook numbered {', '.join(sorted(unknown))}; there are "
                              f"{', '.join(b.name for b in books)}")
        books = [b for b in books if b.name[:2] in wanted]
    return books


def notebook_parameters(notebook: Path, params: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """The values to inject into one notebook: profile values, its own overrides, then `fixed`, filtered to
    the names its `parameters` cell declares."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    values = {k: v for k, v in params.items() if k != "notebooks"}
    values.update((params.get("notebooks") or {}).get(notebook.stem, {}))
    values.update({k: v for k, v in fixed.items() if v is not None})
    return {k: v for k, v in values.items() if k in declared}


EMBEDDED_MAX_SIDE = 640  # executed copies show figures at screen size; figures/ keeps them full size


def shrink_embedded_images(notebook: Path, max_side: int = EMBEDDED_MAX_SIDE) -> None:
    """Executed copies embed every figure as base64 PNG: scale them to screen size so a run stays a few MB.

    The saved widget state goes too: headless, it holds only progress bars and the explorer's hidden frames
    (hundreds of kB), and the outputs keep their text form."""
    import base64

    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                output["data"]["image/png"] = base64.b64encode(compact_png(base64.b64decode(png), max_side)).decode()
    from clipseg_lab.files import atomic_path

    with atomic_path(notebook) as tmp:
        nbformat.write(nb, tmp)


class PeakMemory:
    """The peak resident memory of this process's children (the notebook's kernel), sampled in a thread."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.peak_bytes = every_s, 0
        self._stop = None

    def __enter__(self) -> PeakMemory:
        import threading

        try:
            import psutil  # a dependency of ipykernel
        except ImportError:
            return self
        me, self._stop = psutil.Process(), threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.every_s):
                total = 0
                for child in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += child.memory_info().rss
                self.peak_bytes = max(self.peak_bytes, total)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()


@contextlib.contextmanager
def environment_variables(**variables: str):
    """Environment variables set inside the block (kernels started there inherit them), restored after."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# what the runner and the notebooks wrote before owner files existed (adopted as the runner's)
RUN_DIR_NAMES = ("[0-9][0-9]_*", "manifest.json", "checkpoints", "*.ipynb")
FIGURE_NAMES = ("[0-9][0-9]_*", "manifest.json")


def run_notebooks(profile: str = "smoke", only: list[str] | None = None, device: str | None = None,
                  run_root: str | os.PathLike | None = None, figures_root: str | os.PathLike | None = None,
                  root: str | os.PathLike | None = None, overlay: str | None = None,
                  substitutions: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Execute the notebooks in order; stop at the first failure. Returns one record per notebook run.

    `overlay`: a params file merged over the profile's (its `environment:` goes to the kernels)."""
    import papermill

    root = Path(root) if root is not None else find_repo_root()
    params = load_params(profile, root, overlay, substitutions)
    environment = {k: str(v) for k, v in (params.pop("environment", None) or {}).items()}
    books = numbered_notebooks(root, only)
    if profile != "smoke":  # the full profile never substitutes: every input is checked before anything runs
        from clipseg_lab.preflight import check

        with environment_variables(**environment):
            check([(b.stem, notebook_parameters(b, params, profile=profile, device=device)) for b in books],
                  root / "notebooks")
    run_root = Path(run_root or root / "papermill_runs" / profile).resolve()
    figures_root = Path(figures_root or root / "figures" / profile).resolve()
    # the runner's folders (clipseg_lab.ownership): a folder of another command, or one no clipseg-lab command
    # wrote, is refused; our own (committed ones too) are rewritten notebook by notebook
    owners = {folder: claim(folder, "notebooks", {"profile": profile, "overlay": overlay}, resume=True, legacy=legacy,
                            option=option)
              for folder, legacy, option in ((run_root, RUN_DIR_NAMES, "--run-dir"),
                                             (figures_root, FIGURE_NAMES, "--figures-dir"))}
    manifest = {
        "profile": profile, "overlay": overlay, "commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "packages": package_versions(), "backbone": params.get("backbone"), "device": device or params.get("device"),
        "notebooks": [],
    }
    previous = run_root / "manifest.json"
    if only and previous.is_file():  # a partial run keeps the records of the notebooks it did not run
        import json

        names = {b.name for b in books}
        kept = [r for r in json.loads(previous.read_text()).get("notebooks", []) if r.get("notebook") not in names]
        manifest["earlier_records"] = kept
    for book in books:
        # folders relative to the notebook's own (papermill's cwd), so executed copies name no machine paths
        values = notebook_parameters(book, params, profile=profile, device=device,
                                     run_dir=os.path.relpath(run_root, book.parent),
                                     figures_dir=os.path.relpath(figures_root, book.parent))
        record: dict[str, Any] = {"notebook": book.name, "parameters": values, "status": "running",
                                  "commit": manifest["commit"]}
        manifest["notebooks"].append(record)
        write_json(run_root / "manifest.json", manifest)
        log.info("running %s", book.name)
        start, memory = time.perf_counter(), PeakMemory()
        # papermill saves after every cell: it writes a staging name, renamed once the run ends, so a kill never
        # leaves a half-executed copy under the notebook's name
        staging = run_root / f".{book.stem}.running.ipynb"
        try:
            # TQDM_DISABLE: progress bars would leave "0%" text in the executed copies
            with environment_variables(TQDM_DISABLE="1", **environment), memory:
                papermill.execute_notebook(str(book), str(staging), parameters=values,
                                           cwd=str(book.parent), kernel_name="python3", progress_bar=False)
            record["status"] = "ok"
        except papermill.PapermillExecutionError as exc:
            record.update(status="failed", cell=exc.exec_count, error=f"{exc.ename}: {exc.evalue}")
        except Exception as exc:  # kernel died, notebook unreadable, ...
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if staging.is_file():  # the failed run's copy too: it shows the failing cell
            os.replace(staging, run_root / book.name)
        record["seconds"] = round(time.perf_counter() - start, 2)
        if memory.peak_bytes:
            record["peak_memory_mib"] = round(memory.peak_bytes / 2**20)
        if (run_root / book.name).is_file():
            shrink_embedded_images(run_root / book.name)
        write_json(run_root / "manifest.json", manifest)
        for folder, ownership in owners.items():  # whatever appeared at the top level is this run's
            ownership.record(*(p for p in folder.iterdir() if p.name != OWNER_FILE))
        print(f"{book.name}: {record['status']} in {record['seconds']:.1f} s"
              + (f" -- cell {record.get('cell')}: {record['error']}" if record["status"] != "ok" else ""), flush=True)
        if record["status"] != "ok":
            skipped = [b.name for b in books[books.index(book) + 1:]]
            manifest["skipped_after_failure"] = skipped
            write_json(run_root / "manifest.json", manifest)
            break
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(run_root / "manifest.json", manifest)
    return manifest["notebooks"]
