"""Your own data: a folder of images and labels in one documented format, read and checked (data/README.md).

    DIR/rgb/<name>.(png|jpg|jpeg)
    DIR/<label>/<name>.(png|npy)   the label folder of the task:
        depth/   16-bit PNG in millimetres (``depth_scale`` stored units per metre, 0 = invalid) or float .npy
                 in metres (nan / 0 = invalid)
        normal/  8-bit RGB PNG, n = v / 255 * 2 - 1 (DSINE's encoding; all-zero = invalid) or float .npy [H, W, 3]
        mask/    8-bit PNG, > 127 = foreground (dis)
        alpha/   8-bit PNG, alpha = v / 255 (matting)
        seg/     8-bit single-channel PNG of class ids (255 = ignore), with DIR/classes.csv (id, name, r, g, b)
    DIR/train.txt, DIR/val.txt      optional: one <name> per line; otherwise a seeded 90 / 10 split

Items are the readers' dicts (``readers.py``): ``rgb`` [3, H, W] float32 in [0, 1], the label under the task's
key (``depth`` [H, W] metres, ``normal`` [3, H, W], ``mask`` / ``alpha`` [H, W] in [0, 1], ``semantic`` [H, W]
int64 class *indices*: the row of classes.csv, 255 = ignore), ``valid`` [H, W] bool, ``path`` and ``name``.

This module never imports the tasks: the caller names the label by its item key (``Task.label_key``) and passes
the task's resize mode and mirror function in. Every check is a one-line ``FolderError`` naming the file and
what was expected; ``FolderSet`` checks every file's kind and size when it opens (headers only: cheap), and the
pixel values (class ids) when a sample is read.
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..images import resize
from .readers import DatasetError

RGB_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABEL_FOLDERS = {"depth": "depth", "normal": "normal", "mask": "mask", "alpha": "alpha", "semantic": "seg"}
LABEL_EXTENSIONS = {"depth": (".png", ".npy"), "normal": (".png", ".npy"), "mask": (".png",),
                    "alpha": (".png",), "semantic": (".png",)}
EXPECTED = {
    "depth": "a 16-bit single-channel PNG in millimetres (value / --depth-scale = metres, 0 = invalid) or a "
             "float .npy [H, W] in metres (nan / 0 = invalid)",
    "normal": "an 8-bit RGB PNG (n = v / 255 * 2 - 1, all-zero = invalid) or a float .npy [H, W, 3]",
    "mask": "an 8-bit single-channel PNG (> 127 = foreground)",
    "alpha": "an 8-bit single-channel PNG (alpha = v / 255)",
    "semantic": "an 8-bit single-channel PNG of class ids listed in classes.csv (255 = ignore)",
}
IGNORE = 255
DEFAULT_DEPTH_SCALE = 1000.0  # stored PNG units per metre: millimetres
VAL_SHARE = 0.1               # the seeded split's validation share (no train.txt / val.txt)
SHOW = 3                      # names an error lists before "..."


class FolderError(DatasetError):
    """A folder or file not in the documented format (one line naming it and what was expected)."""


@dataclass(frozen=True)
class Sample:
    name: str
    rgb: Path
    label: Path


@dataclass(frozen=True)
class ClassTable:
    """classes.csv: ids as stored in the PNGs, names, colours [C, 3] in [0, 1]; row i is class index i."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: np.ndarray

    def as_json(self) -> list[dict]:
        return [{"id": i, "name": n, "rgb": [round(float(c) * 255) for c in col]}
                for i, n, col in zip(self.ids, self.names, self.colors)]


