"""ONNX export (fp32, fp16, int8 Q/DQ in two flavours), parity checks, TensorRT engine build."""
from export.api import export_model
from export.config import ExportConfig, ParityBars, Precision, Variant
from export.parity import ParityError

__all__ = ["export_model", "ExportConfig", "ParityBars", "Precision", "Variant", "ParityError"]
