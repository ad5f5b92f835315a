"""Hostile inputs made in code: decompression bombs, absurd headers, PHI-laden DICOM,
code-running checkpoints, escaping ONNX external data, and small valid seeds for fuzzing.

Everything is crafted byte by byte (or with pydicom / onnx for the containers), so the
files are tiny on disk however large they claim to be, and no test ships binaries.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

# PHI and hostile header values the output must never echo (or use as a path).
PATIENT_NAME = "Hostile^Patient"
PATIENT_ID = "PHI-ID-0042"
PATIENT_BIRTH = "19451231"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1111"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2222"
SOP_UID = "1.2.826.0.1.3680043.8.498.3333"
HOSTILE_PATH_VALUE = "../../escaped"


# ---- PNG ---------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 0, idat: bytes | None = None) -> bytes:
    """A PNG whose IHDR claims ``width x height`` (valid CRCs) with a tiny IDAT.

    The default IDAT holds one filtered row of zeros, so a decoder that trusts the
    header and allocates first would need width*height bytes for a few-hundred-byte file.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\0" * (1 + min(width, 4096)))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_fix_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC (so a mutation gets past the CRC check to the parser)."""
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (n,) = struct.unpack(">I", out[pos : pos + 4])
        end = pos + 8 + n
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4 : end])) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(out)


# ---- JPEG --------------------------------------------------------------------------------
def jpeg_with_size(width: int, height: int) -> bytes:
    """A real baseline JPEG whose SOF0 header is rewritten to claim ``width x height``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    for off, _size, _endian, name in jpeg_fields(bytes(data)):
        if name == "sof_height":
            data[off : off + 2] = struct.pack(">H", height)
        elif name == "sof_width":
            data[off : off + 2] = struct.pack(">H", width)
    return bytes(data)


# ---- TIFF --------------------------------------------------------------------------------
def tiff_many_pages(n_pages: int, *, cycle: bool = False) -> bytes:
    """A little-endian TIFF of ``n_pages`` 1x1 8-bit pages, crafted IFD by IFD (~120 B a
    page). ``cycle``: the last IFD points back to the first (an endless chain)."""
    entries = 9
    ifd_size = 2 + 12 * entries + 4
    header = b"II" + struct.pack("<HI", 42, 8)
    out = bytearray(header)
    data_off = 8 + n_pages * ifd_size  # one pixel byte per page, after all IFDs
    for i in range(n_pages):
        start = 8 + i * ifd_size
        nxt = start + ifd_size if i + 1 < n_pages else (8 if cycle else 0)
        tags = [
            (256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, data_off + i), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, 1),
        ]
        out += struct.pack("<H", entries)
        for tag, typ, count, value in tags:
            out += struct.pack("<HHII", tag, typ, count, value)
        out += struct.pack("<I", nxt)
    out += bytes(range(256)) * (n_pages // 256) + bytes(range(n_pages % 256))
    return bytes(out)


# ---- DICOM -------------------------------------------------------------------------------
def dicom_bytes(
    arr: np.ndarray | None = None,
    *,
    rows: int | None = None,
    columns: int | None = None,
    pixel_data: bytes | None = None,
    hostile_values: bool = True,
    compress: str | None = None,
    deflate: bool = False,
) -> bytes:
    """An explicit-VR little-endian DICOM image carrying patient PHI, with header values
    overridable independently of the pixel data (``rows``/``columns``/``pixel_data``)."""
    from pydicom import config
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    arr = np.asarray(arr if arr is not None else _ramp16(8, 10))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflate else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = PATIENT_BIRTH
    ds.Modality = "DX"
    ds.BodyPartExamined = "HAND"
    if hostile_values:
        # Values a careless tool might turn into file names or paths.
        ds.SeriesDescription = HOSTILE_PATH_VALUE + "/series"
        ds.StudyDescription = "/etc/passwd"
        ds.StudyID = HOSTILE_PATH_VALUE
    if arr.ndim == 3:  # (frames, H, W)
        ds.NumberOfFrames = arr.shape[0]
    ds.Rows = rows if rows is not None else arr.shape[-2]
    ds.Columns = columns if columns is not None else arr.shape[-1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    if compress is not None:
        ds.compress(compress, arr.astype(np.uint16), generate_instance_uid=False)
    else:
        ds.PixelData = pixel_data if pixel_data is not None else arr.astype("<u2").tobytes()
    buf = io.BytesIO()
    with config.disable_value_validation():
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _ramp16(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 257 + y * 131) % 4096).astype(np.uint16)


def dicomdir_bytes(referenced_file_id: list[str]) -> bytes:
    """A DICOMDIR (Media Storage Directory) whose one IMAGE record references
    ``referenced_file_id`` (e.g. ``["..", "..", "secret.dcm"]``: the path traversal of
    CVE-2026-32711 if a reader followed it)."""
    from pydicom import config
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID + ".9"
    ds.FileSetID = "ARCHIVE"
    record = Dataset()
    record.DirectoryRecordType = "IMAGE"
    with config.disable_value_validation():  # ".." is not a valid CS value: that is the point
        record.ReferencedFileID = referenced_file_id
    record.ReferencedSOPClassUIDInFile = "1.2.840.10008.5.1.4.1.1.7"
    record.ReferencedSOPInstanceUIDInFile = SOP_UID
    record.ReferencedTransferSyntaxUIDInFile = ExplicitVRLittleEndian
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence([record])
    buf = io.BytesIO()
    with config.disable_value_validation():
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dicom_element_bomb(n_elements: int = 2_000_000) -> bytes:
    """A DICOM file whose dataset is ``n_elements`` distinct empty private elements
    (8 bytes each, implicit VR): tiny per element, huge for a parser that keeps them all."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2"  # implicit VR little endian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = SOP_UID
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    i = np.arange(n_elements, dtype=np.uint32)
    elements = np.zeros((n_elements, 4), "<u2")
    elements[:, 0] = 0x0011 + 2 * (i >> 16)  # odd (private) groups, so every tag is distinct
    elements[:, 1] = i & 0xFFFF
    return b"\0" * 128 + b"DICM" + fp.getvalue() + elements.tobytes()