# --------------------------------------------------------------------------------------------------
# Finding the pairs
# --------------------------------------------------------------------------------------------------
def _first(names, n: int = SHOW) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _by_stem(folder: Path, extensions) -> dict[str, Path]:
    """stem -> file for the files of ``folder`` with one of ``extensions``; two files of one stem: an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        if path.stem in found:
            raise FolderError(f"{path}: {found[path.stem].name} has the same name; expected one file per <name>")
        found[path.stem] = path
    return found


def label_folder(label_key: str) -> str:
    if label_key not in LABEL_FOLDERS:
        raise FolderError(f"label {label_key!r} has no folder format: expected one of {', '.join(LABEL_FOLDERS)}")
    return LABEL_FOLDERS[label_key]


def list_pairs(root: Path, label_key: str) -> list[Sample]:
    """Every (image, label) pair of ``root``, by name; an unpaired file on either side is an error naming the
    first few and the count."""
    sub = label_folder(label_key)
    if not root.is_dir():
        raise FolderError(f"{root}: no such folder; expected DIR/rgb/<name>.(png|jpg|jpeg) and DIR/{sub}/<name>")
    images = _by_stem(root / "rgb", RGB_EXTENSIONS)
    if not images:
        raise FolderError(f"{root}: no images in {root / 'rgb'}; expected DIR/rgb/<name>.(png|jpg|jpeg) "
                          f"and DIR/{sub}/<name>.({'|'.join(e[1:] for e in LABEL_EXTENSIONS[label_key])})")
    labels = _by_stem(root / sub, LABEL_EXTENSIONS[label_key])
    lone = sorted(set(images) - set(labels))
    if lone:
        raise FolderError(f"{len(lone)} image(s) in {root / 'rgb'} have no label in {root / sub}: {_first(lone)} "
                          f"(expected {sub}/<name>.({'|'.join(e[1:] for e in LABEL_EXTENSIONS[label_key])}))")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise FolderError(f"{len(orphans)} label(s) in {root / sub} have no image in {root / 'rgb'}: "
                          f"{_first(orphans)} (expected rgb/<name>.(png|jpg|jpeg))")
    return [Sample(n, images[n], labels[n]) for n in sorted(images)]


def read_classes(path: Path) -> ClassTable:
    """DIR/classes.csv: a header ``id,name,r,g,b`` and one row per class (ids 0..254, colours 0..255)."""
    if not path.is_file():
        raise FolderError(f"{path}: no such file; expected classes.csv with columns id,name,r,g,b for seg/")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        table = [(int(r["id"]), r["name"].strip(), [int(r[c]) for c in "rgb"]) for r in rows]
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FolderError(f"{path}: cannot read it ({' '.join(str(exc).split()) or type(exc).__name__}); "
                          f"expected a header id,name,r,g,b and integer ids and colours") from None
    ids = [t[0] for t in table]
    if len(table) < 2 or len(set(ids)) != len(ids) or not all(0 <= i < IGNORE for i in ids):
        raise FolderError(f"{path}: ids {ids[:8]}: expected at least two classes with distinct ids in 0..254")
    colors = np.array([t[2] for t in table], np.float64)
    if ((colors < 0) | (colors > 255)).any() or len({tuple(c) for c in colors.tolist()}) != len(colors):
        raise FolderError(f"{path}: colours must be distinct r,g,b triples in 0..255")
    return ClassTable(tuple(ids), tuple(t[1] for t in table), colors / 255.0)


# --------------------------------------------------------------------------------------------------
# Checking and decoding labels
# --------------------------------------------------------------------------------------------------
def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (H, W)) of an image file, from its header; an unreadable file is a one-line error."""
    try:
        with Image.open(path) as im:
            return im.mode, (im.height, im.width)
    except (OSError, ValueError, SyntaxError) as exc:
        raise FolderError(f"{path}: cannot read the image ({' '.join(str(exc).split()) or type(exc).__name__})"
                          ) from None


def _npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return arr.dtype, tuple(arr.shape)
    except (OSError, ValueError) as exc:
        raise FolderError(f"{path}: cannot read the array ({' '.join(str(exc).split())})") from None


PNG_MODES = {"depth": ("I;16", "I;16B", "I;16L", "I"), "normal": ("RGB",), "mask": ("L", "P", "1"),
             "alpha": ("L",), "semantic": ("L", "P")}


