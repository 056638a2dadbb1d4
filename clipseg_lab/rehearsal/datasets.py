"""Small datasets in the real on-disk layouts, for the rehearsal of the full profile.

`build_datasets(root, samples)` writes, under `root` (the folder the full profile calls `../data` from
`notebooks/`), one folder per dataset in the layout its loader (`clipseg_lab.data`) and its users read:

    phrasecut/          refer_{train,val,test}.json, refer_input_{train,val,test}.json, image_data_split.json,
                        images/<image_id>.jpg                                    (VGPhraseCut_v0)
    oxford-iiit-pet/    images/<name>.jpg, annotations/trimaps/<name>.png,
                        annotations/list.txt, annotations/trainval.txt, annotations/test.txt   (the release)
    refcoco/            refcoco/refs(unc).p, refcoco/refs(google).p, refcoco/instances.json, refcoco+/...,
                        refcocog/..., images/train2014/COCO_train2014_<12-digit id>.jpg   (the refer toolkit)
    potsdam/            img_dir/val/<tile>.png, ann_dir/val/<tile>.png   (mmseg; isprs-index: 0 ignore, 1..6)
    vaihingen/          the same, with 3-band IRRG false-colour images (as configs/zeroshot/vaihingen.yaml reads)
    rehearsal_datasets.json   what each folder holds (real or generated, and why) and its files

What is real comes from the project's samples (`../shared/data`, see its SOURCES.md): the Oxford Pet images
and trimaps, the RefCOCO annotations (not their images: COCO JPEGs of the annotated sizes are written with
stand-in pixels), the Potsdam crop. The rest is generated: PhraseCut always (no real sample exists), Vaihingen
from the Potsdam crop, and everything when `samples` is None or missing. `BuiltDatasets.notes` says which,
per dataset.

Everything is a pure function of (samples, seed, sizes): every file is encoded in memory and written
atomically only when its bytes differ from what is on disk, so a rerun with the same arguments rewrites
nothing (mtimes unchanged); files a previous build listed in the manifest and this one does not are removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipseg_lab.files import atomic_path, load_data_pickle

log = logging.getLogger(__name__)

MANIFEST = "rehearsal_datasets.json"
FORMAT_VERSION = 1
# registry name -> folder under root (the names params/full.yaml uses: ../data/<folder>)
FOLDERS = {"phrasecut": "phrasecut", "oxford_pet": "oxford-iiit-pet", "refcoco": "refcoco", "potsdam": "potsdam",
           "vaihingen": "vaihingen"}
PHRASECUT_SPLITS = ("train", "val", "test")
# phrasecut: tasks per split; oxford_pet: images (None: every sample, or 18 generated); refcoco: generated
# COCO images (the real sample keeps its own 4); potsdam / vaihingen: tiles
DEFAULT_SIZES: dict[str, Any] = {"phrasecut": {"train": 24, "val": 8, "test": 8}, "oxford_pet": None, "refcoco": 4,
                                 "potsdam": 3, "vaihingen": 3}
MINIMUM_SIZES = {"oxford_pet": 8, "refcoco": 4, "potsdam": 1, "vaihingen": 1}  # pet: a non-empty val; refcoco: 4 splits
GENERATED_PETS = 18
TASKS_PER_IMAGE = 3  # PhraseCut tasks kept per generated image (Visual Genome averages about 4.5 phrases)

VG_SIZES = ((500, 375), (800, 600), (500, 333), (375, 500), (1024, 768), (500, 500), (640, 480), (333, 500))
COCO_SIZES = ((640, 480), (640, 427), (612, 612), (480, 640), (640, 424), (500, 375))
PET_SIZES = ((500, 375), (600, 400), (500, 333), (375, 500), (700, 475), (400, 500))
# The first lines of the release's annotations/list.txt, as published (its typos included)
PET_LIST_HEADER = ("#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog",
                   "#BREED ID: 1-25:Cat 1:12:Dog", "#All images with 1st letter as captial are cat images",
                   "#images with small first letter are dog images")
# Tile variants: a real tile, then flips / rotations of it (the dihedral group of the square)
VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "": lambda a: a, "fliplr": lambda a: a[:, ::-1], "flipud": lambda a: a[::-1], "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2), "rot270": lambda a: np.rot90(a, 3), "transpose": lambda a: np.swapaxes(a, 0, 1),
    "transverse": lambda a: np.rot90(a, 2).swapaxes(0, 1)}
# SyntheticShapes semantic classes (0 background, 1 circle, 2 square, 3 triangle, 255 edge band) -> isprs-index
SHAPES_TO_ISPRS = {0: 1, 1: 4, 2: 2, 3: 5, 255: 0}  # impervious surface, tree, building, car; edges ignored
PHOTOS = ("chelsea", "astronaut", "coffee")  # scikit-image's bundled photos
TINT_COLOURS = ((220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 210, 40))  # RefCOCO stand-ins: objects by category


class BuiltDatasets(dict):
    """`{name: folder}` (registry names: phrasecut, oxford_pet, refcoco, potsdam, vaihingen), with

    * `notes[name]`: one line on what is real and what was generated;
    * `origin[name]`: "real", "real annotations, stand-in images", "real + derived", "stand-in" or "generated";
    * `options[name]`: what to pass to `open_dataset` besides root and split (RefCOCO's `image_dir`);
    * `counts[name]`: files written, unchanged and removed by this call; `manifest`: the manifest's path.
    """

    def __init__(self) -> None:
        super().__init__()
        self.notes: dict[str, str] = {}
        self.origin: dict[str, str] = {}
        self.options: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.manifest: Path | None = None

    @property
    def written(self) -> int:
        return sum(c["written"] + c["removed"] for c in self.counts.values())


@dataclass
class _Build:
    origin: str
    note: str
    files: dict[str, bytes] = field(default_factory=dict)  # posix path inside the dataset folder -> bytes
    options: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


# -- entry point ---------------------------------------------------------------------------------------------
def build_datasets(root: str | Path, samples: str | Path | None, *, seed: int = 0,
                   sizes: Mapping[str, Any] | None = None) -> BuiltDatasets:
    """Write the rehearsal's datasets under `root` from the real samples in `samples` (the project's
    `../shared/data`) where present, generated otherwise; see the module docstring. `sizes` caps the work
    (keys of `DEFAULT_SIZES`; `phrasecut` takes tasks per split as a dict, or one number for each split)."""
    root = Path(root)
    caps = resolve_sizes(sizes)
    source = Path(samples).expanduser() if samples else None
    if source is not None and not source.is_dir():
        log.info("%s: no samples folder; every rehearsal dataset is generated", source)
        source = None
    builders: dict[str, Callable[[], _Build]] = {
        "phrasecut": lambda: _phrasecut(seed, caps["phrasecut"]),
        "oxford_pet": lambda: _oxford_pet(seed, caps["oxford_pet"], source),
        "refcoco": lambda: _refcoco(seed, caps["refcoco"], source, root / FOLDERS["refcoco"]),
        "potsdam": lambda: _tiles("potsdam", seed, caps["potsdam"], source),
        "vaihingen": lambda: _tiles("vaihingen", seed, caps["vaihingen"], source),
    }
    previous = _read_manifest(root / MANIFEST)
    result = BuiltDatasets()
    manifest: dict[str, Any] = {"format": FORMAT_VERSION, "seed": seed, "sizes": caps,
                                "samples": str(source) if source else None, "datasets": {}}
    for name, build in builders.items():
        built = build()
        folder = root / FOLDERS[name]
        counts = {"written": 0, "unchanged": 0, "removed": 0}
        for rel, data in sorted(built.files.items()):
            counts["written" if write_if_changed(folder / rel, data) else "unchanged"] += 1
        for rel in sorted(set(previous.get(name, {}).get("files", [])) - set(built.files)):
            stale = folder / rel
            if ".." not in Path(rel).parts and not Path(rel).is_absolute() and stale.is_file():
                stale.unlink()
                counts["removed"] += 1
        result[name] = folder
        result.notes[name], result.origin[name], result.options[name] = built.note, built.origin, built.options
        result.counts[name] = counts
        manifest["datasets"][name] = {"folder": FOLDERS[name], "origin": built.origin, "note": built.note,
                                      "options": built.options, "summary": built.summary,
                                      "files": sorted(built.files)}
        log.info("%s: %s (%d written, %d unchanged, %d removed)", folder, built.origin, counts["written"],
                 counts["unchanged"], counts["removed"])
    result.manifest = root / MANIFEST
    write_if_changed(result.manifest, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return result


def resolve_sizes(sizes: Mapping[str, Any] | None) -> dict[str, Any]:
    """`DEFAULT_SIZES` with `sizes` applied; unknown keys and sizes too small to fill the splits are errors."""
    caps = json.loads(json.dumps(DEFAULT_SIZES))
    for key, value in (sizes or {}).items():
        if key not in caps:
            raise ValueError(f"sizes: unknown key {key!r}; known: {', '.join(caps)}")
        if key == "phrasecut":
            value = dict.fromkeys(PHRASECUT_SPLITS, value) if isinstance(value, int) else dict(value)
            unknown = set(value) - set(PHRASECUT_SPLITS)
            if unknown:
                raise ValueError(f"sizes['phrasecut']: unknown split(s) {sorted(unknown)}; known: {PHRASECUT_SPLITS}")
            caps[key].update(value)
        else:
            caps[key] = value
    for split, n in caps["phrasecut"].items():
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"sizes['phrasecut'][{split!r}] must be a positive number of tasks, not {n!r}")
    for key, least in MINIMUM_SIZES.items():
        n = caps[key]
        if n is None and key == "oxford_pet":
            continue
        if not isinstance(n, int) or n < least:
            raise ValueError(f"sizes[{key!r}] must be a whole number >= {least}, not {n!r}"
                             + (" (a smaller Pet set leaves the val split empty)" if key == "oxford_pet" else "")
                             + (" (one image for each of train / val / testA / testB)" if key == "refcoco" else ""))
    return caps


# -- writing -------------------------------------------------------------------------------------------------
def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` to `path` atomically unless the file already holds exactly these bytes; True if written."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return True


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()).get("datasets", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(array))
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _sub_seed(seed: int, *parts: Any) -> int:
    """A stable non-negative seed for one part of one dataset (independent of Python's hash salt)."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "big")


# -- scenes --------------------------------------------------------------------------------------------------
@dataclass
class _Object:
    kind: str
    colour: str
    cx: float
    mask: np.ndarray  # visible pixels in the cropped image


def _render(seed: int, index: int, width: int, height: int) -> tuple[np.ndarray, list[_Object]]:
    """A SyntheticShapes scene rendered square at max(width, height), centre-cropped to width x height, and its
    shapes that stay visible (at least 0.2 % of the image), as in a photo whose objects the frame cuts."""
    from clipseg_lab.data.synthetic import SyntheticShapes

    size = max(width, height)
    image, shapes, labels = SyntheticShapes(num_scenes=1, size=size, seed=seed, radius=(0.09, 0.16)).scene(index)
    top, left = (size - height) // 2, (size - width) // 2
    image = np.ascontiguousarray(image[top:top + height, left:left + width])
    labels = labels[top:top + height, left:left + width]
    least = max(64, int(0.002 * width * height))
    objects = [_Object(s.kind, s.colour, s.cx - left, labels == k) for k, s in enumerate(shapes)]
    return image, [o for o in objects if int(o.mask.sum()) >= least]


def _rendered_scenes(seed: int, sizes: tuple[tuple[int, int], ...]):
    """Scenes 0, 1, 2, ... of `seed`, each at the next of `sizes`, that keep at least one visible object."""
    used = 0
    for index in range(10_000):
        width, height = sizes[used % len(sizes)]
        image, objects = _render(seed, index, width, height)
        if objects:
            used += 1
            yield image, objects
    raise RuntimeError(f"SyntheticShapes seed {seed}: no usable scene in 10000")  # pragma: no cover


def _contours(mask: np.ndarray, convention: str) -> list[np.ndarray]:
    """Outlines of a mask's parts as (N, 2) arrays of (x, y), simplified (0.6 px) and clipped to the image.

    "coco": corner coordinates (pixel (c, r) covers [c, c + 1) x [r, r + 1)), the outline between the pixels in
    and out, as pycocotools rasterises it; "centres": through the centres of the outermost pixels, which is what
    PhraseCut's `polygons_to_mask` (PIL's polygon fill with its outline) turns back into the same pixels.
    """
    from skimage import measure

    h, w = mask.shape
    level, offset = (0.5, 0.5) if convention == "coco" else (0.999, 0.0)
    out = []
    for contour in measure.find_contours(np.pad(mask, 1).astype(np.float32), level):
        contour = measure.approximate_polygon(contour, tolerance=0.6)
        if len(contour) > 1 and np.allclose(contour[0], contour[-1]):
            contour = contour[:-1]
        if len(contour) < 3:
            continue
        xy = np.round(contour[:, ::-1] - 1 + offset, 2)
        xy[:, 0] = xy[:, 0].clip(0, w - 1 + 2 * offset)
        xy[:, 1] = xy[:, 1].clip(0, h - 1 + 2 * offset)
        out.append(xy)
    return out


def _box(mask: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(mask)
    x, y = int(cols.min()), int(rows.min())
    return [x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1]


# -- PhraseCut -----------------------------------------------------------------------------------------------
def _phrasecut_tasks(image_id: int, objects: list[_Object]) -> list[dict[str, Any]]:
    """PhraseCut tasks on one image: one per object ("red circle", or "red circle left of square" for the
    leftmost object on every other image), plus one multi-instance task ("circle") per kind seen twice."""
    kinds = Counter(o.kind for o in objects)
    ann_ids = [image_id * 10 + k for k in range(len(objects))]
    relation = None
    if len(objects) >= 2 and image_id % 2 == 0:
        order = sorted(range(len(objects)), key=lambda k: objects[k].cx)
        relation = (order[0], order[1])
    groups: list[tuple[list[int], str, dict[str, Any]]] = []
    for k, o in enumerate(objects):
        structure = {"name": o.kind, "attributes": [o.colour], "relation_ids": [], "relation_descriptions": [],
                     "type": "attribute" if kinds[o.kind] > 1 else "name"}
        phrase = f"{o.colour} {o.kind}"
        if relation and relation[0] == k:
            anchor = objects[relation[1]].kind
            phrase += f" left of {anchor}"
            structure.update(relation_ids=[ann_ids[k] * 10 + 1], relation_descriptions=[["left of", anchor]],
                             type="relation")
        groups.append(([k], phrase, structure))
    for kind, n in sorted(kinds.items()):  # second in the list, so that a cap of tasks per image keeps it
        if n > 1:
            members = [k for k, o in enumerate(objects) if o.kind == kind]
            groups.insert(1, (members, kind, {"name": kind, "attributes": [], "relation_ids": [],
                                              "relation_descriptions": [], "type": "name"}))
    tasks = []
    for members, phrase, structure in groups:
        ids = [ann_ids[k] for k in members]
        polygons = [[c.tolist() for c in _contours(objects[k].mask, "centres")] for k in members]
        tasks.append({"task_id": f"{image_id}__{'_'.join(map(str, ids))}", "image_id": image_id, "ann_ids": ids,
                      "instance_boxes": [_box(objects[k].mask) for k in members], "Polygons": polygons,
                      "phrase": phrase, "phrase_structure": structure})
    return tasks


def _phrasecut(seed: int, caps: Mapping[str, int]) -> _Build:
    build = _Build("generated", "")
    info, counts, image_id = [], {}, 2_400_000 + 1_000 * (seed % 1_000)
    sizes_used: Counter[tuple[int, int]] = Counter()
    for split_index, split in enumerate(PHRASECUT_SPLITS):
        tasks: list[dict[str, Any]] = []
        scenes = _rendered_scenes(_sub_seed(seed, "phrasecut", split_index), VG_SIZES)
        while len(tasks) < caps[split]:
            image, objects = next(scenes)
            image_id += 1
            height, width = image.shape[:2]
            sizes_used[(width, height)] += 1
            build.files[f"images/{image_id}.jpg"] = _encode(image, "JPEG")
            info.append({"image_id": image_id, "split": split, "width": width, "height": height, "url": None,
                         "coco_id": None, "flickr_id": None})
            tasks += _phrasecut_tasks(image_id, objects)[:min(TASKS_PER_IMAGE, caps[split] - len(tasks))]
        counts[split] = {"tasks": len(tasks), "images": len({t["image_id"] for t in tasks})}
        build.files[f"refer_{split}.json"] = json.dumps(tasks).encode()
        inputs = [{k: t[k] for k in ("task_id", "image_id", "phrase", "phrase_structure")} for t in tasks]
        build.files[f"refer_input_{split}.json"] = json.dumps(inputs).encode()
    build.files["image_data_split.json"] = json.dumps(info).encode()
    shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes_used))
    split_text = " / ".join(f"{s} {c['tasks']} tasks on {c['images']} images" for s, c in counts.items())
    build.note = (f"generated (no real PhraseCut sample exists): {split_text}; SyntheticShapes scenes cropped to "
                  f"Visual Genome sizes ({shown}) as JPEGs, shape outlines as Polygons (per instance, lists of "
                  "[x, y] polygons), phrases such as 'red circle', 'red circle left of square' and multi-instance "
                  "'circle'; the VGPhraseCut_v0 fields (task_id, image_id, ann_ids, instance_boxes, Polygons, phrase, "
                  "phrase_structure), refer_input_<split>.json and image_data_split.json")
    build.summary = {"splits": counts, "image_sizes": shown}
    return build


