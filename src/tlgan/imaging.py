"""Images in and out: tensors in [-1, 1] <-> uint8 arrays, PNG grids. Pillow and NumPy only."""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tlgan.errors import TlganError
from tlgan.io import atomic_path


def to_uint8(images) -> np.ndarray:
    """Float images in [-1, 1] -> uint8 arrays in channels-last layout.

    Args:
        images: (N, 3, H, W) or (3, H, W) tensor/array (a single channel, (N, 1, H, W), is allowed too).

    Returns:
        (N, H, W, C) or (H, W, C) uint8, values ``round((x + 1) * 127.5)`` clipped to 0..255.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim not in (3, 4) or arr.shape[-3] not in (1, 3):
        raise TlganError(f"images must be (N, C, H, W) or (C, H, W) with C = 1 or 3; got shape {arr.shape}")
    arr = np.clip(np.rint((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.moveaxis(arr, -3, -1)


def make_grid(images, nrow: int | None = None, padding: int = 0, pad_value: int = 0) -> np.ndarray:
    """Tile (N, 3, H, W) images in [-1, 1] into one (rows*H, nrow*W, 3) uint8 array, row-major.

    ``nrow`` is the number of images per row (default: about the square root of N); missing
    cells in the last row are filled with ``pad_value``.
    """
    arr = to_uint8(images)
    if arr.ndim == 3:
        arr = arr[None]
    n, h, w, c = arr.shape
    if n == 0:
        raise TlganError("no images to put in a grid")
    nrow = int(nrow) if nrow else max(1, int(math.ceil(math.sqrt(n))))
    if nrow < 1:
        raise TlganError(f"nrow must be >= 1; got {nrow}")
    rows = int(math.ceil(n / nrow))
    grid = np.full((rows * h + (rows - 1) * padding, nrow * w + (nrow - 1) * padding, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = r * (h + padding), col * (w + padding)
        grid[y : y + h, x : x + w] = arr[i]
    return grid


def _write_png(array: np.ndarray, path: str | os.PathLike, upscale: int = 1) -> Path:
    path = Path(path)
    if int(upscale) < 1:
        raise TlganError(f"upscale must be >= 1; got {upscale}")
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if upscale > 1:  # nearest neighbour keeps pixels crisp for inspection
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise TlganError(f"{path}: unknown image extension {path.suffix!r}; use .png")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)
    return path


def save_grid(
    images, path: str | os.PathLike, nrow: int | None = None, upscale: int = 1, padding: int = 0
) -> Path:
    """Write (N, 3, H, W) images in [-1, 1] as one grid image (PNG by extension), atomically."""
    return _write_png(make_grid(images, nrow=nrow, padding=padding), path, upscale=upscale)


def save_image(image, path: str | os.PathLike, upscale: int = 1) -> Path:
    """Write one (3, H, W) (or (1, 3, H, W)) image in [-1, 1] to ``path``, atomically."""
    arr = to_uint8(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise TlganError(f"save_image takes one image; got {arr.shape[0]} (use save_grid)")
        arr = arr[0]
    return _write_png(arr, path, upscale=upscale)


def save_gif(frames, path: str | os.PathLike, upscale: int = 1, duration_ms: int = 80, loop: int = 0) -> Path:
    """Write (T, 3, H, W) frames in [-1, 1] as an animated GIF (``loop=0`` repeats forever), atomically."""
    arrays = to_uint8(frames)
    if arrays.ndim != 4 or len(arrays) == 0:
        raise TlganError(
            f"save_gif needs (T, 3, H, W) frames with T >= 1; got shape {tuple(np.shape(frames))}"
        )
    if int(upscale) < 1:
        raise TlganError(f"upscale must be >= 1; got {upscale}")
    images = []
    for array in arrays:
        image = Image.fromarray(array)
        if upscale > 1:
            image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
        images.append(image)
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(duration_ms),
            loop=int(loop),
        )
    return path


# Reading images given by users (files or uploaded bytes) and data sets: one decoder for both.

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 16
"""Images whose shorter side is below this many pixels are refused (too little to invert)."""
MAX_IMAGE_PIXELS = 50_000_000
"""Images of more pixels are refused before decoding (decompression bombs, absurd scans)."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
"""Encoded files larger than this are refused before decoding."""