def check_label_header(path: Path, label_key: str, shape: tuple[int, int]) -> None:
    """The label's kind (bits, channels) and size against the image's ``shape`` (H, W), from headers."""
    wrong = f"{path}: {{}}; expected {EXPECTED[label_key]}"
    if path.suffix.lower() == ".npy":
        dtype, dims = _npy_header(path)
        if label_key == "depth":
            ok = len(dims) == 2 or (len(dims) == 3 and dims[2] == 1)
        else:  # normal
            ok = len(dims) == 3 and dims[2] == 3
        if not ok or not np.issubdtype(dtype, np.floating):
            raise FolderError(wrong.format(f"a {dtype} array of shape {list(dims)}"))
        size = dims[:2]
    else:
        mode, size = _image_header(path)
        if mode not in PNG_MODES[label_key]:
            bits = {"L": "8-bit grey", "P": "8-bit palette", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA",
                    "LA": "2-channel (grey + alpha)", "1": "1-bit"}.get(mode, f"{mode}")
            raise FolderError(wrong.format(f"a {bits} PNG (mode {mode})"))
    if tuple(size) != tuple(shape):
        raise FolderError(f"{path}: the label is {size[1]} x {size[0]} but the image is {shape[1]} x {shape[0]}; "
                          f"expected the same size")