# -- Oxford-IIIT Pet -----------------------------------------------------------------------------------------
def _pet_split(entries: list[tuple[str, int]], seed: int) -> set[str]:
    """The test names: a seeded third of each species (sorted names, shuffled), so both splits hold both."""
    test: set[str] = set()
    for species in sorted({s for _, s in entries}):
        names = sorted(n for n, s in entries if s == species)
        order = [names[i] for i in np.random.default_rng([seed, species]).permutation(len(names))]
        test.update(order[:int(round(len(names) / 3)) if len(names) > 1 else 0])
    return test


def _pet_files(build: _Build, lines: dict[str, str], seed: int) -> dict[str, int]:
    """list.txt (header + lines), trainval.txt and test.txt (lines only, as released) for `lines` {name: line}."""
    def order(name: str) -> tuple[int, str]:
        return int(lines[name].split()[1]), name

    species = {name: int(line.split()[2]) for name, line in lines.items()}
    test = _pet_split(sorted(species.items()), seed)
    names = sorted(lines, key=order)
    trainval = [n for n in names if n not in test]
    build.files["annotations/list.txt"] = ("\n".join(PET_LIST_HEADER + tuple(lines[n] for n in names)) + "\n").encode()
    build.files["annotations/trainval.txt"] = ("\n".join(lines[n] for n in trainval) + "\n").encode()
    build.files["annotations/test.txt"] = ("\n".join(lines[n] for n in names if n in test) + "\n").encode()
    return {"trainval": len(trainval), "test": len(test), "cats": sum(s == 1 for s in species.values()),
            "dogs": sum(s == 2 for s in species.values())}


