"""``export_report.json``: what export wrote, how each file was checked, and the result."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.parity import Parity

REPORT_NAME = "export_report.json"


@dataclass(frozen=True)
class VariantReport:
    variant: str
    path: str
    sha256: str
    size_bytes: int
    parity: Parity  # the measurement the bar is applied to (the worst when several)
    passed: bool
    failures: tuple[str, ...] = ()
    judged_by: str = "max_abs"  # parity.JudgedBy: the figure that decided (all are reported)
    checks: dict[str, Parity] = field(default_factory=dict)  # every measurement, by method
    details: dict[str, Any] = field(default_factory=dict)  # e.g. Q/DQ facts, fp16 op counts


@dataclass(frozen=True)
class EngineReport:
    path: str
    sidecar: str
    precision: str
    onnx: str
    build_seconds: float


@dataclass(frozen=True)
class ExportReport:
    checkpoint: str
    out_dir: str
    spec: dict[str, Any]
    calibration: dict[str, Any]  # source, n
    heldout: dict[str, Any]  # source, n, labelled
    bars: dict[str, float]
    variants: tuple[VariantReport, ...]
    engine: EngineReport | None = None
    tensorrt_skipped: str | None = None  # why no engine was built when one was asked for
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.variants)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / REPORT_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    def table(self) -> str:
        """Plain-text summary for the CLI."""
        head = (f"{'variant':<9} {'file':<22} {'MB':>6} {'max|Δp|':>9} {'mean|Δp|':>9} {'agree':>7} "
                f"{'flips':>6} {'near':>5} {'ΔAUC':>7}  result")
        lines = [head, "-" * len(head)]
        for v in self.variants:
            p = v.parity
            auc = "n/a" if p.auc_diff is None else f"{p.auc_diff:.4f}"
            result = f"ok (judged by {v.judged_by})" if v.passed else "FAIL: " + "; ".join(v.failures)
            lines.append(
                f"{v.variant:<9} {Path(v.path).name:<22} {v.size_bytes / 1e6:>6.1f} {p.max_abs_diff:>9.2e} "
                f"{p.mean_abs_diff:>9.2e} {p.agreement:>7.2%} {p.flips:>6} {p.near_threshold:>5} {auc:>7}  {result}"
            )
        line = f"parity on {self.heldout['n']} held-out images ({self.heldout['source']})"
        if any(v.variant.startswith("int8") for v in self.variants):
            line += f"; int8 calibrated on {self.calibration['n']} others ({self.calibration['source']})"
        lines.append(line)
        lines.append(f"flips: decisions changed at the threshold; near: images within max|Δp| of it (the only ones "
                     f"that can flip). int8 within {self.bars.get('int8_max_abs', 0):.0e} of fp32 passes whatever "
                     f"the flips; beyond it agreement and ΔAUC are judged.")
        if self.engine:
            lines.append(f"TensorRT engine: {self.engine.path} ({self.engine.precision}, built in {self.engine.build_seconds:.0f}s)")
        return "\n".join(lines)
