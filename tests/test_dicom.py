"""DICOM: pixel contract, compressed transfer syntaxes, non-images, limits, identifiers."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from pydicom import uid

from fracture_batch.decode import DecodeError, decode_file, is_dicom
from fracture_batch.decode.types import IdentifierMode
from fracture_batch.decode.dicom import hash_identifier
from support.imagegen import PATIENT_BIRTH, PATIENT_ID, PATIENT_NAME, make_dicom, make_non_image, ramp

EXACT = 1e-6  # float32 rounding of values computed in float64


def ramp12() -> np.ndarray:
    return ramp(hi=4095, dtype=np.uint16)


def test_12bit_no_window_scaled_by_stored_bits(tmp_path):
    arr = ramp12()
    d = decode_file(make_dicom(tmp_path / "a.dcm", arr, bits_stored=12))
    assert (d.format, d.bit_depth, d.width, d.height) == ("dicom", 12, 56, 40)
    np.testing.assert_allclose(d.pixels, arr / 4095.0, atol=EXACT)


def test_12bit_rescale_and_window(tmp_path):
    arr = ramp12()
    slope, intercept, center, width = 2.0, -1000.0, 3000.0, 4000.0
    d = decode_file(make_dicom(tmp_path / "w.dcm", arr, bits_stored=12, rescale=(slope, intercept), window=(center, width)))
    # pydicom LINEAR window (PS3.3 C.11.2.1.2.1), output range = stored-bits range after rescale.
    x = arr * slope + intercept
    y_min, y_max = intercept, 4095 * slope + intercept
    c, w = center - 0.5, width - 1
    y = np.clip(((x - c) / w + 0.5), 0, 1) * (y_max - y_min) + y_min
    want = (y - y_min) / (y_max - y_min)
    np.testing.assert_allclose(d.pixels, want, atol=1e-5)
    assert d.pixels.min() == 0.0 and d.pixels.max() == 1.0  # the window clips both ends here


@pytest.mark.parametrize(
    "func, rescale, signed, window",
    [
        ("LINEAR", None, False, (2048, 4096)),
        ("LINEAR", (2.0, -1000.0), False, (3000, 4000)),
        ("LINEAR", (1.0, -1024.0), True, (40, 400)),
        ("LINEAR", None, False, (1000, 1)),  # width 1: a threshold
        ("LINEAR_EXACT", (0.5, 10.0), False, (700, 900)),
        ("SIGMOID", None, False, (2000, 1500)),
        (None, (2.0, -1000.0), False, None),  # no window: stored-bits range after rescale
        (None, None, True, None),
    ],
)
def test_closed_form_matches_pydicom_luts(tmp_path, func, rescale, signed, window):
    """The float32 closed form equals pydicom's apply_voi_lut normalised by its output
    range (which checks that range too): 2e-6 is float32 rounding on [0, 1]."""
    import pydicom

    from fracture_batch.decode.dicom import _rescale_window_unit, unit_gray_pydicom

    arr = (ramp12().astype(np.int16) - 2048) if signed else ramp12()
    extra = {"VOILUTFunction": func} if func else None
    ds = pydicom.dcmread(make_dicom(tmp_path / "w.dcm", arr, bits_stored=12, signed=signed, rescale=rescale,
                                    window=window, extra=extra))
    fast, ref = _rescale_window_unit(arr, ds), unit_gray_pydicom(arr, ds)
    np.testing.assert_allclose(fast, ref, atol=2e-6)
    assert fast.dtype == np.float32 and 0.0 <= fast.min() and fast.max() <= 1.0


def test_first_of_several_windows(tmp_path):
    arr = ramp12()
    d = decode_file(make_dicom(tmp_path / "w2.dcm", arr, bits_stored=12, window=([1000, 3000], [500, 4000])))
    # window 0 (centre 1000, width 500) saturates everything above ~1250 to white
    assert (d.pixels[arr > 1300] == 1.0).all() and (d.pixels[arr < 700] == 0.0).all()


def test_voi_lut_sequence_range(tmp_path):
    arr = ramp(hi=255, dtype=np.uint16)
    lut = [min(4 * i, 1023) for i in range(256)]  # 10-bit output
    d = decode_file(make_dicom(tmp_path / "l.dcm", arr, bits_stored=8, voi_lut=(0, 10, lut)))
    np.testing.assert_allclose(d.pixels, np.minimum(4 * arr, 1023) / 1023.0, atol=EXACT)


def test_monochrome1_inverted_after_voi_bone_bright(tmp_path):
    arr = ramp12()  # MONOCHROME1: high stored values display dark
    d1 = decode_file(make_dicom(tmp_path / "m1.dcm", arr, bits_stored=12, photometric="MONOCHROME1", window=(2048, 4096)))
    d2 = decode_file(make_dicom(tmp_path / "m2.dcm", arr, bits_stored=12, window=(2048, 4096)))
    np.testing.assert_allclose(d1.pixels, 1.0 - d2.pixels, atol=EXACT)
    assert d1.pixels[arr == 4095].max() < 0.01 and d1.pixels[arr == 0].min() > 0.99


def test_signed_pixels(tmp_path):
    arr = (ramp12().astype(np.int16) - 2048).astype(np.int16)
    d = decode_file(make_dicom(tmp_path / "s.dcm", arr, bits_stored=12, signed=True))
    np.testing.assert_allclose(d.pixels, (arr + 2048) / 4095.0, atol=EXACT)


def test_found_by_content_without_suffix(tmp_path):
    path = make_dicom(tmp_path / "IM0001", ramp12(), bits_stored=12)
    assert is_dicom(path)
    assert decode_file(path).format == "dicom"


@pytest.mark.parametrize("name", ["raw.dcm", "IM0002"])
def test_no_preamble_found_by_content(tmp_path, name):
    path = make_dicom(tmp_path / name, ramp12(), bits_stored=12, preamble=False)
    assert is_dicom(path)  # a bare dataset: recognised by its first element
    np.testing.assert_allclose(decode_file(path).pixels, ramp12() / 4095.0, atol=EXACT)


@pytest.mark.parametrize("preamble", [True, False])
def test_multiframe_gives_frame0(tmp_path, preamble):
    frames = np.stack([ramp12(), 4095 - ramp12(), ramp12() // 2]).astype(np.uint16)
    d = decode_file(make_dicom(tmp_path / "mf.dcm", frames, bits_stored=12, preamble=preamble))
    np.testing.assert_allclose(d.pixels, frames[0] / 4095.0, atol=EXACT)
    assert d.meta["dicom_number_of_frames"] == 3


def test_colour_dicom_to_luminance(tmp_path):
    rgb = np.stack([ramp(), 255 - ramp(), np.full((40, 56), 30, np.uint8)], axis=-1)
    d = decode_file(make_dicom(tmp_path / "c.dcm", rgb))
    want = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255
    np.testing.assert_allclose(d.pixels, want, atol=1e-5)


@pytest.mark.parametrize(
    "ts, bits",
    [
        (uid.RLELossless, 12),  # pylibjpeg-rle / pydicom encoder
        (uid.JPEGLSLossless, 12),  # pyjpegls
        (uid.JPEG2000Lossless, 12),  # pylibjpeg-openjpeg
    ],
)
def test_compressed_lossless_roundtrip(tmp_path, ts, bits):
    arr = ramp12()
    d = decode_file(make_dicom(tmp_path / "c.dcm", arr, bits_stored=bits, compress=ts))
    assert d.meta["dicom_transfer_syntax_uid"] == ts
    np.testing.assert_allclose(d.pixels, arr / 4095.0, atol=EXACT)  # lossless: exact


def test_jpeg2000_lossy(tmp_path):
    from support.imagegen import smooth_noise

    arr = (smooth_noise(64, 64) * 4095).astype(np.uint16)
    path = make_dicom(tmp_path / "j.dcm", arr, bits_stored=12)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.compress(uid.JPEG2000, arr, j2k_cr=[10], generate_instance_uid=False)
    ds.save_as(path)
    d = decode_file(path)
    assert np.abs(d.pixels - arr / 4095.0).mean() < 0.01  # 10:1 on smooth data: sub-1% error


def test_jpeg_baseline_encapsulated(tmp_path):
    """JPEG baseline: a Pillow-encoded codestream, encapsulated (pydicom cannot encode it)."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    arr = ramp()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=100)
    path = make_dicom(tmp_path / "jb.dcm", arr, transfer_syntax=uid.JPEGBaseline8Bit, encapsulated=[buf.getvalue()])
    d = decode_file(path)
    assert np.abs(d.pixels - arr / 255.0).max() < 8 / 255  # q100 JPEG: a few levels