def _pick(names_species: list[tuple[str, int]], cap: int | None, seed: int) -> set[str]:
    """`cap` names, the species in proportion (at least one of each present), seeded; all when cap is None."""
    names = {n for n, _ in names_species}
    if cap is None or cap >= len(names):
        return names
    by_species: dict[int, list[str]] = {}
    for n, s in sorted(names_species):
        by_species.setdefault(s, []).append(n)
    chosen: set[str] = set()
    for s, group in sorted(by_species.items()):
        share = max(1, int(round(cap * len(group) / len(names))))
        order = [group[i] for i in np.random.default_rng([seed, 17, s]).permutation(len(group))]
        chosen.update(order[:share])
    return set(sorted(chosen)[:cap]) if len(chosen) > cap else chosen


def _oxford_pet(seed: int, cap: int | None, samples: Path | None) -> _Build:
    source = samples / "oxford_pet" if samples else None
    if source is not None and (source / "annotations" / "list.txt").is_file():
        return _oxford_pet_real(seed, cap, source)
    why = f"no Oxford-IIIT Pet sample at {source}" if source else "no samples folder"
    return _oxford_pet_generated(seed, cap or GENERATED_PETS, why)


def _oxford_pet_real(seed: int, cap: int | None, source: Path) -> _Build:
    lines = {}
    for line in (source / "annotations" / "list.txt").read_text().splitlines():
        parts = line.split()
        if line.startswith("#") or len(parts) < 4:
            continue
        if (source / "images" / f"{parts[0]}.jpg").is_file() and \
                (source / "annotations" / "trimaps" / f"{parts[0]}.png").is_file():
            lines[parts[0]] = " ".join(parts[:4])
    chosen = _pick([(n, int(line.split()[2])) for n, line in lines.items()], cap, seed)
    lines = {n: lines[n] for n in chosen}
    build = _Build("real", "")
    for name in sorted(lines):
        build.files[f"images/{name}.jpg"] = (source / "images" / f"{name}.jpg").read_bytes()
        trimap = source / "annotations" / "trimaps" / f"{name}.png"
        build.files[f"annotations/trimaps/{name}.png"] = trimap.read_bytes()
    split = _pet_files(build, lines, seed)
    build.summary = split
    build.note = (f"real: {len(lines)} Oxford-IIIT Pet images and trimaps ({split['cats']} cats, {split['dogs']} "
                  f"dogs) copied byte for byte from {source}, list.txt lines real; made here: list.txt's release "
                  f"header and the split files trainval.txt ({split['trainval']}) / test.txt ({split['test']}), a "
                  f"seeded third of each species as test (seed {seed}; the release has no split of these samples)")
    return build


