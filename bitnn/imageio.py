"""Reading images into arrays a classifier takes, with no extra dependencies.

Public functions (used by ``Model.predict``/``classify`` for paths and PIL
images, and by ``bitnn-run classify``):

- :func:`read_image`: a file's pixels as uint8 ``(H, W, C)``. PNG (8-bit, any
  colour type, non-interlaced), binary PGM/PPM and ``.npy`` are read with the
  standard library and numpy; other formats, and 16-bit or interlaced PNGs,
  go through Pillow when it is installed (else a ValueError says so).
- :func:`from_pil`: the pixels of a PIL image (Pillow is not imported here).
- :func:`fit_image`: an image converted to the model's channels and size.
- :func:`load_image`: a path or a PIL image, read and fitted in one step.

Conversion rules (:func:`fit_image`): alpha is dropped (not composited);
RGB becomes grey with the ITU-R 601 weights 0.299, 0.587, 0.114 for
one-channel models; grey is repeated for three-channel models. The size is
changed per axis, without keeping the aspect ratio, by area averaging when
shrinking and bilinear interpolation (pixel centres aligned) when growing.
Nothing is inverted: the shipped Fashion-MNIST model expects a light object
on a dark background.

``write_png`` writes 8-bit grey or RGB PNGs (used to make the shipped sample
images).
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

_PNG_SIG = b"\x89PNG\r\n\x1a\n"


class _NeedsPillow(ValueError):
    """A valid file the built-in readers do not decode."""


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> np.ndarray:
    stride = width * bpp
    if len(raw) != height * (stride + 1):
        raise ValueError("PNG image data has the wrong length")
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    data = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    for y in range(height):
        ftype = data[y, 0]
        line = data[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 1:  # Sub
            cur = line.copy()
            for x in range(bpp, stride):
                cur[x] = (cur[x] + cur[x - bpp]) & 255
        elif ftype == 2:  # Up
            cur = (line + prev) & 255
        elif ftype == 3:  # Average
            cur = line.copy()
            for x in range(stride):
                left = cur[x - bpp] if x >= bpp else 0
                cur[x] = (cur[x] + ((left + prev[x]) >> 1)) & 255
        elif ftype == 4:  # Paeth
            cur = line.copy()
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur[x] = (cur[x] + pred) & 255
        else:
            raise ValueError(f"PNG filter type {ftype} is invalid")
        out[y] = cur
        prev = cur
    return out


def read_png(data: bytes) -> np.ndarray:
    """Decode a PNG to uint8 (H, W, channels): 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    if not data.startswith(_PNG_SIG):
        raise ValueError("not a PNG file")
    pos, ihdr, idat, palette = 8, None, [], None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if ihdr is None or not idat:
        raise ValueError("PNG has no IHDR or no image data")
    width, height, depth, color, _, _, interlace = ihdr
    if width == 0 or height == 0 or width * height > 1 << 28:
        raise ValueError(f"PNG size {width}x{height} is not supported")
    if depth != 8 or interlace != 0:
        raise _NeedsPillow(f"{depth}-bit{', interlaced' if interlace else ''} PNG: only 8-bit, "
                           "non-interlaced PNGs are read without Pillow")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if channels is None:
        raise ValueError(f"PNG colour type {color} is invalid")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ValueError(f"corrupt PNG data: {e}") from None
    img = _unfilter(raw, width, height, channels).reshape(height, width, channels)
    if color == 3:
        if palette is None:
            raise ValueError("palette PNG without PLTE")
        if img.max(initial=0) >= len(palette):
            raise ValueError("PNG palette index out of range")
        img = palette[img[:, :, 0]]
    return img


def write_png(path, img: np.ndarray) -> None:
    """Write uint8 (H, W) grey or (H, W, 3) RGB as a PNG."""
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    color = {1: 0, 3: 2}[a.shape[2]]
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    png = (_PNG_SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)


