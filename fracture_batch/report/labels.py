"""Where the labels of a scored run come from: class folders, MURA study folders, a CSV.

- ``class-folders``: an ImageFolder tree, a folder named after one of the spec's classes
  (``fractured/``, ``not_fractured/``, any case) anywhere in an image's relative path;
- ``mura``: MURA's ``studyN_positive`` / ``studyN_negative`` study folders;
- ``csv`` (``--labels FILE``): a CSV with a header naming a key column (``path``,
  ``relpath``, ``study``, ``study_folder`` or ``study_key``) and ``label``, or MURA's
  headerless label file (``MURA-v1.1/valid/XR_WRIST/patient11185/study1/,1``). Keys match
  an image path or a study folder by whole trailing path components (the longest key
  wins), so paths relative to any parent directory work. Labels are a class name,
  positive/negative, abnormal/normal, 1/0, yes/no or true/false;
- ``auto``: the CSV when one is given, else MURA folders when any image has one, else
  class folders.
Only the standard library here: the CLI imports this module to build its options.
"""
from __future__ import annotations

import csv
import enum
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fracture_batch.model.spec import ModelSpec

_MURA_LABEL = re.compile(r"(?i)^study[0-9]+_(positive|negative)$")
_POSITIVE = {"1", "true", "yes", "positive", "abnormal", "fracture"}
_NEGATIVE = {"0", "false", "no", "negative", "normal"}


class LabelSource(str, enum.Enum):
    AUTO = "auto"
    CLASS_FOLDERS = "class-folders"
    MURA = "mura"
    CSV = "csv"


class LabelError(ValueError):
    """Labels cannot be read or match nothing; the message says what to pass."""


def parse_label(value: str, spec: "ModelSpec") -> int:
    v = value.strip().lower()
    negative = next(c for c in spec.class_names if c != spec.positive_class).lower()
    if v in _POSITIVE or v == spec.positive_class.lower():
        return 1
    if v in _NEGATIVE or v == negative:
        return 0
    raise LabelError(f"label {value!r} is not one of {spec.positive_class}/{negative}, positive/negative, "
                     "abnormal/normal, 1/0, true/false")


def _norm(p: str) -> str:
    return p.strip().replace("\\", "/").strip("/")


_AMBIGUOUS = -1


class CsvLabels:
    """Keys of a label CSV matched to paths by trailing path components.

    A path matches a key when the key is a trailing part of the path ("XR_WRIST/p1/study1"
    matches "/data/valid/XR_WRIST/p1/study1"), or when the path's tail equals the key's
    last two or more components (MURA's "MURA-v1.1/valid/..." keys match a copy unpacked
    under another name). Longest match wins; a tail two keys share with different labels
    matches neither.
    """

    def __init__(self, path: str | Path, spec: "ModelSpec"):
        self.path = Path(path)
        self.labels: dict[str, int] = {}
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        if not rows:
            raise LabelError(f"{self.path} holds no labels")
        header = [c.strip().lower() for c in rows[0]]
        key_col = next((header.index(k) for k in ("path", "relpath", "study", "study_folder", "study_key")
                        if k in header), None)
        if key_col is not None:
            if "label" not in header:
                raise LabelError(f"{self.path}: a header with {header[key_col]!r} needs a 'label' column")
            label_col, body = header.index("label"), rows[1:]
        else:  # MURA's headerless "study/path/,1"
            key_col, label_col, body = 0, 1, rows
        for i, r in enumerate(body, start=2 if body is not rows else 1):
            if len(r) <= max(key_col, label_col):
                raise LabelError(f"{self.path}, line {i}: expected a key and a label, got {r}")
            try:
                self.labels[_norm(r[key_col])] = parse_label(r[label_col], spec)
            except LabelError as exc:
                raise LabelError(f"{self.path}, line {i}: {exc}") from None
        self.tails: dict[str, int] = {}
        for key, label in self.labels.items():
            parts = key.split("/")
            for n in range(2, len(parts)):
                tail = "/".join(parts[-n:])
                self.tails[tail] = label if self.tails.get(tail, label) == label else _AMBIGUOUS
        self.longest = max((k.count("/") + 1 for k in self.labels), default=1)

    def lookup(self, path: str) -> int | None:
        parts = _norm(path).split("/")
        for n in range(min(len(parts), self.longest), 0, -1):  # longest trailing match first
            tail = "/".join(parts[-n:])
            hit = self.labels.get(tail)
            if hit is None:
                hit = self.tails.get(tail)
            if hit is not None and hit != _AMBIGUOUS:
                return hit
        return None


def folder_label(relpath: str, source: LabelSource, spec: "ModelSpec") -> int | None:
    dirs = _norm(relpath).split("/")[:-1]
    if source is LabelSource.MURA:
        for d in reversed(dirs):
            m = _MURA_LABEL.match(d)
            if m:
                return int(m.group(1).lower() == "positive")
        return None
    classes = {c.lower(): int(c == spec.positive_class) for c in spec.class_names}
    for d in reversed(dirs):
        if d.lower() in classes:
            return classes[d.lower()]
    return None


def is_mura_folder(relpath: str) -> bool:
    """Whether an image lies in a MURA ``studyN_positive/_negative`` folder."""
    return any(_MURA_LABEL.match(d) for d in _norm(relpath).split("/")[:-1])