def bombs(directory: Path) -> dict[str, Path]:
    """One file per issue-7 bomb; each must become one error row, fast, in little memory."""
    return {
        "png_50k": write(directory / "bomb_50000x50000.png", png_bytes(50_000, 50_000)),
        "png_16bit_rgba_30k": write(directory / "bomb_rgba16.png", png_bytes(30_000, 30_000, bit_depth=16, colour_type=6)),
        "jpeg_65k": write(directory / "bomb_65500.jpg", jpeg_with_size(65_500, 65_500)),
        "dicom_65535": write(directory / "bomb_65535.dcm", dicom_bytes(rows=65_535, columns=65_535)),
        "dicom_short": write(directory / "short_pixeldata.dcm", dicom_bytes(rows=512, columns=512)),
        "dicom_truncated": write(directory / "truncated.dcm", dicom_bytes(_ramp16(64, 64))[:-3000]),
        "tiff_5000_pages": write(directory / "pages_5000.tif", tiff_many_pages(5000)),
        "tiff_cycle": write(directory / "pages_cycle.tif", tiff_many_pages(3, cycle=True)),
        # A real header, then 20 MB of zeros (a preallocated file cut short): pydicom would
        # read the zeros as millions of 8-byte elements (~10 s).
        "dicom_zero_filled": write(directory / "zero_filled.dcm", dicom_bytes()[:300] + bytes(20 << 20)),
        "dicom_2m_elements": write(directory / "elements.dcm", dicom_element_bomb()),
    }


# ---- fuzz seeds --------------------------------------------------------------------------
def seeds() -> dict[str, bytes]:
    """Small valid files of every input format, named ``<id>.<suffix>``."""
    from PIL import Image

    gray = (np.add.outer(np.arange(12) * 9, np.arange(16) * 7) % 256).astype(np.uint8)
    out: dict[str, bytes] = {}

    def save(name: str, img, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, **kw)
        out[name] = buf.getvalue()

    save("gray8.png", Image.fromarray(gray), format="PNG")
    save("gray16.png", Image.fromarray(gray.astype(np.uint16) * 257), format="PNG")
    save("rgb.png", Image.fromarray(np.stack([gray, gray[::-1], 255 - gray], -1)), format="PNG")
    save("palette.png", Image.fromarray(gray).convert("P"), format="PNG")
    save("gray.jpg", Image.fromarray(gray), format="JPEG", quality=90)
    save("progressive.jpg", Image.fromarray(np.stack([gray] * 3, -1)), format="JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif.jpg", Image.fromarray(gray), format="JPEG", exif=exif)
    save("gray.bmp", Image.fromarray(gray), format="BMP")
    save("gray8.tif", Image.fromarray(gray), format="TIFF")
    save("lzw16.tif", Image.fromarray(gray.astype(np.uint16) * 257), format="TIFF", compression="tiff_lzw")
    out["pages.tif"] = tiff_many_pages(3)
    save("gray.gif", Image.fromarray(gray), format="GIF")
    save("gray.webp", Image.fromarray(gray), format="WEBP", lossless=True)
    out["plain.dcm"] = dicom_bytes(hostile_values=False)
    out["frames.dcm"] = dicom_bytes(np.stack([_ramp16(8, 10)] * 3), hostile_values=False)
    out["deflate.dcm"] = dicom_bytes(hostile_values=False, deflate=True)
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    for name, uid, arr in (("rle.dcm", RLELossless, None), ("jpegls.dcm", JPEGLSLossless, None),
                           ("j2k.dcm", JPEG2000Lossless, _ramp16(32, 32))):
        try:
            out[name] = dicom_bytes(arr, hostile_values=False, compress=uid)
        except Exception:  # encoder plugin unavailable: the other seeds still run
            pass
    for name, make in (("htj2k.dcm", _htj2k_dicom), ("jpegbase.dcm", _jpeg_baseline_dicom)):
        data = make()
        if data:
            out[name] = data  # reduced-resolution paths (issue 13): OpenJPH skipres, DCT scaling
    lossless = _gdcm_jpeg_lossless(out["plain.dcm"])
    if lossless:
        out["lossless.dcm"] = lossless  # decoded only by python-gdcm
    return out


