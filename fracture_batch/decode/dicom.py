"""DICOM decoding per the pixel contract (pydicom >= 3.0.2).

Order of work, so a bad file costs little:
1. header only: ``dcmread(defer_size=...)`` parses every element but leaves large values
   (Pixel Data) on disk, so Rows x Columns, the Pixel Data length and where it lies in the
   file are known before any pixel is read. Non-image objects (SR, RT, DICOMDIR, ...) are
   refused here by SOP class; absurd sizes by ``max_pixels``; uncompressed Pixel Data
   shorter than Rows x Columns x Frames x Samples x BitsAllocated says, or running past
   the end of the file, gives "pixel data shorter than the header says".
2. pixels of frame 0 only (``pydicom.pixels.pixel_array(..., index=0)``): multi-frame
   objects give one row, for their first frame. Compressed transfer syntaxes decode
   through the installed permissively licensed plugins: pylibjpeg-openjpeg (JPEG 2000),
   pylibjpeg-rle / pydicom (RLE), pyjpegls (JPEG-LS), python-gdcm (JPEG lossless and
   extended), Pillow (JPEG baseline); deflate is native to pydicom.
3. stored values -> Modality LUT (Rescale Slope/Intercept or LUT) -> VOI LUT, else the
   first Window Center/Width -> [0, 1] -> MONOCHROME1 inverted (after VOI: bone bright).
   The [0, 1] scaling uses the VOI stage's *output range*, not the data's min/max:
   pydicom's windowing maps into [y_min, y_max] = the stored-bits range (BitsStored,
   PixelRepresentation; a Modality LUT's own bit depth if it has one) passed through
   Rescale Slope/Intercept; a VOI LUT maps into [0, 2**bits - 1] (its LUT Descriptor).
   Without any VOI, the same modality-mapped stored-bits range is used, so a 12-bit image
   keeps its real contrast rather than being stretched to its own min/max.
   Colour (RGB, YBR_* converted to RGB by pydicom) -> luminance (ITU-R 601), scaled by
   the stored-bits range.

Header columns put in ``Decoded.meta`` (names match ``fracture_batch.scoring.rows``):
``dicom_study_instance_uid``, ``dicom_series_instance_uid``, ``dicom_sop_instance_uid``
(per ``IdentifierMode``: ``hash`` (default) = first 32 hex of SHA-256(salt + NUL + UID);
``keep``; ``drop`` = absent), ``dicom_sop_class`` (name), ``dicom_modality``,
``dicom_body_part_examined``, ``dicom_view_position``, ``dicom_photometric_interpretation``,
``dicom_bits_stored``, ``dicom_transfer_syntax_uid``, ``dicom_number_of_frames``.
Patient name, ID and birth date (and any other Patient module attribute) are never put in
the metadata in any mode.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fracture_batch.decode.types import Decoded, DecodeError, check_size
from fracture_batch.decode.types import IdentifierMode

log = logging.getLogger(__name__)

DEFER_SIZE = 4096  # values longer than this stay on disk until asked for
MAX_ELEMENTS = 50_000  # top-level header elements (real ones: hundreds, a few thousand with private tags)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_UID_COLUMNS = {
    "StudyInstanceUID": "dicom_study_instance_uid",
    "SeriesInstanceUID": "dicom_series_instance_uid",
    "SOPInstanceUID": "dicom_sop_instance_uid",
}
_PLAIN_COLUMNS = {
    "Modality": "dicom_modality",
    "BodyPartExamined": "dicom_body_part_examined",
    "ViewPosition": "dicom_view_position",
    "PhotometricInterpretation": "dicom_photometric_interpretation",
    "BitsStored": "dicom_bits_stored",
}


def hash_identifier(value: str, salt: str = "") -> str:
    return hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:32]


def dicom_header_fields(ds, identifiers: IdentifierMode = IdentifierMode.HASH, *, salt: str = "") -> dict[str, Any]:
    """Useful header columns; UIDs treated per ``identifiers``; never patient data."""
    identifiers = IdentifierMode(identifiers)
    out: dict[str, Any] = {}
    for keyword, column in _PLAIN_COLUMNS.items():
        value = ds.get(keyword)
        if value not in (None, ""):
            out[column] = int(value) if keyword == "BitsStored" else str(value)
    if identifiers is not IdentifierMode.DROP:
        for keyword, column in _UID_COLUMNS.items():
            value = ds.get(keyword)
            if value:
                out[column] = str(value) if identifiers is IdentifierMode.KEEP else hash_identifier(str(value), salt)
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax:
        out["dicom_transfer_syntax_uid"] = str(tsyntax)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if sop_class:
        out["dicom_sop_class"] = getattr(sop_class, "name", str(sop_class))
    out["dicom_number_of_frames"] = _frames(ds)
    return out


def decode_dicom(
    path: Path,
    *,
    max_pixels: int,
    identifiers: IdentifierMode = IdentifierMode.HASH,
    uid_salt: str = "",
    reduce_spec=None,
) -> Decoded:
    """``reduce_spec``: a ModelSpec whose reduction rule applies (``decode.reduce``); None
    decodes every pixel. A reduced result carries its ``geometry``."""
    from fracture_batch.decode.reduce import required_size

    ds, forced = read_header(path)
    rows, cols = validate_header(ds, path, max_pixels=max_pixels)
    need = required_size(cols, rows, reduce_spec)
    meta = dicom_header_fields(ds, identifiers, salt=uid_salt)
    geometry = None
    if need is not None:
        from fracture_batch.decode.dicom_frames import frame0_reduced

        arr, geometry = frame0_reduced(ds, need, lambda: _frame0(ds, path, forced),
                                       lambda: _check_jpeg_frame_header(ds))
    else:
        arr = _frame0(ds, path, forced)
    out = to_unit_gray(arr, ds)
    if need is not None and geometry is None and out.shape == (rows, cols):
        from fracture_batch.decode.reduce import reduce_by_box

        out, geometry = reduce_by_box(out, need)  # colour / LUT-table files: after the LUTs
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    log.debug("DICOM %s: %dx%d, %d-bit, %s", path, cols, rows, bits, meta.get("dicom_transfer_syntax_uid"))
    width, height = (geometry.width, geometry.height) if geometry is not None else (out.shape[1], out.shape[0])
    return Decoded(out, "dicom", width, height, bits, meta=meta, geometry=geometry)


def read_header(path: Path):
    """(dataset with Pixel Data left on disk, whether force=True was needed)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if _zeros_after_header(path):
        raise DecodeError("DICOM file holds only zero bytes after its header (an incompletely written file?)")
    from pydicom.filereader import read_partial

    for force in (False, True):
        try:
            with open(path, "rb") as fp:  # what dcmread does, with an element budget
                ds = read_partial(fp, _element_budget(), defer_size=DEFER_SIZE, force=force)
        except InvalidDicomError:
            continue  # no preamble/DICM: retried once with force for suffix-named files
        except DecodeError:
            raise
        except OSError as exc:
            raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
        except Exception as exc:  # pydicom raises many types on truncated headers
            raise DecodeError(f"corrupt or truncated DICOM header: {exc}") from None
        if force and "SOPClassUID" not in ds and "Rows" not in ds:
            break  # force parses anything; without these it is not DICOM at all
        if _is_deflated(ds):
            # Deferred values are re-read by file offset, which means nothing inside a
            # deflated stream: read such (rare) files whole.
            ds = pydicom.dcmread(path, force=force)
        return ds, force
    raise DecodeError("not a DICOM file (no DICM marker and no DICOM elements found)")


