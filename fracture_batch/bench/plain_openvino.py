"""The plain PIL + OpenVINO scorer: the ~40 lines a user who knows OpenVINO writes instead
of installing fracture-batch, the CPU peer row of the end-to-end bench (issue 17).

Written the obvious way and not sabotaged: PIL decode -> gray -> resize to the model size
-> ImageNet normalisation -> 3 channels; the project's own ONNX file (int8 Q/DQ) compiled
by OpenVINO with the THROUGHPUT hint and an ``AsyncInferQueue``, batches of 16, decode in
the main thread overlapping the asynchronous inference; probabilities to Parquet at the end.
"""
from __future__ import annotations

import time


def plain_openvino_score(paths: list[str], model_path: str, out_parquet: str | None = None,
                         batch_size: int = 16) -> dict:
    import numpy as np
    import openvino as ov
    import pandas as pd
    from PIL import Image

    t_start = time.perf_counter()
    compiled = ov.Core().compile_model(model_path, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    queue = ov.AsyncInferQueue(compiled)
    size = compiled.input(0).get_partial_shape()[2].get_length()
    build_s = time.perf_counter() - t_start
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    probs = np.zeros(len(paths), np.float32)

    def done(request, start):
        logits = request.get_output_tensor(0).data
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs[start:start + len(logits)] = (e / e.sum(1, keepdims=True))[:, 0]

    queue.set_callback(done)
    for start in range(0, len(paths), batch_size):
        batch = []
        for p in paths[start:start + batch_size]:
            gray = Image.open(p).convert("L").resize((size, size), Image.Resampling.BILINEAR)
            batch.append((np.asarray(gray, np.float32)[None] / 255.0 - mean) / std)
        queue.start_async({0: np.stack(batch)}, start)
    queue.wait_all()
    if out_parquet:
        pd.DataFrame({"path": paths, "prob_fractured": probs}).to_parquet(out_parquet)
    seconds = time.perf_counter() - t_start
    return {"n": len(paths), "seconds": seconds, "images_per_s": len(paths) / (seconds - build_s),
            "build_s": build_s}