def _oxford_pet_generated(seed: int, count: int, why: str) -> _Build:
    from scipy import ndimage

    build = _Build("generated", "")
    lines = {}
    scenes = _rendered_scenes(_sub_seed(seed, "oxford_pet"), PET_SIZES)
    for i in range(count):
        image, objects = next(scenes)
        want_dog = i % 3 == 2  # about the release's cat / dog balance (a third dogs)
        kinds = ("square",) if want_dog else ("circle", "triangle")
        candidates = [o for o in objects if o.kind in kinds] or objects
        pet = max(candidates, key=lambda o: int(o.mask.sum()))
        species = 2 if pet.kind == "square" else 1
        name = f"{'shapedog' if species == 2 else 'Shapecat'}_{i + 1}"  # release names: capital = cat
        band = ndimage.binary_dilation(pet.mask, iterations=2) & ~ndimage.binary_erosion(pet.mask, iterations=2)
        trimap = np.full(pet.mask.shape, 2, np.uint8)
        trimap[pet.mask] = 1
        trimap[band] = 3
        build.files[f"images/{name}.jpg"] = _encode(image, "JPEG")
        build.files[f"annotations/trimaps/{name}.png"] = _encode(trimap, "PNG")
        lines[name] = f"{name} {species} {species} 1"
    split = _pet_files(build, lines, seed)
    build.summary = split
    build.note = (f"generated ({why}): {count} SyntheticShapes scenes at Oxford Pet sizes as JPEGs, the largest "
                  "circle / triangle a 'cat' and square a 'dog', with trimaps (1 pet, 2 background, 3 a 2-pixel "
                  f"boundary band each side); list.txt with the release header ({split['cats']} cats, "
                  f"{split['dogs']} dogs), trainval.txt ({split['trainval']}) / test.txt ({split['test']})")
    return build