def read_label(path: Path, label_key: str, depth_scale: float = DEFAULT_DEPTH_SCALE,
               classes: ClassTable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A label file -> (label in the item's layout, valid [H, W] bool). Header checks are ``check_label_header``."""
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False).astype(np.float32)
        if label_key == "depth":
            depth = arr.reshape(arr.shape[:2])                                   # [H, W] metres
            valid = np.isfinite(depth) & (depth > 0)
            return np.where(valid, depth, 0.0).astype(np.float32), valid
        normal = np.moveaxis(arr, -1, 0)                                         # [3, H, W]
        valid = np.isfinite(normal).all(0) & (np.abs(np.nan_to_num(normal)).sum(0) > 0)
        return np.where(valid, normal, 0.0).astype(np.float32), valid
    with Image.open(path) as im:
        v = np.array(im.convert("L") if label_key in ("mask", "alpha") else im)
    if label_key == "depth":                                                     # stored units -> metres
        valid = v > 0
        return (v.astype(np.float64) / depth_scale).astype(np.float32), valid
    if label_key == "normal":                                                    # DSINE: n = v / 255 * 2 - 1
        valid = v.any(axis=-1)
        normal = np.moveaxis(v.astype(np.float32) / 255.0 * 2.0 - 1.0, -1, 0)   # [3, H, W]
        return np.where(valid, normal, 0.0).astype(np.float32), valid
    if label_key == "mask":
        return (v > 127).astype(np.float32), np.ones(v.shape, bool)
    if label_key == "alpha":
        return v.astype(np.float32) / 255.0, np.ones(v.shape, bool)
    return _class_indices(path, v, classes), v != IGNORE


def _class_indices(path: Path, ids: np.ndarray, classes: ClassTable | None) -> np.ndarray:
    """[H, W] stored class ids -> int64 indices into classes.csv (255 stays 255); an unlisted id is an error."""
    if classes is None:
        raise FolderError(f"{path}: seg labels need DIR/classes.csv (id,name,r,g,b)")
    lut = np.full(256, -1, np.int64)
    lut[list(classes.ids)] = np.arange(len(classes.ids))
    lut[IGNORE] = IGNORE
    out = lut[ids.astype(np.uint8)]
    if (out < 0).any():
        bad = sorted(set(ids[out < 0].tolist()))
        raise FolderError(f"{path}: class ids {bad[:5]} are not in classes.csv; expected one of "
                          f"{list(classes.ids)[:10]}{' ...' if len(classes.ids) > 10 else ''} or 255 (ignore)")
    return out


def read_rgb(path: Path) -> np.ndarray:
    """An image -> [3, H, W] float32 in [0, 1]; unreadable: a one-line error naming it."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))                                  # [H, W, 3] uint8
    except (OSError, ValueError, SyntaxError) as exc:
        raise FolderError(f"{path}: cannot read the image ({' '.join(str(exc).split()) or type(exc).__name__})"
                          ) from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / 255.0


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
def _read_names(path: Path, known: set[str]) -> list[str]:
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = [Path(n).stem if Path(n).suffix.lower() in RGB_EXTENSIONS else n for n in names]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FolderError(f"{path}: {len(unknown)} name(s) with no image in rgb/: {_first(unknown)}; "
                          f"expected one <name> of rgb/<name>.(png|jpg|jpeg) per line")
    return names


def split_names(root: Path, names: list[str], seed: int = 0) -> tuple[dict[str, list[str]], str]:
    """{"train": [...], "val": [...]} and a sentence saying where the split came from: DIR/train.txt and/or
    DIR/val.txt (one alone: the other is the rest), else a seeded 90 / 10 split (at least one image each side
    when there are two)."""
    known = set(names)
    files = {s: root / f"{s}.txt" for s in ("train", "val")}
    listed = {s: _read_names(p, known) for s, p in files.items() if p.is_file()}
    if listed:
        for side, other in (("train", "val"), ("val", "train")):
            if side not in listed:
                taken = set(listed[other])
                listed[side] = [n for n in names if n not in taken]
        note = f"split from {', '.join(str(files[s]) for s in files if files[s].is_file())}"
    else:
        order = sorted(names)
        random.Random(seed).shuffle(order)
        n_val = max(1, round(VAL_SHARE * len(order))) if len(order) > 1 else 0
        listed = {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}
        note = f"seeded {1 - VAL_SHARE:.0%} / {VAL_SHARE:.0%} split (seed {seed}; write train.txt / val.txt to choose)"
    return listed, f"{len(listed['train'])} train / {len(listed['val'])} val images: {note}"


# --------------------------------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------------------------------
class FolderSet:
    """A checked folder of images and labels for the label ``label_key`` (a task's ``label_key``)."""

    def __init__(self, root, label_key: str, depth_scale: float = DEFAULT_DEPTH_SCALE, seed: int = 0):
        if not depth_scale > 0:
            raise FolderError(f"--depth-scale {depth_scale}: expected a positive number (stored units per metre)")
        self.root, self.label_key, self.depth_scale = Path(root).expanduser(), label_key, float(depth_scale)
        self.samples = {s.name: s for s in list_pairs(self.root, label_key)}
        self.classes = read_classes(self.root / "classes.csv") if label_key == "semantic" else None
        for s in self.samples.values():  # every file's kind and size, from headers; class ids from the pixels
            _, shape = _image_header(s.rgb)
            check_label_header(s.label, label_key, shape)
            if label_key == "semantic":
                read_label(s.label, label_key, classes=self.classes)
        self.splits, self.split_note = split_names(self.root, list(self.samples), seed)

    def __len__(self) -> int:
        return len(self.samples)

    def names(self, split: str = "all") -> list[str]:
        if split == "all":
            return sorted(self.samples)
        if split not in self.splits:
            raise FolderError(f"split {split!r}: expected train, val or all")
        return list(self.splits[split])

    def item(self, name: str) -> dict:
        """One sample as a reader item (module docstring)."""
        s = self.samples[name]
        label, valid = read_label(s.label, self.label_key, self.depth_scale, self.classes)
        return {"rgb": read_rgb(s.rgb), self.label_key: label, "valid": valid, "path": str(s.rgb), "name": name}

    def fingerprint(self, split: str = "train") -> str:
        """The names, sizes and modification times of a split's files: what a run trained on."""
        h = hashlib.sha1()
        for n in self.names(split):
            for p in (self.samples[n].rgb, self.samples[n].label):
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)};".encode())
        return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# Training samples: resized keeping the aspect ratio, then centre-cropped
