"""bitnn.imageio: PNG decoding of every filter type and colour type, and the
resizing of fit_image, against independent statements of the formulas.

The PNGs are encoded here by a small filter encoder written from the PNG
specification (section 9: None, Sub, Up, Average, Paeth), so the decoder is
checked against the specification, not against itself.
"""
import struct
import zlib

import numpy as np
import pytest

from bitnn.imageio import fit_image, read_png


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_row(ftype, row, prev, bpp):
    """The filtered bytes of one scanline (PNG spec 9.2), row/prev as ints."""
    out = []
    for x, v in enumerate(row):
        a = row[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][ftype]
        out.append((v - pred) % 256)
    return bytes([ftype] + out)


def encode_png(img, color, filters, palette=None):
    h, w, ch = img.shape
    bpp = ch
    raw, prev = b"", [0] * (w * bpp)
    for y in range(h):
        row = [int(v) for v in img[y].reshape(-1)]
        raw += filter_row(filters[y % len(filters)], row, prev, bpp)
        prev = row

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    if palette is not None:
        png += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    return png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("ftype", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("color, ch", [(0, 1), (4, 2), (2, 3), (6, 4)])
def test_every_filter_and_colour_type(ftype, color, ch):
    rng = np.random.default_rng(ftype * 10 + ch)
    img = rng.integers(0, 256, (9, 11, ch), dtype=np.uint8)
    img[2:5, 3:7] = 250  # flat areas make Paeth and Average ties and wrap-arounds
    img[5:, :2] = 0
    assert np.array_equal(read_png(encode_png(img, color, [ftype])), img)


def test_mixed_filters_per_row():
    img = np.random.default_rng(3).integers(0, 256, (12, 7, 3), dtype=np.uint8)
    assert np.array_equal(read_png(encode_png(img, 2, [4, 3, 1, 2, 0])), img)


def test_palette_image():
    pal = np.random.default_rng(4).integers(0, 256, (5, 3))
    idx = np.random.default_rng(5).integers(0, 5, (6, 8, 1), dtype=np.uint8)
    got = read_png(encode_png(idx, 3, [4], palette=pal))
    assert np.array_equal(got, pal[idx[:, :, 0]].astype(np.uint8))


def test_shrink_is_an_area_average():
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (12, 18, 1), dtype=np.uint8)
    got = fit_image(img, 1, 4, 6)  # exact 3x3 blocks
    want = img[:, :, 0].astype(np.float64).reshape(4, 3, 6, 3).mean(axis=(1, 3))
    assert np.abs(got[:, :, 0].astype(int) - np.rint(want)).max() <= 1  # float32 rounding
    flat = np.full((10, 10, 1), 77, np.uint8)
    assert (fit_image(flat, 1, 3, 7) == 77).all()  # fractional cells keep a flat image flat


def test_grow_is_bilinear_with_aligned_centres():
    img = np.array([[0, 100]], dtype=np.uint8)[:, :, None]  # 1 x 2
    got = fit_image(img, 1, 1, 4)[0, :, 0]
    # centres of 4 outputs on 2 inputs: positions -0.25, 0.25, 0.75, 1.25 -> clipped
    assert got.tolist() == [0, 25, 75, 100]
