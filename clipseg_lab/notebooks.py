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

from clipseg_lab.files import write_json
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


def load_params(profile: str, root: Path) -> dict[str, Any]:
    path = root / "params" / f"{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no parameters for profile {profile!r} (expected params/smoke.yaml or "
                                "params/full.yaml)")
    return yaml.safe_load(path.read_text()) or {}


def numbered_notebooks(root: Path, only: list[str] | None = None) -> list[Path]:
    books = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.zfill(2) for o in only}
        unknown = wanted - {b.name[:2] for b in books}
        if unknown:
            raise ValueError(f"no notebook numbered {sorted(unknown)}; there are {[b.name for b in books]}")
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


def compact_png(data: bytes, max_side: int | None = None) -> bytes:
    """A PNG re-encoded light: RGB quantised to 256 colours (no dithering: flat areas stay flat), optionally
    scaled down to `max_side`; text chunks (provenance) are kept."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.open(io.BytesIO(data))
    info = PngInfo()
    for key, value in (getattr(image, "text", None) or {}).items():
        info.add_text(key, value)
    rgb = image.convert("RGB")
    if max_side and max(rgb.size) > max_side:
        scale = max_side / max(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.LANCZOS)
    out = io.BytesIO()
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, "PNG", optimize=True,
                                                                                   pnginfo=info)
    return out.getvalue() if out.tell() < len(data) else data


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


@contextlib.contextmanager
def _environment(**variables: str):
    """Environment variables for the kernels started inside the block (they inherit os.environ)."""
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


def run_notebooks(profile: str = "smoke", only: list[str] | None = None, device: str | None = None,
                  run_root: str | os.PathLike | None = None, figures_root: str | os.PathLike | None = None,
                  root: Path | None = None) -> list[dict[str, Any]]:
    """Execute the notebooks in order; stop at the first failure. Returns one record per notebook run."""
    import papermill

    root = root or find_repo_root()
    params = load_params(profile, root)
    run_root = Path(run_root or root / "papermill_runs" / profile).resolve()
    figures_root = Path(figures_root or root / "figures" / profile).resolve()
    run_root.mkdir(parents=True, exist_ok=True)
    figures_root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "profile": profile, "commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "packages": package_versions(), "backbone": params.get("backbone"), "device": device or params.get("device"),
        "notebooks": [],
    }
    books = numbered_notebooks(root, only)
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
        start = time.perf_counter()
        try:
            with _environment(TQDM_DISABLE="1"):  # progress bars would leave "0%" text in the executed copies
                papermill.execute_notebook(str(book), str(run_root / book.name), parameters=values,
                                           cwd=str(book.parent), kernel_name="python3", progress_bar=False)
            record["status"] = "ok"
        except papermill.PapermillExecutionError as exc:
            record.update(status="failed", cell=exc.exec_count, error=f"{exc.ename}: {exc.evalue}")
        except Exception as exc:  # kernel died, notebook unreadable, ...
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        record["seconds"] = round(time.perf_counter() - start, 2)
        if (run_root / book.name).is_file():
            shrink_embedded_images(run_root / book.name)
        write_json(run_root / "manifest.json", manifest)
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