def _element_budget():
    """A ``stop_when`` for pydicom that refuses a dataset of more than ``MAX_ELEMENTS``
    top-level elements: a crafted 15 MB file of 2 million empty elements took 580 MB and
    14 s to parse (a 300 MB one would take ~11 GB); real headers have hundreds."""
    count = [0]

    def stop_when(tag, vr, length) -> bool:
        count[0] += 1
        if count[0] > MAX_ELEMENTS:
            raise DecodeError(f"DICOM header has more than {MAX_ELEMENTS:,} elements; not an image header")
        return False

    return stop_when


def _zeros_after_header(path: Path) -> bool:
    """True when the dataset (after any preamble and file meta) starts with 8 zero bytes.

    No stored dataset does; a preallocated file cut short, or a zeroed block, does, and
    pydicom reads zeros as a "command set" of 8-byte (0000,0000) elements to the end of the
    file: ~0.5 s per MB, minutes for a large file (found adversarially)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        with open(path, "rb") as fp:
            read_preamble(fp, True)
            _read_file_meta_info(fp)
            return fp.read(8) == b"\0" * 8
    except Exception:  # anything odd here is for the real parse to report
        return False


def _is_deflated(ds) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return bool(ts) and bool(getattr(ts, "is_deflated", False))


def describe_object(ds) -> str:
    """What a DICOM object is, for error messages ("DICOMDIR", an SOP class name, ...)."""
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if str(sop or "") == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (a media directory index, not an image)"
    if sop:
        return f"{getattr(sop, 'name', sop)} ({sop})"
    return f"modality {ds.get('Modality', 'unknown')}, no SOP Class UID"


def validate_header(ds, path: Path, *, max_pixels: int) -> tuple[int, int]:
    """Refuse non-images, absurd sizes and short Pixel Data before decoding."""
    if "PixelData" not in ds and "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds:
        raise DecodeError(
            f"truncated or incomplete DICOM image: the header describes a {ds.Columns}x{ds.Rows} "
            f"image ({describe_object(ds)}) but the file holds no Pixel Data"
        )
    if "PixelData" not in ds:
        alt = "float pixel data (not supported)" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else "no pixel data"
        raise DecodeError(f"DICOM object is not an image ({alt}): {describe_object(ds)}")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    check_size(cols, rows, max_pixels, what="DICOM image")
    frames = _frames(ds)
    if frames < 1:
        raise DecodeError(f"DICOM Number of Frames is {frames}")
    elem = ds.get_item(0x7FE00010, keep_deferred=True)
    length = getattr(elem, "length", None)
    tell = getattr(elem, "value_tell", None)
    if tell is not None and length not in (None, 0xFFFFFFFF) and not _is_deflated(ds):
        try:
            size = os.path.getsize(path)
        except OSError:
            size = None
        if size is not None and tell + length > size:
            raise DecodeError(
                f"truncated DICOM file: pixel data shorter than the header says "
                f"(element claims {length:,} bytes, only {max(size - tell, 0):,} in the file)"
            )
    if not ds.file_meta.get("TransferSyntaxUID", None) or not ds.file_meta.TransferSyntaxUID.is_compressed:
        from pydicom.pixels.utils import get_expected_length

        try:
            expected = get_expected_length(ds, unit="bytes")
        except Exception as exc:  # missing BitsAllocated / SamplesPerPixel etc.
            raise DecodeError(f"DICOM image header incomplete: {exc}") from None
        actual = length if length is not None else len(ds.PixelData or b"")
        if actual not in (None, 0xFFFFFFFF) and actual < expected:
            raise DecodeError(
                f"pixel data shorter than the header says: {actual:,} bytes for "
                f"{cols}x{rows}x{frames} frame(s) needing {expected:,}"
            )
    return rows, cols


def _frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


_NOT_GDCM = ("pylibjpeg", "pyjpegls", "pillow", "pydicom")  # preference order


def _decoding_plugin(ds) -> str:
    """python-gdcm aborts the whole process (an uncaught C++ exception, SIGABRT) on some
    corrupt codestreams (a JPEG-LS frame longer than Rows x Columns, found by
    tests/test_fuzz.py): use another available plugin for the transfer syntax, and gdcm
    only where it is the only decoder (JPEG lossless / extended). "" = pydicom's choice."""
    from pydicom.pixels import get_decoder

    try:
        plugins = get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins
    except Exception:  # uncompressed, unknown or missing transfer syntax
        return ""
    if "gdcm" not in plugins:
        return ""
    return next((p for p in _NOT_GDCM if p in plugins), "")


