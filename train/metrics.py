"""Training's metrics: the same implementation ``fracture-batch evaluate`` uses.

It lives in ``fracture_batch.model.metrics`` (the runtime may not import ``train``);
this module keeps training's import path.
"""
from fracture_batch.model.metrics import (  # noqa: F401
    METRIC_NAMES,
    binary_metrics,
    bootstrap_ci,
    curves,
    evaluate_predictions,
)

__all__ = ["METRIC_NAMES", "binary_metrics", "bootstrap_ci", "curves", "evaluate_predictions"]