def _encapsulated_dicom(arr: np.ndarray, stream: bytes, ts: str, bits: int) -> bytes:
    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(arr, hostile_values=False)))
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    if bits == 8:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.WindowCenter, ds.WindowWidth = 128, 256
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _htj2k_dicom() -> bytes | None:
    try:
        import imagecodecs
        from pydicom.uid import HTJ2KLossless
    except ImportError:
        return None
    arr = _ramp16(32, 32)
    return _encapsulated_dicom(arr, bytes(imagecodecs.htj2k_encode(arr, reversible=True)), HTJ2KLossless, 12)


def _jpeg_baseline_dicom() -> bytes:
    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit

    arr = (_ramp16(32, 32) >> 4).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return _encapsulated_dicom(arr, buf.getvalue(), JPEGBaseline8Bit, 8)


def _gdcm_jpeg_lossless(dicom: bytes) -> bytes | None:
    """``dicom`` re-encoded as JPEG Lossless SV1 by GDCM (pydicom has no JPEG encoder)."""
    import tempfile

    try:
        import gdcm
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src.dcm", Path(tmp) / "dst.dcm"
        src.write_bytes(dicom)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        if not reader.Read():
            return None
        change.SetInput(reader.GetImage())
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        if not change.Change():
            return None
        writer.SetImage(change.GetOutput())
        return dst.read_bytes() if writer.Write() else None


# ---- structure-aware field finders (offset, size, endian, name) ------------------------
def png_fields(data: bytes) -> list[tuple[int, int, str, str]]:
    fields = []
    pos = 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        fields.append((pos, 4, ">", f"len_{kind.decode('latin-1')}"))
        if kind == b"IHDR":
            fields += [(pos + 8, 4, ">", "width"), (pos + 12, 4, ">", "height"),
                       (pos + 16, 1, ">", "bit_depth"), (pos + 17, 1, ">", "colour_type")]
        pos += 12 + n
    return fields