def _read_pnm(data: bytes) -> np.ndarray:
    parts, pos = [], 2
    while len(parts) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        parts.append(int(data[start:pos]))
    w, h, maxval = parts
    if maxval != 255:
        raise ValueError("only 8-bit PGM/PPM files are supported")
    c = 1 if data[:2] == b"P5" else 3
    pixels = np.frombuffer(data[pos + 1:pos + 1 + w * h * c], dtype=np.uint8)
    if pixels.size != w * h * c:
        raise ValueError("truncated PGM/PPM file")
    return pixels.reshape(h, w, c)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def read_image(path) -> np.ndarray:
    """The pixels of an image file as uint8 ``(H, W, C)`` (C = 1, 2, 3 or 4).

    A ``.npy`` file is returned as stored (any numeric dtype; a 2-D array gets
    a channel axis): float arrays there are pixels 0..255 like any others.
    Raises OSError when the file cannot be read and ValueError when it is not
    an image this can decode.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{str(p)!r} is a directory, not an image file")
    data = p.read_bytes()
    Image = _pillow()
    if data.startswith(_PNG_SIG):
        try:
            return read_png(data)
        except _NeedsPillow as e:
            if Image is None:
                raise ValueError(f"{e}; install Pillow (pip install pillow) to read it, or "
                                 "save it as an 8-bit non-interlaced PNG") from None
    elif data[:2] in (b"P5", b"P6"):
        return _read_pnm(data)
    elif p.suffix == ".npy":
        a = np.load(p, allow_pickle=False)
        if a.ndim not in (2, 3):
            raise ValueError(f"an image in a .npy file has 2 or 3 dimensions, got shape {a.shape}")
        return a if a.ndim == 3 else a[:, :, None]
    elif Image is None:
        raise ValueError("not a PNG, PGM/PPM or .npy file, and Pillow is not installed "
                         "for other formats (pip install pillow)")
    try:
        with Image.open(p) as im:
            return from_pil(im)
    except OSError as e:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read the image: {e}") from None


def from_pil(im) -> np.ndarray:
    """uint8 ``(H, W, C)`` pixels of a PIL image: grey (C=1) for modes 1, L, LA, I, I;16
    and F (16-bit values scaled to 8 bits), else RGB (C=3); alpha is dropped."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float64)  # 16-bit grey (PNG): 0..65535
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
    elif mode == "F":
        a = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
    else:
        a = np.asarray(im.convert("L" if mode in ("1", "L", "LA") else "RGB"))
    return a if a.ndim == 3 else a[:, :, None]


def load_image(source, channels: int, height: int, width: int) -> np.ndarray:
    """A path (str or os.PathLike) or a PIL image as ``(height, width, channels)``
    pixels for a model (:func:`read_image` or :func:`from_pil`, then :func:`fit_image`)."""
    if isinstance(source, (str, os.PathLike)):
        img = read_image(source)
    elif hasattr(source, "getbands") and hasattr(source, "mode"):
        img = from_pil(source)
    else:
        raise TypeError(f"expected a path or a PIL image, got {type(source).__name__}")
    return fit_image(img, channels, height, width)


def fit_image(img: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """Convert an ``(H, W, C)`` (or ``(H, W)``) image to the model's channels and size.

    Alpha is dropped; RGB becomes grey with ITU-R 601 weights for one-channel
    models, grey is repeated for three. The size is changed with area
    averaging when shrinking and bilinear interpolation when growing. uint8
    input gives uint8 (rounded); float input gives float32 (not rounded or
    clipped, so that float pixels keep their values).
    """
    a = np.asarray(img)
    if a.dtype == object or a.dtype.kind not in "uif" or a.ndim not in (2, 3):
        raise ValueError(f"an image is a numeric (H, W) or (H, W, C) array, got "
                         f"{a.dtype} of shape {a.shape}")
    floating = a.dtype.kind == "f"
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] in (2, 4):
        a = a[:, :, :-1]
    a = a.astype(np.float32)
    if channels == 1 and a.shape[2] == 3:
        a = (a @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    elif channels == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] != channels:
        raise ValueError(f"cannot convert a {a.shape[2]}-channel image to {channels} channels")
    a = _resize_axis(_resize_axis(a, height, 0), width, 1)
    if floating:
        return np.ascontiguousarray(a, dtype=np.float32)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _resize_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    m = a.shape[axis]
    if m == n:
        return a
    if m > n:  # area average: each output cell covers m/n input cells
        edges = np.arange(n + 1) * m / n
        weights = np.zeros((n, m), dtype=np.float32)
        for i in range(n):
            lo, hi = edges[i], edges[i + 1]
            for j in range(int(lo), min(int(np.ceil(hi)), m)):
                weights[i, j] = min(hi, j + 1) - max(lo, j)
        weights /= weights.sum(axis=1, keepdims=True)
    else:  # bilinear, align centres
        pos = (np.arange(n) + 0.5) * m / n - 0.5
        pos = np.clip(pos, 0, m - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, m - 1)
        frac = (pos - lo).astype(np.float32)
        weights = np.zeros((n, m), dtype=np.float32)
        weights[np.arange(n), lo] += 1 - frac
        weights[np.arange(n), hi] += frac
    return np.moveaxis(np.tensordot(weights, np.moveaxis(a, axis, 0), axes=1), 0, axis)
