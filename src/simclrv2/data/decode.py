"""One image file to a uint8 (C, h, w) array: the whole image, its channels kept, its depth scaled.

- **Channels.** Grey images (Pillow modes 1, L, LA, I;16*, I, F) decode to one channel, colour ones
  (RGB, RGBA, P, CMYK, YCbCr, ...) to three; a folder is one channel only when every image is grey,
  else grey images are repeated into three (:func:`folder_shape`, the mixed-folder rule). TIFF
  stacks of any number of bands (4-13 band satellite tiles, multiplexed microscopy) are read with
  the optional ``tifffile`` (``pip install simclrv2[tiff]``) and keep all their C bands; every
  image of such a folder must have the same C.
- **Depth.** 8-bit images are stored as they are. Deeper ones are scaled into 0-255 by a rule,
  never clamped: ``full`` (the default) maps the type's range (0-65535 for 16-bit, 0-2^32-1 for
  32-bit integers whose values exceed 16 bits) linearly onto 0-255; ``image`` maps each image's
  own minimum-maximum onto it (for 12-bit data in 16-bit files, or floats). Float images always
  use their own range. The stored array is uint8, so a 16-bit image keeps 256 of its levels.
- **Geometry.** The whole image, its aspect kept: resized (bicubic, antialiased) so that its longer
  side is at most the stored side, never enlarged (:func:`stored_extent`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from simclrv2.errors import UserError

DepthScaling = Literal["full", "image"]
GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
TIFF_SUFFIXES = {".tif", ".tiff"}


def _tifffile():
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


def _tiff_bands(path: Path) -> np.ndarray | None:
    """A TIFF's first image as (C, H, W) when ``tifffile`` is installed, else None (Pillow)."""
    tifffile = _tifffile()
    if tifffile is None or Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return None
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        array, axes = series.asarray(), series.axes
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3 or "Y" not in axes or "X" not in axes:
        raise ValueError(f"a TIFF of shape {array.shape} ({axes}) is not one multi-band image")
    return np.moveaxis(array, _band_axis(axes), 0)


def _band_axis(axes: str) -> int:
    """The axis of a 3-D TIFF series that is not height or width: samples, channels or pages."""
    return next(i for i, axis in enumerate(axes) if axis not in "YX")


def image_header(path: str | os.PathLike) -> tuple[int, int, int]:
    """(channels, height, width) that ``path`` decodes to (1 grey, 3 colour, C for a TIFF
    stack), from its header."""
    tifffile = _tifffile()
    if tifffile is not None and Path(path).suffix.lower() in TIFF_SUFFIXES:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            shape, axes = series.shape, series.axes
        channels = 1 if len(shape) == 2 else int(shape[_band_axis(axes)])
        return channels, shape[axes.index("Y")], shape[axes.index("X")]
    with Image.open(path) as image:
        width, height = image.size
        return (1 if image.mode in GREY_MODES else 3), height, width


def folder_shape(files: list[Path]) -> tuple[int, int]:
    """(channels, longest side) of a folder's images, from their headers. Channels: 1 if all
    are grey, C if all are C-band stacks, 3 for a mix of grey and colour (grey repeated);
    unreadable files are left to the decoding pass (0 when none is readable)."""
    found, longest = set(), 0
    for path in files:
        try:
            channels, height, width = image_header(path)
        except Exception:  # unreadable: the decoding pass reports it
            continue
        found.add(channels)
        longest = max(longest, height, width)
    if found <= {1}:
        return 1, longest
    if found <= {1, 3}:
        return 3, longest
    if len(found) == 1:
        return found.pop(), longest
    raise UserError(
        f"the images have {', '.join(map(str, sorted(found)))} channels; a data set has one "
        "channel count: keep images with the same bands together"
    )


def stored_extent(height: int, width: int, side: int) -> tuple[int, int]:
    """The (height, width) an image of ``height`` x ``width`` px is stored at: its longer side at
    most ``side``, aspect kept (each side rounded, at least 1 px), never enlarged."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _scaled(array: np.ndarray, scaling: DepthScaling) -> np.ndarray:
    """An array of any depth as float32 in [0, 255], by the module docstring's rule."""
    values = array.astype(np.float32)
    if array.dtype == np.uint8:
        return values
    if scaling == "image" or array.dtype.kind == "f":
        low, high = float(values.min()), float(values.max())
        return (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    bits = 16 if array.dtype.itemsize <= 2 or array.max() <= 65535 else 8 * array.dtype.itemsize
    return values * (255 / (2**bits - 1))


def _resized(bands: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 255] -> uint8 (C, height, width): bicubic with antialiasing,
    rounded."""
    whole = torch.from_numpy(np.ascontiguousarray(bands))[None]
    if whole.shape[-2:] != (height, width):
        whole = F.interpolate(whole, size=(height, width), mode="bicubic", antialias=True)
    return whole[0].round_().clamp_(0, 255).to(torch.uint8).numpy()


def decode_image(
    path: str | os.PathLike, side: int, channels: int = 3, depth: DepthScaling = "full"
) -> np.ndarray:
    """One whole image as uint8 (channels, h, w), its longer side at most ``side`` (module
    docstring); a grey image asked for 3 channels is repeated into them."""
    bands = _tiff_bands(Path(path))
    if bands is None:
        with Image.open(path) as image:
            if image.mode in HIGH_DEPTH_MODES:
                bands = np.asarray(image)[None]
            else:
                height, width = stored_extent(image.height, image.width, side)
                image.draft("RGB", (width, height))  # JPEG: decode at 1/2, 1/4 or 1/8, >= that
                image = image.convert("L" if channels == 1 else "RGB")
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BICUBIC)
                array = np.asarray(image)
                array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
                return _repeated(array, channels)
    return _repeated(
        _resized(_scaled(bands, depth), *stored_extent(*bands.shape[1:], side)), channels
    )


def _repeated(image: np.ndarray, channels: int) -> np.ndarray:
    """``image`` (C, h, w) with ``channels`` channels: as it is, or one grey band repeated."""
    if len(image) == channels:
        return image
    if len(image) == 1:
        return np.repeat(image, channels, axis=0)
    raise ValueError(f"{len(image)} bands where the data set has {channels} channels")