ImageSource = str | os.PathLike | bytes | bytearray | memoryview


def _open_source(source: ImageSource, name: str | None) -> tuple[object, str]:
    """(a binary file object or path for PIL, the name to use in messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "uploaded image"
        if not data:
            raise TlganError(f"{label}: the file is empty; upload an image file (PNG, JPEG, ...)")
        if len(data) > MAX_IMAGE_BYTES:
            raise TlganError(
                f"{label}: the file is {len(data) / 2**20:.0f} MiB, more than the "
                f"{MAX_IMAGE_BYTES // 2**20} MiB allowed; use a smaller image"
            )
        return io.BytesIO(data), label
    path = Path(source)
    label = name or str(path)
    if not path.exists():
        raise TlganError(f"{label}: file not found")
    if not path.is_file():
        raise TlganError(f"{label}: not a file; give an image file (PNG, JPEG, ...)")
    size = path.stat().st_size
    if size == 0:
        raise TlganError(f"{label}: the file is empty; give an image file (PNG, JPEG, ...)")
    if size > MAX_IMAGE_BYTES:
        raise TlganError(
            f"{label}: the file is {size / 2**20:.0f} MiB, more than the "
            f"{MAX_IMAGE_BYTES // 2**20} MiB allowed; use a smaller image"
        )
    return path, label


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparent pixels become white; 16-bit and float greys are rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # convert("RGB") would clip these to 0..255; rescale to the 8-bit range instead.
        arr = np.asarray(img, dtype=np.float64)
        top = (
            1.0
            if img.mode == "F" and arr.max(initial=0.0) <= 1.0
            else (65535.0 if arr.max(initial=0.0) > 255 else 255.0)
        )
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


CropBox = tuple[int, int, int, int]


def parse_crop(text: str | None) -> CropBox | None:
    """``"x,y,w,h"`` (pixels; x, y the top-left corner) -> a crop box tuple; None or "" -> None."""
    if text is None or not str(text).strip():
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] < 1 or box[3] < 1:
        raise TlganError(
            f"cannot read crop box {text!r}: write it as x,y,w,h in pixels (x, y the top-left corner, "
            f"w, h positive), e.g. 40,10,200,200"
        )
    return box  # type: ignore[return-value]


def read_image(
    source: ImageSource,
    resolution: int,
    *,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
    crop: CropBox | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Decode an image file (path or bytes) into (3, R, R) float in [-1, 1], and notes on what was changed.

    Any size and mode: converted to RGB (EXIF rotation applied, transparency over white,
    the first frame of an animation), cropped to ``crop`` = (x, y, w, h) pixels of the
    upright image when given, then centre-cropped to a square, resized to ``resolution``
    with LANCZOS. The notes (list of str) say when it had to crop or resize. A crop box
    that does not lie inside the image, or leaves less than ``min_side`` pixels, is refused.
    Raises TlganError naming the file for: a missing, empty or oversized file, data that
    is not an image, a truncated or corrupt image, more than ``max_pixels`` pixels
    (decompression bombs are refused before decoding), or a shorter side below ``min_side``.
    """
    arr, notes = decode_rgb(
        source, resolution, name=name, max_pixels=max_pixels, min_side=min_side, crop=crop
    )
    image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float() / 127.5 - 1.0
    return image, notes


