"""Arrows point one way: every import in the package (module level or inside a function) goes to a lower layer
or stays inside its own subpackage. The layers are the flow the README's Layout lists: backbone, then data and
models, then the segmenter, then engine / zeroshot / stats, then viz, then the applications (notebooks, CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

import clipseg_lab

PACKAGE = Path(clipseg_lab.__file__).parent

# lowest first; a module may import from a lower layer or from its own top-level subpackage, not from a sibling
LAYERS: list[set[str]] = [
    {"errors"},
    {"files", "devices", "provenance", "images", "labels", "seeding", "configuration"},  # tools every layer uses
    {"ownership"},
    {"backbones"},
    {"data", "models", "losses", "metrics"},
    {"segmenter"},
    {"engine", "zeroshot", "stats"},
    {"viz"},
    {"preflight", "batch", "interactive", "doctor"},
    {"notebooks"},
    {"rehearsal"},
    {"cli"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def top_level(module: str) -> str:
    """`clipseg_lab.images` -> `data`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every clipseg_lab import in the file, relative ones resolved."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "clipseg_lab":  # `from clipseg_lab import viz`: the names are the modules
                found += [(node.lineno, f"clipseg_lab.{a.name}") for a in node.names]
            elif target.startswith("clipseg_lab."):
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("clipseg_lab.")]
    return found


def test_every_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("_")}
    assert names == set(LAYER_OF), f"give these a layer: {sorted(names - set(LAYER_OF))}; gone: " \
                                   f"{sorted(set(LAYER_OF) - names)}"


def test_no_import_runs_back_up_or_sideways():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = top_level(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if not here or here.startswith("_"):  # clipseg_lab/__init__.py: the lazy public surface
            continue
        for line, target in imports(path):
            there = top_level(target)
            if there != here and LAYER_OF.get(there, -1) >= LAYER_OF[here]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}, layer {LAYER_OF[here]}) "
                             f"imports {target} ({there}, layer {LAYER_OF.get(there)})")
    assert not wrong, "imports that run back up or sideways:\n" + "\n".join(wrong)