# -- RefCOCO -------------------------------------------------------------------------------------------------
def _photo(index: int, width: int, height: int) -> np.ndarray:
    import skimage.data

    photo = getattr(skimage.data, PHOTOS[index % len(PHOTOS)])()
    return np.asarray(Image.fromarray(photo).convert("RGB").resize((width, height), Image.Resampling.BICUBIC))


def _tint(image: np.ndarray, masks: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """The annotated objects tinted by category (so a gallery shows where they are on a stand-in photo)."""
    out = image.astype(np.float32)
    for category, mask in masks:
        colour = np.array(TINT_COLOURS[category % len(TINT_COLOURS)], np.float32)
        out[mask] = 0.55 * out[mask] + 0.45 * colour
    return np.clip(out, 0, 255).astype(np.uint8)


def _refcoco(seed: int, count: int, samples: Path | None, folder: Path) -> _Build:
    source = samples / "refcoco" / "refer_format" if samples else None
    if source is not None and (source / "refcoco" / "refs(unc).p").is_file() and \
            (source / "refcoco" / "instances.json").is_file():
        splits = Counter(r["split"] for r in load_data_pickle(source / "refcoco" / "refs(unc).p"))
        if splits["train"] and splits["val"]:
            return _refcoco_real(source, folder, splits)
        why = f"the sample at {source} has no {'train' if not splits['train'] else 'val'} refs in refcoco(unc)"
    else:
        why = f"no RefCOCO sample at {source}" if source else "no samples folder"
    return _refcoco_generated(seed, count, folder, why)


def _refcoco_real(source: Path, folder: Path, splits: Counter) -> _Build:
    from clipseg_lab.data.masks import coco_segmentation_to_mask

    build = _Build("real annotations, stand-in images", "")
    images: dict[int, dict[str, Any]] = {}
    anns: dict[int, dict[str, Any]] = {}
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source).as_posix()
        build.files[rel] = path.read_bytes()
        if path.name == "instances.json":
            data = json.loads(build.files[rel])
            for im in data["images"]:
                known = images.setdefault(im["id"], im)
                if any(known[k] != im[k] for k in ("width", "height", "file_name")):
                    raise ValueError(f"{path}: image {im['id']} differs from another instances.json of the sample")
            anns.update({a["id"]: a for a in data["annotations"]})
    for i, (image_id, im) in enumerate(sorted(images.items())):
        h, w = int(im["height"]), int(im["width"])
        masks = [(int(a["category_id"]), coco_segmentation_to_mask(a["segmentation"], h, w))
                 for _, a in sorted(anns.items()) if a["image_id"] == image_id]
        build.files[f"images/train2014/{im['file_name']}"] = _encode(_tint(_photo(i, w, h), masks), "JPEG")
    build.options = {"image_dir": str(folder / "images" / "train2014")}
    shown = ", ".join(f"{s} {n}" for s, n in sorted(splits.items()))
    sizes = ", ".join(f"{im['width']}x{im['height']}" for _, im in sorted(images.items()))
    build.summary = {"refcoco_unc_refs": dict(splits), "images": len(images)}
    build.note = (f"real annotations: {source} copied (refcoco refs(unc).p / refs(google).p, refcoco+, refcocog, "
                  f"instances.json); refcoco(unc) refs per split: {shown}. The {len(images)} COCO train2014 JPEGs "
                  f"({sizes}, the annotated sizes) are stand-ins: scikit-image photos resized, the annotated objects "
                  "tinted; their pixels are not COCO's")
    return build