def jpeg_fields(data: bytes) -> list[tuple[int, int, str, str]]:
    fields = []
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (n,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        fields.append((pos + 2, 2, ">", f"len_{marker:02x}"))
        if marker in (0xC0, 0xC1, 0xC2):
            fields += [(pos + 4, 1, ">", "sof_precision"), (pos + 5, 2, ">", "sof_height"),
                       (pos + 7, 2, ">", "sof_width"), (pos + 9, 1, ">", "sof_components")]
        if marker == 0xDA:
            break
        pos += 2 + n
    return fields


def bmp_fields(data: bytes) -> list[tuple[int, int, str, str]]:
    names = [(2, 4, "file_size"), (10, 4, "pixel_offset"), (14, 4, "header_size"), (18, 4, "width"),
             (22, 4, "height"), (26, 2, "planes"), (28, 2, "bit_count"), (30, 4, "compression"),
             (34, 4, "image_size"), (46, 4, "colours_used")]
    return [(o, s, "<", n) for o, s, n in names if o + s <= len(data)]


def tiff_fields(data: bytes) -> list[tuple[int, int, str, str]]:
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return []
    e = "<" if data[:2] == b"II" else ">"
    fields = [(4, 4, e, "first_ifd")]
    (off,) = struct.unpack(e + "I", data[4:8])
    seen = set()
    while off and off not in seen and off + 2 <= len(data) and len(seen) < 4:
        seen.add(off)
        (n,) = struct.unpack(e + "H", data[off : off + 2])
        fields.append((off, 2, e, "ifd_count"))
        for i in range(n):
            ent = off + 2 + 12 * i
            if ent + 12 > len(data):
                break
            (tag,) = struct.unpack(e + "H", data[ent : ent + 2])
            fields += [(ent + 2, 2, e, f"type_{tag}"), (ent + 4, 4, e, f"count_{tag}"), (ent + 8, 4, e, f"value_{tag}")]
        nxt = off + 2 + 12 * n
        if nxt + 4 > len(data):
            break
        fields.append((nxt, 4, e, "next_ifd"))
        (off,) = struct.unpack(e + "I", data[nxt : nxt + 4])
    return fields


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_DICOM_VALUES = {(0x0028, 0x0010): "rows", (0x0028, 0x0011): "columns", (0x0028, 0x0100): "bits_allocated",
                 (0x0028, 0x0101): "bits_stored", (0x0028, 0x0002): "samples", (0x0028, 0x0103): "pixel_repr"}


def dicom_fields(data: bytes) -> list[tuple[int, int, str, str]]:
    """Length fields of top-level explicit-VR LE elements, and the image-size values."""
    fields = []
    pos = 132
    while pos + 8 <= len(data):
        group, elem = struct.unpack("<HH", data[pos : pos + 4])
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            len_off, size, value_off = pos + 8, 4, pos + 12
        else:
            len_off, size, value_off = pos + 6, 2, pos + 8
        if len_off + size > len(data):
            break
        (n,) = struct.unpack("<I" if size == 4 else "<H", data[len_off : len_off + size])
        fields.append((len_off, size, "<", f"len_{group:04x}{elem:04x}"))
        name = _DICOM_VALUES.get((group, elem))
        if name and n == 2:
            fields.append((value_off, 2, "<", name))
        if n == 0xFFFFFFFF:
            break  # undefined length (encapsulated pixel data, sequences): stop here
        pos = value_off + n
    return fields + j2k_fields(data)


def j2k_fields(data: bytes) -> list[tuple[int, int, str, str]]:
    """A JPEG 2000 stream's SIZ sizes / precision and COD decomposition levels (what the
    reduced-resolution decode reads from the header), wherever the stream sits."""
    at = data.find(b"\xff\x4f\xff\x51")
    if at < 0:
        return []
    siz = at + 6  # after SOC, the SIZ marker and its length
    fields = [(siz + 2, 4, ">", "j2k_xsiz"), (siz + 6, 4, ">", "j2k_ysiz"), (siz + 34, 2, ">", "j2k_csiz"),
              (siz + 36, 1, ">", "j2k_ssiz")]
    cod = data.find(b"\xff\x52", at)
    if cod > 0:
        fields.append((cod + 9, 1, ">", "j2k_cod_levels"))
    return [f for f in fields if f[0] + f[1] <= len(data)]


def fields_for(name: str, data: bytes) -> list[tuple[int, int, str, str]]:
    suffix = name.rsplit(".", 1)[-1]
    finder = {"png": png_fields, "jpg": jpeg_fields, "bmp": bmp_fields, "tif": tiff_fields,
              "dcm": dicom_fields}.get(suffix, lambda _: [])
    try:
        return finder(data)
    except struct.error:
        return []


# ---- untrusted model files ---------------------------------------------------------------
class _WritesMarker:
    """Unpickling this calls ``open(marker, 'w')``: the classic code-execution payload."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_checkpoint(path: Path, marker: Path, *, wrap_real: Path | None = None) -> Path:
    """A ``.pt`` whose unpickling would create ``marker``. With ``wrap_real``, the payload
    sits inside an otherwise valid checkpoint dict (spec + state_dict), so only the
    unpickler's restrictions stand between the file and the code."""
    import torch

    payload: dict = {"format": 1, "spec": {}, "state_dict": {}}
    if wrap_real is not None:
        payload = torch.load(wrap_real, weights_only=True)
    payload["extra"] = _WritesMarker(str(marker))
    torch.save(payload, path)
    return path


def onnx_with_external_location(model_path: Path, location: str) -> Path:
    """A one-node ONNX model whose only initializer's external data sits at ``location``
    (written to the model's folder as a plain single file first, then redirected)."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    w = model.graph.initializer[0]
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(model_path))
    return model_path
