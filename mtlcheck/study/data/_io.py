"""File readers shared by the dataset loaders.

Every reader names the offending file in its error: a missing file raises `FileNotFoundError`,
a file that cannot be decoded or has the wrong content raises `ValueError`. Nothing is replaced
by a default value.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# PIL modes accepted for each kind of PNG/JPEG we read.
RGB_MODES = ("RGB",)
LABEL_MODES = ("L",)  # 8-bit single channel
UINT16_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit single channel (PIL opens them as one of these)


def require_file(path: str | Path) -> Path:
    """`path` as a Path; FileNotFoundError naming it when it is not a regular file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"missing file: {p}")
    return p


def read_image(path: str | Path, modes: Iterable[str]) -> np.ndarray:
    """Decode an image file into a numpy array, requiring one of the PIL `modes`.

    "I" (32-bit) images are checked to hold values in 0..65535, so that 16-bit PNGs opened by an
    older Pillow as mode "I" read the same as mode "I;16".
    """
    p = require_file(path)
    modes = tuple(modes)
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot decode image {p}: {exc}") from exc
    if mode not in modes:
        raise ValueError(f"image {p} has PIL mode {mode!r}; expected one of {modes}")
    if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError(f"image {p} (mode 'I') holds values outside 0..65535")
    if mode in UINT16_MODES:
        arr = arr.astype(np.int64)
    return arr


def read_npy(path: str | Path) -> np.ndarray:
    """np.load of a .npy file (no pickles)."""
    p = require_file(path)
    try:
        with open(p, "rb") as f:
            arr = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"cannot read .npy file {p}: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{p} is not a single-array .npy file")
    return arr


def _open_npz(f, p: Path):
    try:
        z = np.load(f, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read .npz file {p}: {exc}") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{p} is not a .npz archive")
    return z


def read_npz(path: str | Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of a .npz archive (no pickles); ValueError naming a missing key."""
    p = require_file(path)
    keys = list(keys)
    with open(p, "rb") as f, _open_npz(f, p) as z:
        present = set(z.files)
        missing = [k for k in keys if k not in present]
        if missing:
            raise ValueError(f"{p} has no array {missing[0]!r} (it has {sorted(present)})")
        try:
            return {k: z[k] for k in keys}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read .npz file {p}: {exc}") from exc


def npz_keys(path: str | Path) -> list[str]:
    """Names of the arrays in a .npz archive."""
    p = require_file(path)
    with open(p, "rb") as f, _open_npz(f, p) as z:
        return list(z.files)


def read_mat(path: str | Path, key: str) -> np.ndarray:
    """Variable `key` of a MATLAB .mat file (scipy.io.loadmat)."""
    import scipy.io

    p = require_file(path)
    try:
        data = scipy.io.loadmat(str(p))
    except Exception as exc:  # scipy raises several unrelated types for corrupt files
        raise ValueError(f"cannot read .mat file {p}: {exc}") from exc
    if key not in data:
        names = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(f"{p} has no variable {key!r} (it has {names})")
    return np.asarray(data[key])


def read_json(path: str | Path) -> Any:
    """Parsed JSON; ValueError naming the file when it is not valid JSON."""
    p = require_file(path)
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot parse JSON file {p}: {exc}") from exc


def read_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a text file."""
    p = require_file(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot read text file {p}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_shape(arr: np.ndarray, shape: tuple[int, ...], path: str | Path, what: str) -> None:
    """ValueError naming `path` when `arr.shape != shape`."""
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{what} in {path} has shape {tuple(arr.shape)}; expected {tuple(shape)}")
