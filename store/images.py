"""Reading crops and masks from disk with checks that tell a user exactly what is wrong with a file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MASK_THRESHOLD = 128


class BadFile(ValueError):
    """A file that cannot be used, with a reason meant for the ingest summary."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadFile(f"unreadable ({exc.strerror or exc})") from None


def _verify(data: bytes, path: Path) -> None:
    """Full decode through Pillow: OpenCV silently returns a grey half image for a truncated JPEG."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:
        raise BadFile("not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        raise BadFile("truncated or corrupt image" + (f" ({msg})" if msg else "")) from None
    if path.suffix.lower() in {".jpg", ".jpeg"} and b"\xff\xd9" not in data[-1024:]:
        raise BadFile("truncated or corrupt image (JPEG end marker missing)")


def decode_image(data: bytes, path: Path) -> np.ndarray:
    """Decode to HxWx3 uint8 RGB."""
    _verify(data, path)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise BadFile("not an image")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes, path: Path) -> np.ndarray:
    """Decode to HxW bool, binarised at 128 (masks are anti-aliased)."""
    _verify(data, path)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise BadFile("not an image")
    return arr >= MASK_THRESHOLD


def load_image(path: Path | str) -> np.ndarray:
    path = Path(path)
    return decode_image(_read_bytes(path), path)


def load_mask(path: Path | str) -> np.ndarray:
    path = Path(path)
    return decode_mask(_read_bytes(path), path)


def read_checked(path: Path) -> tuple[bytes, np.ndarray]:
    data = _read_bytes(path)
    return data, decode_image(data, path)


def read_mask_checked(path: Path) -> np.ndarray:
    return decode_mask(_read_bytes(path), path)