def open_rgb(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
    draft_size: int | None = None,
) -> tuple[Image.Image, str, list[str]]:
    """Decode an image file (path or bytes) at full size: (upright RGB PIL image, label, notes).

    The one decoder of tlgan: EXIF rotation applied, transparency over white, 16-bit greys
    rescaled, the first frame of an animation (noted). ``draft_size`` lets a JPEG decoder skip
    detail below that side. Raises TlganError naming the file (``label``) for a missing, empty
    or oversized file, data that is not an image, a truncated or corrupt image, more than
    ``max_pixels`` pixels (decompression bombs are refused before decoding), or a shorter side
    below ``min_side``.
    """
    fp, label = _open_source(source, name)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; make that an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise TlganError(
                        f"{label}: {w}x{h} is {w * h / 1e6:.0f} million pixels, more than the "
                        f"{max_pixels / 1e6:.0f} million allowed; shrink the image first"
                    )
                if min(w, h) < min_side:
                    raise TlganError(
                        f"{label}: {w}x{h} pixels is too small; the shorter side needs at least "
                        f"{min_side} pixels"
                    )
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    img.seek(0)
                    notes.append(f"used the first of {frames} frames")
                img.load()
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
    except TlganError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TlganError(
            f"{label}: refused as a possible decompression bomb ({exc}); shrink the image first"
        ) from None
    except UnidentifiedImageError:
        raise TlganError(
            f"{label}: not an image file Pillow can read (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)"
        ) from None
    except Exception as exc:  # decoders raise OSError, SyntaxError, struct.error, ... for damaged data
        raise TlganError(
            f"{label}: the image data is damaged or truncated ({type(exc).__name__}: {exc}); "
            f"re-export or re-download the image"
        ) from None
    return img, label, notes


def decode_rgb(
    source: ImageSource,
    resolution: int,
    *,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
    crop: CropBox | None = None,
    draft: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """The decoder behind :func:`read_image` and the data sets: (R, R, 3) uint8 RGB, and the notes.

    Same steps, checks and errors as :func:`read_image`. ``draft`` lets a JPEG decoder skip
    detail that the resize would throw away (it decodes at no less than twice ``resolution``):
    much faster for large photos, for pixels a little different from a full decode.
    """
    resolution = int(resolution)
    if resolution < 1:
        raise TlganError(f"resolution must be a positive number of pixels, not {resolution}")
    img, label, notes = open_rgb(
        source,
        name=name,
        max_pixels=max_pixels,
        min_side=min_side,
        draft_size=2 * resolution if draft else None,
    )
    if crop is not None:
        x0, y0, cw, ch = (int(v) for v in crop)
        W, H = img.size
        if x0 < 0 or y0 < 0 or cw < 1 or ch < 1 or x0 + cw > W or y0 + ch > H:
            raise TlganError(
                f"{label}: crop box x={x0}, y={y0}, w={cw}, h={ch} does not fit in the {W}x{H} image; "
                f"choose a box inside it"
            )
        if min(cw, ch) < min_side:
            raise TlganError(
                f"{label}: crop box {cw}x{ch} is too small; the shorter side needs at least {min_side} pixels"
            )
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
        notes.append(f"cropped to the box x={x0}, y={y0}, {cw}x{ch}")
    w, h = img.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        notes.append(f"cropped {w}x{h} to the centre {side}x{side} square")
    if side != resolution:
        img = img.resize(
            (resolution, resolution), Image.LANCZOS, reducing_gap=3.0 if side > 4 * resolution else None
        )
        notes.append(f"resized {side}x{side} to {resolution}x{resolution}")
    return np.asarray(img, dtype=np.uint8), notes


def load_image(
    source: ImageSource,
    resolution: int = 64,
    *,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
    crop: CropBox | None = None,
) -> torch.Tensor:
    """An image file (path or bytes) as (3, R, R) float in [-1, 1]; see :func:`read_image`.

    Logs a warning when the image had to be cropped to a square or resized.
    """
    image, notes = read_image(
        source, resolution, name=name, max_pixels=max_pixels, min_side=min_side, crop=crop
    )
    if notes:
        label = name or (
            str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "uploaded image"
        )
        log.warning("%s: %s", label, "; ".join(notes))
    return image
