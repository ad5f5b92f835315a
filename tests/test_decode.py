"""Python raster decoders: bit depth, colour, orientation, limits (tiny generated images)."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from fracture_batch.decode import DecodeError, decode_file, decode_for_model, is_dicom, tiff_page_count
from fracture_batch.model.spec import ModelSpec
from support.imagegen import png_header_only, ramp

# 8-bit values are k/255 exactly representable to float32 rounding: 1e-6 is float eps scale.
EXACT = 1e-6


def test_8bit_png_scaled_by_255(tmp_path):
    arr = ramp()
    Image.fromarray(arr).save(tmp_path / "a.png")
    d = decode_file(tmp_path / "a.png")
    assert (d.format, d.width, d.height, d.bit_depth) == ("png", 56, 40, 8)
    np.testing.assert_allclose(d.pixels, arr / 255.0, atol=EXACT)


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16bit_scaled_by_65535_not_truncated(tmp_path, suffix):
    # Values above 255 everywhere: an 8-bit truncation (low byte) or clipping would show.
    arr = (ramp(hi=60000, dtype=np.uint16) + 300).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / f"a.{suffix}")
    d = decode_file(tmp_path / f"a.{suffix}")
    assert d.bit_depth == 16
    np.testing.assert_allclose(d.pixels, arr / 65535.0, atol=EXACT)
    assert d.pixels.max() > 0.9  # not squeezed to the low byte


def test_16bit_rgb_tiff_keeps_depth(tmp_path):
    import tifffile

    rgb = np.stack([ramp(hi=65535, dtype=np.uint16)] * 3, axis=-1)
    rgb[..., 0] = 1000  # makes the luminance weights matter
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    d = decode_file(tmp_path / "c.tif")
    want = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 65535
    assert d.bit_depth == 16
    np.testing.assert_allclose(d.pixels, want, atol=1e-5)  # float32 dot-product rounding


def test_16bit_rgb_tiff_orientation(tmp_path):
    import tifffile

    rgb = np.stack([ramp(hi=65535, dtype=np.uint16)] * 3, axis=-1)  # 40 x 56
    tifffile.imwrite(tmp_path / "o.tif", rgb, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    d = decode_file(tmp_path / "o.tif")
    np.testing.assert_allclose(d.pixels, np.rot90(rgb[..., 0], -1) / 65535.0, atol=1e-5)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "LA"])
def test_colour_becomes_luminance(tmp_path, mode):
    gray = Image.fromarray(ramp())
    img = Image.merge("RGB", [gray, gray.point(lambda v: 255 - v), gray]).convert(mode)
    fmt = "jpg" if mode == "CMYK" else "png"
    img.save(tmp_path / f"c.{fmt}", **({"quality": 100} if fmt == "jpg" else {}))
    d = decode_file(tmp_path / f"c.{fmt}")
    want = np.asarray(img.convert("RGB").convert("L"), np.float32) / 255
    assert d.pixels.shape == (40, 56) and d.pixels.dtype == np.float32
    # lossless formats: exact; CMYK JPEG at q100: a few grey levels of codec error.
    np.testing.assert_allclose(d.pixels, want, atol=EXACT if fmt == "png" else 6 / 255)


def test_exif_orientation_is_applied(tmp_path):
    arr = ramp()  # 40 x 56, landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    d = decode_file(tmp_path / "r.jpg")
    assert (d.height, d.width) == (56, 40)
    want = np.rot90(arr, -1) / 255.0
    assert np.abs(d.pixels - want).mean() < 0.02  # JPEG q100 noise only; wrong rotation ~0.2


def test_multipage_tiff_page0_and_page_limit(tmp_path):
    import tifffile

    pages = np.stack([ramp(), 255 - ramp()])
    tifffile.imwrite(tmp_path / "m.tif", pages)
    d = decode_file(tmp_path / "m.tif")
    np.testing.assert_allclose(d.pixels, ramp() / 255.0, atol=EXACT)
    many = np.zeros((300, 2, 2), np.uint8)
    tifffile.imwrite(tmp_path / "many.tif", many)
    assert tiff_page_count(tmp_path / "many.tif", limit=10) == 11  # stops counting early
    with pytest.raises(DecodeError, match="more than 256 pages"):
        decode_file(tmp_path / "many.tif")


def test_png_bomb_header_refused_before_allocation(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 50_000, 50_000)
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not leak
        with pytest.raises(DecodeError, match="above the limit"):
            decode_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 2.5e9 pixels would be >= 2.5 GB; anything past header parsing would show here.
    assert peak < 20_000_000


def test_max_pixels_is_per_call(tmp_path):
    Image.fromarray(ramp()).save(tmp_path / "a.png")
    with pytest.raises(DecodeError, match="above the limit of 100"):
        decode_file(tmp_path / "a.png", max_pixels=100)
    assert decode_file(tmp_path / "a.png").width == 56  # no global state left behind


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not an image"), (b"hello world, not an image", "not an image")],
)
def test_garbage_is_decode_error(tmp_path, content, message):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(DecodeError, match=message):
        decode_file(tmp_path / "x.png")


def test_truncated_png_is_decode_error(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="corrupt or truncated PNG"):
        decode_file(tmp_path / "t.png")


def test_missing_file_is_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="cannot read file"):
        decode_file(tmp_path / "nope.png")
    assert not is_dicom(tmp_path / "nope.png")


def test_decode_for_model_shape_and_no_pixels(tmp_path):
    Image.fromarray(ramp(hi=65535, dtype=np.uint16)).save(tmp_path / "a.png")
    spec = ModelSpec(input_size=32)
    tensor, meta = decode_for_model(tmp_path / "a.png", spec)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.float32
    assert meta.pixels.size == 0 and (meta.width, meta.height, meta.bit_depth) == (56, 40, 16)
    # channel 0 of white (1.0) after ImageNet normalisation is (1 - 0.485) / 0.229
    assert tensor[0].max() == pytest.approx((1 - 0.485) / 0.229, abs=1e-3)


def test_jpeg_draft_close_to_full_decode(tmp_path):
    from fracture_batch.model.preprocess import to_model_input
    from support.imagegen import smooth_noise

    arr = (smooth_noise(600, 520) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.jpg", quality=95)
    spec = ModelSpec(input_size=64)
    fast, _ = decode_for_model(tmp_path / "big.jpg", spec, reduce=True)
    full = to_model_input(decode_file(tmp_path / "big.jpg").pixels, spec)
    # DCT-domain 1/4 scaling vs full decode + antialiased resize: both low-pass the
    # same data; the residual is a few grey levels (0.02 * 0.229 * 255 ~ 1.2 levels mean).
    assert np.abs(fast - full).mean() < 0.02


@pytest.mark.parametrize("available", [True, False])
def test_resolve_decoder(monkeypatch, available):
    from fracture_batch.decode import select as decoders
    from fracture_batch.decode.select import DecoderKind, resolve_decoder

    monkeypatch.setattr(decoders, "has_dali", lambda: (available, "DALI missing (test)"))
    assert resolve_decoder("python") is DecoderKind.PYTHON
    assert resolve_decoder("auto", device="cpu") is DecoderKind.PYTHON  # measured: Python is faster on CPU
    assert resolve_decoder("auto", device="cuda") is (DecoderKind.DALI if available else DecoderKind.PYTHON)
    if available:
        assert resolve_decoder("dali") is DecoderKind.DALI
    else:
        with pytest.raises(RuntimeError, match="DALI missing"):
            resolve_decoder("dali")  # an explicit choice never silently falls back