def _gdcm_transcode(src, dst, ts_name: str):
    """Re-encode ``src`` with GDCM's own codecs (pydicom has no JPEG encoder)."""
    gdcm = pytest.importorskip("gdcm")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, ts_name)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return dst


def test_jpeg_lossless_via_gdcm(tmp_path):
    """JPEG lossless (process 14 SV1): encoded by GDCM, decoded by our path (GDCM plugin)."""
    arr = ramp12()
    src = make_dicom(tmp_path / "src.dcm", arr, bits_stored=12)
    d = decode_file(_gdcm_transcode(src, tmp_path / "jl.dcm", "JPEGLosslessProcess14_1"))
    assert d.meta["dicom_transfer_syntax_uid"] == uid.JPEGLosslessSV1
    np.testing.assert_allclose(d.pixels, arr / 4095.0, atol=EXACT)


def test_jpeg_extended_12bit_says_what_is_missing(tmp_path):
    """12-bit JPEG Extended: no permissive decoder via pydicom; the error row says which
    optional (GPL) package would read it instead of a bare plugin failure."""
    import importlib.util

    if importlib.util.find_spec("libjpeg") is not None:
        pytest.skip("pylibjpeg-libjpeg installed: 12-bit JPEG Extended decodes")
    src = make_dicom(tmp_path / "src.dcm", ramp12(), bits_stored=12)
    path = _gdcm_transcode(src, tmp_path / "jx.dcm", "JPEGExtendedProcess2_4")
    with pytest.raises(DecodeError, match="JPEG Extended.*pylibjpeg-libjpeg"):
        decode_file(path)


