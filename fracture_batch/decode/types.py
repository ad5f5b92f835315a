"""Types every decoder shares: the decoded image, the one error type, the mode enums.

Kept apart from the dispatcher (``fracture_batch.decode``) so the format modules
(``raster``, ``dicom``, ``dali``) import them without importing each other.
"""
from __future__ import annotations

import enum
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)

# 10k x 10k: above any plain radiograph (CR/DR ~ 3k x 3.5k, mammography ~ 4k x 5k);
# one such image is 400 MB as float32, so a few in flight stay within memory.
DEFAULT_MAX_PIXELS = 100_000_000
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


class DecodeError(Exception):
    """A file that cannot become pixels; the message is shown to the user as is."""


def contained(fn):
    """Hostile bytes make third-party parsers raise anything (ValueError from PIL's PNG
    and TIFF headers, NotImplementedError / ValueError from pydicom's lazy elements, even
    pyo3's ``PanicException``, a ``BaseException``, from the Rust RLE decoder): at this
    boundary all of it becomes a ``DecodeError``, so one bad file is one error row.
    Found by tests/test_fuzz.py; the cases live in tests/fuzz_regressions/."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DecodeError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except MemoryError:
            raise DecodeError("out of memory decoding this file (does its header claim a huge image?)") from None
        except OSError as exc:
            raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
        except BaseException as exc:
            log.debug("decoder failure on %s", args[0] if args else "?", exc_info=True)
            raise DecodeError(f"corrupt or unsupported file ({exc.__class__.__name__}: {exc})") from None

    return wrapper


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W) float32 in [0, 1]; empty (0, 0) from decode_for_model
    format: str  # png | jpeg | tiff | bmp | dicom | ...
    width: int
    height: int
    bit_depth: int
    meta: dict[str, Any] = field(default_factory=dict)
    # Set when ``pixels`` is a reduced decode (``decode.reduce``): where they sit on the
    # full width x height image. None: ``pixels`` is the full image.
    geometry: Any = None


def check_size(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    if width <= 0 or height <= 0:
        raise DecodeError(f"{what} has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(
            f"{what} is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (raise --max-pixels if this is a real image)"
        )


class DecoderKind(str, enum.Enum):
    AUTO = "auto"
    DALI = "dali"
    PYTHON = "python"
    # DICOM decoded on the device by nvImageCodec + torch (decode.gpu_dicom); other formats
    # by the Python decoders. Runs on CPU backends without a GPU (slower than python there).
    NVIMGCODEC = "nvimgcodec"


class ReduceOverride(str, enum.Enum):
    """``score --decode-reduce``: follow the model spec's reduction rule, or decode every
    pixel for this run (a check against the full decode; the spec is not changed)."""

    SPEC = "spec"
    OFF = "off"


class IdentifierMode(str, enum.Enum):
    """How DICOM UIDs (study / series / SOP instance) are written to outputs.

    ``hash`` (default): SHA-256 of (salt, NUL, UID), first 32 hex characters (128 bits:
    no collisions at archive scale). Joins across runs and files still work (the same UID
    always gives the same token with the same salt), but the raw UIDs, which lead back to
    a patient's study at the originating site, do not leave it unless the user asks for
    ``keep``. Without a salt anyone holding the original UIDs can recompute the tokens;
    a site-secret salt (``--uid-salt``) prevents that.
    ``keep``: written as given. ``drop``: not written at all (columns are null).
    Patient name, ID and birth date are never written, whatever the mode.
    """

    KEEP = "keep"
    HASH = "hash"
    DROP = "drop"


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute, not symlink-resolved: the identity used for resume
    relpath: str  # relative to the input root it was found under
    size: int = -1
    error: str | None = None  # set when the file is known bad before decoding


# DICOM columns and the Decoded.meta keys they are filled from (first key present wins;
# the decoder's dicom_* names first, DICOM keywords as a fallback, except for UIDs,
# which are taken only from the decoder's already-treated dicom_* keys).
DICOM_COLUMNS: dict[str, tuple[str, ...]] = {
    "dicom_modality": ("dicom_modality", "Modality"),
    "dicom_body_part_examined": ("dicom_body_part_examined", "BodyPartExamined"),
    "dicom_view_position": ("dicom_view_position", "ViewPosition"),
    "dicom_photometric_interpretation": (
        "dicom_photometric_interpretation", "PhotometricInterpretation", "photometric",
    ),
    "dicom_bits_stored": ("dicom_bits_stored", "BitsStored"),
    "dicom_sop_class": ("dicom_sop_class",),
    "dicom_transfer_syntax_uid": ("dicom_transfer_syntax_uid", "TransferSyntaxUID"),
    "dicom_number_of_frames": ("dicom_number_of_frames", "NumberOfFrames"),
    "dicom_study_instance_uid": ("dicom_study_instance_uid",),
    "dicom_series_instance_uid": ("dicom_series_instance_uid",),
    "dicom_sop_instance_uid": ("dicom_sop_instance_uid",),
}

INT_DICOM_COLUMNS = ("dicom_number_of_frames", "dicom_bits_stored")


def dicom_columns(meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col, keys in DICOM_COLUMNS.items():
        for k in keys:
            v = meta.get(k)
            if v is not None and v != "":
                out[col] = _as_int(v) if col in INT_DICOM_COLUMNS else str(v)
                break
    return out


def _as_int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
