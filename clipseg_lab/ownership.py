"""Who owns an output folder: every command that writes a folder leaves `.clipseg-lab-owner.json` in it, naming
the command, the run (a fingerprint of the inputs that decide the outputs) and the entries it wrote.

The rules every command follows (`claim`):
- a new or empty folder becomes the command's;
- a folder written by the same command for the same run is resumed (or, for commands that redo their work,
  rewritten in place);
- a folder of another command or another run is refused, unless `resume` (same command: the command checks what
  may continue) or `overwrite` (only the entries the owner file lists are removed, then the folder is taken over);
- a non-empty folder with no owner file is never written into: nothing in it is ours to replace.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipseg_lab.errors import OutputDirError
from clipseg_lab.files import json_safe, write_json

OWNER_FILE = ".clipseg-lab-owner.json"
FORMAT = 1


def fingerprint(inputs: Any) -> str:
    """A short, stable hash of the JSON form of `inputs` (what decides a run's outputs)."""
    text = json.dumps(json_safe(inputs), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


SEGMENT_MARKER = ".clipseg-lab-segment.json"  # `segment` keeps its own per-image records (clipseg_lab.batch)


def read_owner(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The owner record of `folder`, or None when it has none (or an unreadable one)."""
    folder = Path(folder)
    try:
        record = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        record = None
    if record is None and (folder / SEGMENT_MARKER).is_file():
        return {"command": "segment", "run": None, "entries": None}  # segment's files are for segment to replace
    return record if isinstance(record, dict) and "command" in record else None


@dataclass
class Ownership:
    folder: Path
    command: str
    run: str
    inputs: dict[str, Any]
    resumed: bool  # the folder held this run (or, with resume=True, an earlier run of this command)
    entries: list[str] = field(default_factory=list)  # paths relative to the folder; a trailing "/" marks a folder
    replaced: list[str] = field(default_factory=list)  # the overwritten owner's entries, until remove_replaced()

    def remove_replaced(self) -> None:
        """Delete the entries of the run this one overwrites (claim(..., defer_removal=True) waits for this call:
        a command that builds its outputs elsewhere first keeps the old ones until the new ones are ready)."""
        remove_entries(self.folder, self.replaced, keep_owner_file=True)
        self.replaced = []

    def record(self, *paths: str | os.PathLike) -> None:
        """Add outputs (absolute, or relative to the folder) to the owner file's list."""
        changed = False
        for path in paths:
            entry = _relative(self.folder, Path(path))
            if entry not in self.entries:
                self.entries.append(entry)
                changed = True
        if changed or not (self.folder / OWNER_FILE).is_file():
            self.write()

    def write(self) -> None:
        write_json(self.folder / OWNER_FILE, {
            "format": FORMAT, "command": self.command, "run": self.run, "inputs": json_safe(self.inputs),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entries": sorted(self.entries),
            "note": f"written by `clipseg-lab {self.command}`; --overwrite removes only the entries listed here"})


def _relative(folder: Path, path: Path) -> str:
    """`path` (absolute, relative to the working directory, or a name inside `folder`) as an entry of `folder`."""
    root = folder.resolve()
    candidates = [path] if path.is_absolute() else [path.resolve(), folder / path]  # the cwd's reading first
    for absolute in candidates:
        try:
            rel = absolute.resolve().relative_to(root)
        except ValueError:
            continue
        return rel.as_posix() + ("/" if absolute.is_dir() else "")
    raise OutputDirError(f"{path}: outside the output folder {folder}; outputs stay inside it")


def claim(folder: str | os.PathLike, command: str, inputs: dict[str, Any], *, resume: bool = False,
          overwrite: bool = False, option: str = "--out", legacy: tuple[str, ...] = (),
          write: bool = True, defer_removal: bool = False, can_resume: bool = True) -> Ownership:
    """Take `folder` for `command`'s run with these `inputs` (see the module docstring for the rules).

    `legacy`: the top-level names (fnmatch patterns) this command wrote before owner files existed; a folder
    holding only such names is adopted as this command's (an earlier, unknown run). `write=False` only decides
    (for the other ranks of a distributed run: the main process writes). `defer_removal`: an overwritten run's
    entries stay until `Ownership.remove_replaced()`. `can_resume`: whether the command takes --resume (the
    refusal's advice)."""
    folder = Path(folder).expanduser()
    inputs = json.loads(json.dumps(json_safe(inputs), sort_keys=True, default=str))  # as the owner file holds them
    run = fingerprint(inputs)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"{option} {folder}: exists and is not a folder; name a folder")
    owner = read_owner(folder) if folder.is_dir() else None
    present = sorted(p.name for p in folder.iterdir() if p.name != OWNER_FILE) if folder.is_dir() else []
    if owner is None and present and legacy and all(any(fnmatch.fnmatch(n, pat) for pat in legacy) for n in present):
        owner = {"command": command, "run": None, "entries": [f"{n}/" if (folder / n).is_dir() else n for n in present]}
    mine = Ownership(folder, command, run, inputs, resumed=False)
    if owner is None:
        if present:
            shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
            raise OutputDirError(f"{option} {folder}: a non-empty folder that no clipseg-lab command wrote (it holds "
                                 f"{shown} and no {OWNER_FILE}); nothing in it is ours to replace. Choose a new or "
                                 "empty folder")
    elif owner.get("command") == command and owner.get("run") == run:
        mine.resumed, mine.entries = True, list(owner.get("entries") or [])
    elif owner.get("command") == command and resume:
        mine.resumed, mine.entries = True, list(owner.get("entries") or [])
    elif overwrite and owner.get("entries") is None:
        raise OutputDirError(f"{option} {folder}: written by `clipseg-lab {owner.get('command')}`, which keeps its own "
                             "records there; --overwrite replaces only a clipseg-lab command's listed outputs. Choose "
                             "another folder")
    elif overwrite:
        mine.replaced = list(owner.get("entries") or [])
        if write and not defer_removal:
            mine.remove_replaced()
    else:
        theirs = f"`clipseg-lab {owner.get('command')}`"
        if owner.get("entries") is None:
            raise OutputDirError(f"{option} {folder}: written by {theirs}; choose another folder")
        if owner.get("command") != command:
            raise OutputDirError(f"{option} {folder}: written by {theirs}, not `clipseg-lab {command}`; choose another "
                                 f"folder, or pass --overwrite to remove that command's outputs (only the entries "
                                 f"{OWNER_FILE} lists) and write here")
        differ = (_differences(owner["inputs"], inputs) if "inputs" in owner
                  else "written before clipseg-lab kept owner files, so its settings are unknown")
        advice = "pass --resume to continue it with these settings, " if can_resume else "pass "
        raise OutputDirError(f"{option} {folder}: holds another run of {theirs}"
                             f"{' (' + differ + ')' if differ else ''}; {advice}--overwrite to replace its outputs "
                             f"(only the entries {OWNER_FILE} lists), or choose another folder")
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        mine.write()
    return mine


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """`key: old -> new` for the first few inputs that differ (dotted keys for nested ones)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), json_safe(new.get(key))
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{key}.")
            out += [inner] if inner else []
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return "; ".join(out[:3]) + ("; ..." if len(out) > 3 else "")


def remove_entries(folder: Path, entries: list[str], *, keep_owner_file: bool = False) -> None:
    """Delete the listed entries of `folder` (and folders they leave empty); never anything else. An entry that
    would lead outside the folder is skipped (a tampered owner file deletes nothing of anyone else's)."""
    root = folder.resolve()
    for entry in sorted(set(entries), key=len, reverse=True):
        path = folder / entry
        try:
            resolved = path.resolve()
            resolved.relative_to(root)
        except (ValueError, OSError):
            continue
        if resolved == root:
            continue
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        parent = path.parent
        while parent.resolve() != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    if not keep_owner_file:
        (folder / OWNER_FILE).unlink(missing_ok=True)