def test_deflated_transfer_syntax(tmp_path):
    arr = ramp12()
    d = decode_file(make_dicom(tmp_path / "d.dcm", arr, bits_stored=12, transfer_syntax=uid.DeflatedExplicitVRLittleEndian))
    assert d.meta["dicom_transfer_syntax_uid"] == uid.DeflatedExplicitVRLittleEndian
    np.testing.assert_allclose(d.pixels, arr / 4095.0, atol=EXACT)


@pytest.mark.parametrize(
    "kind, message",
    [("sr", "Basic Text SR Storage"), ("rtplan", "RT Plan Storage"), ("dicomdir", "DICOMDIR")],
)
def test_non_image_objects_say_what_they_are(tmp_path, kind, message):
    path = make_non_image(tmp_path / f"{kind}.dcm", kind)
    with pytest.raises(DecodeError, match=f"not an image.*{message}"):
        decode_file(path)


def test_truncated_pixel_data(tmp_path):
    path = make_dicom(tmp_path / "t.dcm", ramp12(), bits_stored=12)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DecodeError, match="pixel data shorter than the header says"):
        decode_file(path)


def test_truncated_before_pixel_data(tmp_path):
    path = make_dicom(tmp_path / "h.dcm", ramp12(), bits_stored=12)
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00")])  # cut at the Pixel Data tag
    with pytest.raises(DecodeError, match="truncated or incomplete DICOM image.*56x40"):
        decode_file(path)


def test_pixel_element_shorter_than_rows_columns(tmp_path):
    # A consistent file whose Rows/Columns claim more than the element holds.
    path = make_dicom(tmp_path / "s.dcm", ramp12(), bits_stored=12, extra={"Rows": 80})
    with pytest.raises(DecodeError, match="pixel data shorter than the header says"):
        decode_file(path)


def test_absurd_rows_columns_refused_before_pixels(tmp_path):
    path = make_dicom(tmp_path / "big.dcm", ramp12(), bits_stored=12, extra={"Rows": 60000, "Columns": 60000})
    tracemalloc.start()
    with pytest.raises(DecodeError, match="above the limit"):
        decode_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20_000_000  # 3.6e9 pixels were never allocated


def test_garbage_with_dcm_suffix(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"definitely not dicom" * 10)
    with pytest.raises(DecodeError, match="DICOM"):
        decode_file(tmp_path / "x.dcm")


def test_header_columns_and_phi_never_in_meta(tmp_path):
    import pydicom

    path = make_dicom(tmp_path / "p.dcm", ramp12(), bits_stored=12)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for mode in IdentifierMode:
        meta = decode_file(path, identifiers=mode).meta
        text = repr(meta)
        for phi in (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH, "Doe"):
            assert phi not in text
        assert meta["dicom_modality"] == "DX" and meta["dicom_body_part_examined"] == "HAND"
        assert meta["dicom_view_position"] == "PA" and meta["dicom_bits_stored"] == 12
        assert meta["dicom_photometric_interpretation"] == "MONOCHROME2"
        assert meta["dicom_transfer_syntax_uid"] == uid.ExplicitVRLittleEndian
        sop = meta.get("dicom_sop_instance_uid")
        if mode is IdentifierMode.KEEP:
            assert sop == ds.SOPInstanceUID and meta["dicom_study_instance_uid"] == ds.StudyInstanceUID
        elif mode is IdentifierMode.HASH:
            assert sop == hash_identifier(ds.SOPInstanceUID) and ds.SOPInstanceUID not in text
            assert len(sop) == 32
        else:
            assert sop is None and "dicom_study_instance_uid" not in meta
    salted = decode_file(path, uid_salt="site-secret").meta["dicom_sop_instance_uid"]
    assert salted != hash_identifier(ds.SOPInstanceUID) and salted == hash_identifier(ds.SOPInstanceUID, "site-secret")


def test_compressed_multiframe_gives_frame0(tmp_path):
    frames = np.stack([ramp12(), 4095 - ramp12()]).astype(np.uint16)
    d = decode_file(make_dicom(tmp_path / "mf.dcm", frames, bits_stored=12, compress=uid.JPEG2000Lossless))
    np.testing.assert_allclose(d.pixels, frames[0] / 4095.0, atol=EXACT)
