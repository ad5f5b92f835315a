"""Scale-out: the scorer on a Ray cluster (Ray Data), same Predictor, same output contract.

``ray`` is an optional extra (``pip install 'fracture-batch[ray]'``) imported lazily:
importing this package (or ``ray_engine``) never imports ray.
"""
from __future__ import annotations

import enum


class Engine(str, enum.Enum):
    """Who executes ``score``: this machine's overlapped runner, or Ray Data on a cluster."""

    LOCAL = "local"
    RAY = "ray"