def _refcoco_generated(seed: int, count: int, folder: Path, why: str) -> _Build:
    build = _Build("generated", "")
    kinds = ("circle", "square", "triangle")
    categories = [{"supercategory": "shape", "id": i + 1, "name": k} for i, k in enumerate(kinds)]
    unc_splits = ["train", "val", "testA", "testB"] + ["train"] * (count - 4)
    images, annotations, refs = [], [], []
    scenes = _rendered_scenes(_sub_seed(seed, "refcoco"), COCO_SIZES)
    sent_id = 0
    for i in range(count):
        image, objects = next(scenes)
        height, width = image.shape[:2]
        image_id = 900_001 + i  # beyond COCO train2014's ids, so nobody takes them for real ones
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        build.files[f"images/train2014/{file_name}"] = _encode(image, "JPEG")
        images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": height, "width": width,
                       "date_captured": "", "flickr_url": "", "id": image_id})
        for k, o in enumerate(objects):
            ann_id = 3_000_000 + image_id * 10 + k
            polygons = [c.ravel().tolist() for c in _contours(o.mask, "coco")]
            annotations.append({"segmentation": polygons, "area": float(o.mask.sum()), "iscrowd": 0,
                                "image_id": image_id, "bbox": [float(v) for v in _box(o.mask)],
                                "category_id": kinds.index(o.kind) + 1, "id": ann_id})
            sentences = []
            for text in (f"{o.colour} {o.kind}", f"the {o.kind} that is {o.colour}"):
                sent_id += 1
                sentences.append({"tokens": text.split(), "raw": text.capitalize(), "sent_id": sent_id, "sent": text})
            refs.append({"sent_ids": [s["sent_id"] for s in sentences], "file_name": f"{file_name[:-4]}_{ann_id}.jpg",
                         "ann_id": ann_id, "ref_id": len(refs) + 1, "image_id": image_id, "split": unc_splits[i],
                         "sentences": sentences, "category_id": kinds.index(o.kind) + 1})
    instances = json.dumps({"images": images, "annotations": annotations, "categories": categories}).encode()
    # the refer toolkit's splits per (dataset, split_by); RefCOCO+ and RefCOCOg share the same generated refs
    layouts = {("refcoco", "unc"): {}, ("refcoco", "google"): {"testA": "test", "testB": "test"},
               ("refcoco+", "unc"): {}, ("refcocog", "umd"): {"testA": "test", "testB": "test"},
               ("refcocog", "google"): {"testA": "val", "testB": "val"}}
    for (dataset, split_by), rename in layouts.items():
        these = [{**r, "split": rename.get(r["split"], r["split"])} for r in refs]
        build.files[f"{dataset}/refs({split_by}).p"] = pickle.dumps(these, protocol=2)  # as the toolkit's files
        build.files[f"{dataset}/instances.json"] = instances
    build.options = {"image_dir": str(folder / "images" / "train2014")}
    splits = Counter(r["split"] for r in refs)
    shown = ", ".join(f"{s} {n}" for s, n in sorted(splits.items()))
    build.summary = {"refcoco_unc_refs": dict(splits), "images": count}
    build.note = (f"generated ({why}): {count} SyntheticShapes scenes at COCO sizes as COCO_train2014_<id>.jpg "
                  f"(ids from 900001, not COCO's), {len(annotations)} instances as COCO polygons in instances.json, "
                  f"{len(refs)} refs with 2 sentences each in refs(unc).p / refs(google).p (pickle protocol 2, as the "
                  f"refer toolkit's files) for refcoco, refcoco+ and refcocog (umd / google); refcoco(unc) refs per "
                  f"split: {shown}")
    return build


