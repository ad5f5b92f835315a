"""What a scoring run is told (``ScoreConfig``) and what it reports (``ScoreSummary``).

Shared by both engines (``local`` and ``ray``); the CLI builds a ScoreConfig from its
options and nothing else.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from fracture_batch.backends import BackendKind, DeviceKind
from fracture_batch.decode.types import DecoderKind, IdentifierMode


class Engine(str, enum.Enum):
    """Who executes ``score``: this machine's overlapped runner, or Ray Data on a cluster."""

    LOCAL = "local"
    RAY = "ray"


class DecodeIsolation(str, enum.Enum):
    """Where the Python decoders run: worker threads, or one child process per worker
    (hard ``--decode-timeout``: the child is killed, the file becomes an error row)."""

    THREAD = "thread"
    PROCESS = "process"


class StudyKey(str, enum.Enum):
    """How image rows are grouped into studies (``scoring.studies`` explains each rule)."""

    AUTO = "auto"  # DICOM StudyInstanceUID when the row has one, else the study folder
    FOLDER = "folder"  # the study folder (the nearest MURA-style studyN*/, else the parent), even for DICOM
    PARENT = "parent"  # each file's parent folder, even for DICOM or inside a studyN*/ tree


class StudyAggregate(str, enum.Enum):
    """How a study's image probabilities become one: their mean (MURA's rule) or max."""

    MEAN = "mean"
    MAX = "max"


@dataclass(frozen=True)
class ScoreConfig:
    inputs: tuple[str, ...]
    model: str
    out: str
    backend: BackendKind = BackendKind.AUTO
    device: DeviceKind = DeviceKind.AUTO
    device_id: int = 0  # the CUDA device the backend and the DALI decoders use
    decoder: DecoderKind = DecoderKind.AUTO
    batch_size: int = 32
    decode_workers: int = 0  # 0: resolve_threads decides
    intra_op_threads: int = 0  # 0: resolve_threads decides
    decode_isolation: DecodeIsolation = DecodeIsolation.PROCESS
    decode_timeout: float = 60.0
    part_rows: int = 5000
    part_seconds: float = 60.0
    resume: bool = True
    overwrite: bool = False
    max_pixels: int = 100_000_000
    identifiers: IdentifierMode = IdentifierMode.HASH  # how DICOM UIDs reach the rows
    uid_salt: str = ""
    decode_reduce: str = "spec"  # decode.types.ReduceOverride
    amp: bool = False
    engine_cache_dir: str | None = None  # default: <out>/_engine_cache (nothing outside --out)
    study_key: StudyKey = StudyKey.AUTO  # the study table (OUT/_studies), rebuilt at the end of every run
    study_aggregate: StudyAggregate = StudyAggregate.MEAN
    inference_precision: str = "auto"  # openvino: backends.openvino_backend.InferencePrecision
    openvino_cache_dir: str | None = None  # default: ~/.cache/fracture-batch/openvino

    def __post_init__(self) -> None:
        # Callers (CLI, tests, Ray) may pass the modes as their strings: one type inside.
        for name, kind in (("backend", BackendKind), ("device", DeviceKind), ("decoder", DecoderKind),
                           ("decode_isolation", DecodeIsolation), ("identifiers", IdentifierMode),
                           ("study_key", StudyKey), ("study_aggregate", StudyAggregate)):
            object.__setattr__(self, name, kind(getattr(self, name)))


@dataclass
class ScoreSummary:
    out: str
    files_seen: int = 0
    already_done: int = 0
    scored: int = 0
    ok: int = 0
    errors: int = 0
    parts_written: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    backend: str = ""
    backend_detail: str = ""
    backend_reason: str = ""
    device: str = ""
    decoder: str = ""
    threads: dict[str, int] = field(default_factory=dict)
    decode_paths: dict[str, int] = field(default_factory=dict)  # device / cpu:<fallback reason> / ...
    skipped: list[dict[str, str]] = field(default_factory=list)
    dataset_rows: int = 0
    started_at: str = ""
    finished_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScoreAborted(Exception):
    """The run stopped early (disk full, interrupt, backend crash); committed parts are intact."""