_GDCM_ONLY_JPEG = {"1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _check_jpeg_frame_header(ds) -> None:
    """python-gdcm, the only decoder here for JPEG extended / lossless, aborts the process
    on a codestream that contradicts the DICOM header (Bits Allocated 32 over 13-bit JPEG
    lossless; found by tests/test_fuzz.py). Compare frame 0's SOF with the header first."""
    from pydicom.encaps import generate_fragmented_frames

    frame = next(generate_fragmented_frames(ds.PixelData, number_of_frames=_frames(ds)), ())
    sof = _jpeg_sof(frame[0] if frame else b"")
    if sof is None:
        raise DecodeError("DICOM JPEG pixel data: header segments malformed or no frame header (SOF)")
    precision, height, width, components = sof
    allocated = int(ds.get("BitsAllocated") or 0)
    if (allocated not in (8, 16) or precision > allocated or components != int(ds.get("SamplesPerPixel") or 1)
            or width != int(ds.get("Columns") or 0) or height not in (0, int(ds.get("Rows") or 0))):
        raise DecodeError(
            f"DICOM header (Bits Allocated {allocated}, {ds.get('Columns')}x{ds.get('Rows')}, "
            f"{ds.get('SamplesPerPixel')} sample(s)) does not match its JPEG frame "
            f"({precision}-bit, {width}x{height}, {components} component(s))"
        )


def _jpeg_sof(data: bytes) -> tuple[int, int, int, int] | None:
    """(precision, height, width, components) from the SOF segment, or None unless the
    marker segments from SOI to SOS are well formed: gdcm also aborts on stray bytes
    between them (libjpeg's "extraneous bytes before marker"; found by fuzzing)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, sof = 2, None
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > len(data):
            return None
        if marker in _SOF_MARKERS and length >= 8:
            sof = (data[pos + 4], int.from_bytes(data[pos + 5 : pos + 7], "big"),
                   int.from_bytes(data[pos + 7 : pos + 9], "big"), data[pos + 9])
        if marker == 0xDA:
            return sof
        pos += 2 + length
    return None


def _frame0(ds, path: Path, forced: bool) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        plugin = _decoding_plugin(ds)
        if plugin == "" and str(ds.file_meta.get("TransferSyntaxUID", "")) in _GDCM_ONLY_JPEG:
            _check_jpeg_frame_header(ds)
        if _frames(ds) > 1 and not forced:
            # From the path, so only frame 0's bytes are read for uncompressed data.
            return pixel_array(str(path), index=0, decoding_plugin=plugin)
        return pixel_array(ds, index=0, decoding_plugin=plugin)  # frame 0 only is decoded
    except MemoryError:
        raise DecodeError("out of memory decoding DICOM pixel data") from None
    except Exception as exc:  # missing plugin, corrupt codestream, inconsistent header
        ts = ds.file_meta.get("TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", ts) or "unknown transfer syntax"
        hint = ""
        if str(ts) == "1.2.840.10008.1.2.4.51" and int(ds.get("BitsStored") or 8) > 8:
            # No permissively licensed decoder handles 12-bit JPEG Extended through pydicom.
            hint = " (12-bit JPEG Extended needs the optional GPL-3.0 package pylibjpeg-libjpeg)"
        raise DecodeError(f"DICOM pixel data cannot be decoded ({ts_name}){hint}: {exc}") from None


def stored_range(ds) -> tuple[float, float]:
    """Range of the Modality-LUT output for the stored bits (pydicom's windowing y range)."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    if ds.get("ModalityLUTSequence"):
        lut_bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**lut_bits - 1)
    if int(ds.get("PixelRepresentation") or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return min(lo, hi), max(lo, hi)


def to_unit_gray(arr: np.ndarray, ds) -> np.ndarray:
    """Stored values of one frame -> float32 (H, W) in [0, 1] per the pixel contract."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour: RGB after pydicom's YBR conversion; no LUTs apply
        hi = float(2 ** int(ds.get("BitsStored") or 8) - 1)
        gray = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(gray / np.float32(hi), 0.0, 1.0).astype(np.float32)
    seq = ds.get("VOILUTSequence")
    has_voi_lut = bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]
    if has_voi_lut or ds.get("ModalityLUTSequence"):
        out = unit_gray_pydicom(arr, ds)
    else:
        out = _rescale_window_unit(arr, ds)
    if photometric == "MONOCHROME1":
        out = 1.0 - out  # after VOI, so bone ends bright
    return out.astype(np.float32, copy=False)


def _first(ds, keyword: str) -> float:
    elem = ds[keyword]
    return float(elem.value[0] if elem.VM > 1 else elem.value)


def _rescale_window_unit(arr: np.ndarray, ds) -> np.ndarray:
    """Rescale + first window in closed form, float32, straight to [0, 1].

    pydicom's LINEAR window maps x to ((x - c') / w' + 0.5) * (y_max - y_min) + y_min, with
    y_min below and y_max above the window (c' = c - 0.5, w' = w - 1; LINEAR_EXACT: c, w);
    dividing by its output range leaves clip((x - c') / w' + 0.5, 0, 1), and SIGMOID
    1 / (1 + exp(-4 (x - c) / w)). Same numbers as ``unit_gray_pydicom`` (tested) at a
    fraction of the cost: one float32 pass instead of float64 masks (~150 ms saved on
    a 2000 x 2500 image).
    """
    values = arr.astype(np.float32)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        values *= np.float32(float(ds.RescaleSlope))
        values += np.float32(float(ds.RescaleIntercept))
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        lo, hi = stored_range(ds)
        values -= np.float32(lo)
        values *= np.float32(1.0 / max(hi - lo, 1e-6))
        return np.clip(values, 0.0, 1.0, out=values)
    center, width = _first(ds, "WindowCenter"), _first(ds, "WindowWidth")
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if func == "LINEAR":
        if width < 1:
            raise DecodeError(f"DICOM Window Width {width:g} < 1 is invalid for a LINEAR window")
        center, width = center - 0.5, width - 1
        if width == 0:  # width 1: a threshold at the centre
            return (values > np.float32(center)).astype(np.float32)
    elif func not in ("LINEAR_EXACT", "SIGMOID"):
        raise DecodeError(f"unsupported DICOM VOI LUT Function {func!r}")
    elif width <= 0:
        raise DecodeError(f"DICOM Window Width {width:g} must be > 0 for a {func} window")
    if func == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (values - np.float32(center)) / np.float32(width)))).astype(np.float32)
    values -= np.float32(center)
    values *= np.float32(1.0 / width)
    values += np.float32(0.5)
    return np.clip(values, 0.0, 1.0, out=values)


def unit_gray_pydicom(arr: np.ndarray, ds) -> np.ndarray:
    """The general path through pydicom's own LUT functions (VOI / Modality LUT tables),
    normalised by the VOI stage's output range (see the module docstring)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds)
    lo, hi = stored_range(ds)
    seq = ds.get("VOILUTSequence")
    has_lut = bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut or has_window:
        if has_lut and not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # pydicom's LUT lookup wants integers
        try:
            values = apply_voi_lut(values, ds, index=0)
        except Exception as exc:  # bad window width, unsupported LUT depth, ...
            raise DecodeError(f"DICOM VOI LUT / window cannot be applied: {exc}") from None
        if has_lut:
            lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    out = (np.asarray(values, dtype=np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))
    return np.clip(out, 0.0, 1.0)