# -- Potsdam / Vaihingen -------------------------------------------------------------------------------------
def irrg_stand_in(rgb: np.ndarray) -> np.ndarray:
    """A 3-band IRRG false-colour image (infrared, red, green) from an RGB one, with a made-up infrared band
    (bright where green dominates red, as vegetation is in the near infrared): a stand-in for Vaihingen's."""
    r, g = rgb[..., 0].astype(np.int32), rgb[..., 1].astype(np.int32)
    nir = np.clip(g + 2 * (g - r) + 30, 0, 255)
    return np.stack([nir, r, g], axis=-1).astype(np.uint8)


def _tiles(name: str, seed: int, count: int, samples: Path | None) -> _Build:
    from clipseg_lab.images import open_image

    source = samples / "remote_sensing" / "potsdam" if samples else None
    pairs = []
    if source is not None and (source / "img_dir").is_dir():
        for image in sorted((source / "img_dir").rglob("*.png")):
            label = source / "ann_dir" / image.relative_to(source / "img_dir")
            if label.is_file():
                pairs.append((image, label))
    build = _Build("", "")
    if pairs:
        made = []
        for variant in VARIANTS:
            for image_path, label_path in pairs:
                if len(made) == count:
                    break
                stem = image_path.stem + (f"_{variant}" if variant else "")
                if name == "vaihingen":
                    stem = f"standin_{stem}"
                made.append(stem)
                image = VARIANTS[variant](np.asarray(open_image(image_path).convert("RGB")))
                label = VARIANTS[variant](np.asarray(open_image(label_path)))
                if name == "potsdam" and not variant:  # the real files themselves
                    build.files[f"img_dir/val/{stem}.png"] = image_path.read_bytes()
                    build.files[f"ann_dir/val/{stem}.png"] = label_path.read_bytes()
                    continue
                build.files[f"img_dir/val/{stem}.png"] = _encode(irrg_stand_in(image) if name == "vaihingen" else image,
                                                                 "PNG")
                build.files[f"ann_dir/val/{stem}.png"] = _encode(label, "PNG")
        real = [p.stem for p, _ in pairs]
        if name == "potsdam":
            derived = len(made) - min(len(real), len(made))
            build.origin = "real" if not derived else "real + derived"
            build.note = (f"real: the ISPRS Potsdam crop(s) {', '.join(real)} copied from {source} (isprs-index labels "
                          f"0 ignore, 1..6)" + (f"; {derived} more tile(s) are flips / rotations of it: "
                                                f"{', '.join(made[len(real):])}" if derived else ""))
        else:
            build.origin = "stand-in"
            build.note = (f"stand-in (no Vaihingen sample exists): {len(made)} tile(s) ({', '.join(made)}) made from "
                          f"the real Potsdam crop {', '.join(real)} ({source}) as 3-band IRRG false colour (infrared, "
                          "red, green) with a made-up infrared band computed from red and green; labels the Potsdam "
                          "ones (isprs-index). Not Vaihingen data")
        build.summary = {"tiles": made}
        return build
    from clipseg_lab.data.synthetic import SyntheticShapes

    why = f"no Potsdam sample at {source}" if source else "no samples folder"
    shapes = SyntheticShapes(count, size=512, seed=_sub_seed(seed, name), mode="semantic", max_shapes=5,
                             radius=(0.06, 0.14), ignore_band=2)
    lut = np.zeros(256, np.uint8)
    for value, index in SHAPES_TO_ISPRS.items():
        lut[value] = index
    made = []
    for i in range(count):
        sample = shapes[i]
        image = sample["image"].permute(1, 2, 0).numpy()
        stem = f"shapes_{i}_0_0_512_512"
        made.append(stem)
        build.files[f"img_dir/val/{stem}.png"] = _encode(irrg_stand_in(image) if name == "vaihingen" else image, "PNG")
        build.files[f"ann_dir/val/{stem}.png"] = _encode(lut[sample["mask"].numpy()], "PNG")
    build.origin = "generated"
    build.note = (f"generated ({why}): {count} semantic SyntheticShapes scenes (512x512) in mmseg layout, labels "
                  "mapped to ISPRS indices (background 1 impervious surface, square 2 building, circle 4 tree, "
                  "triangle 5 car, a 2-pixel edge band 0 ignore)"
                  + ("; images as IRRG false colour with a made-up infrared band" if name == "vaihingen" else ""))
    build.summary = {"tiles": made}
    return build