# --------------------------------------------------------------------------------------------------
def cover_size(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The smallest (h, w) with the aspect ratio of ``shape`` that covers ``size`` (each side >= the target)."""
    h, w = shape
    scale = max(size[0] / h, size[1] / w)
    return max(size[0], round(h * scale)), max(size[1], round(w * scale))


def cover_crop(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """[B, C, H, W] resized keeping its aspect ratio to cover ``size`` (``mode``: bilinear antialiased, or
    nearest for labels that must not be interpolated), then centre-cropped to ``size``."""
    x = resize(x, cover_size(tuple(x.shape[-2:]), size), mode)  # [B, C, H', W']
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]  # [B, C, h, w]


def training_sample(item: dict, label_key: str, size: tuple[int, int], label_resize: str,
                    flip_label=None) -> dict:
    """A folder item -> {rgb [3, h, w], label [h, w] or [C, h, w], valid [h, w]} at ``size`` (cover and
    centre crop; the task's ``label_resize``); mirrored with ``flip_label`` (the task's ``flip``) when given."""
    raw = np.asarray(item[label_key])
    rgb = cover_crop(torch.from_numpy(item["rgb"])[None], size)                        # [1, 3, h, w]
    label = torch.from_numpy(raw.astype(np.int64 if raw.dtype.kind in "iu" else np.float32))
    label = label[None, None] if label.ndim == 2 else label[None]                      # [1, C, H, W]
    label = cover_crop(label, size, label_resize)                                      # [1, C, h, w]
    valid = cover_crop(torch.from_numpy(np.asarray(item["valid"], bool))[None, None], size, "nearest")
    if flip_label is not None:
        rgb, label, valid = rgb.flip(-1), flip_label(label), valid.flip(-1)
    label = label[0, 0] if raw.ndim == 2 else label[0]
    return {"rgb": rgb[0].clamp(0, 1), "label": label, "valid": valid[0, 0]}


# --------------------------------------------------------------------------------------------------
# Writing the format (the toy world's exporter)
# --------------------------------------------------------------------------------------------------
def _atomic_save(path: Path, save) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    save(tmp)
    tmp.replace(path)


def write_sample(root: Path, name: str, item: dict, label_key: str, depth_scale: float = DEFAULT_DEPTH_SCALE) -> None:
    """One item (``rgb`` [3, H, W] in [0, 1], the label in the item's layout, ``valid``) into the format."""
    sub = label_folder(label_key)
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / sub).mkdir(parents=True, exist_ok=True)
    rgb = np.round(np.clip(np.moveaxis(item["rgb"], 0, -1), 0, 1) * 255).astype(np.uint8)  # [H, W, 3]
    _atomic_save(root / "rgb" / f"{name}.png", lambda p: Image.fromarray(rgb).save(p, format="PNG"))
    label, valid = np.asarray(item[label_key]), np.asarray(item.get("valid", True), bool)
    if label_key == "depth":
        v = np.where(valid & np.isfinite(label), np.round(label * depth_scale), 0).clip(0, 65535)
        img = Image.fromarray(v.astype(np.uint16))
    elif label_key == "normal":
        v = np.round((np.moveaxis(label, 0, -1) + 1.0) / 2.0 * 255).clip(1, 255)        # [H, W, 3], never all-zero
        img = Image.fromarray(np.where(valid[..., None], v, 0).astype(np.uint8))
    elif label_key == "semantic":
        img = Image.fromarray(np.where(valid, label, IGNORE).astype(np.uint8))
    else:  # mask, alpha in [0, 1]
        img = Image.fromarray(np.round(np.clip(label, 0, 1) * 255).astype(np.uint8))
    _atomic_save(root / sub / f"{name}.png", lambda p: img.save(p, format="PNG"))


def write_classes(root: Path, names, colors) -> Path:
    """DIR/classes.csv with ids 0..C-1, the names and colours ([C, 3] in [0, 1])."""
    rows = ["id,name,r,g,b"] + [f"{i},{n},{','.join(str(round(float(c) * 255)) for c in col)}"
                                for i, (n, col) in enumerate(zip(names, np.asarray(colors)))]
    path = root / "classes.csv"
    root.mkdir(parents=True, exist_ok=True)
    _atomic_save(path, lambda p: p.write_text("\n".join(rows) + "\n"))
    return path
