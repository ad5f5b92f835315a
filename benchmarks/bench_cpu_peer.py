"""`fracture-batch score` with OpenVINO vs the plain PIL + OpenVINO scorer, alternated rounds
(fracture_batch/bench/cpu_peer.py). Usage:
  python -m benchmarks.bench_cpu_peer MODEL.int8.onnx CORPUS_DIR [WARMUP_DIR] [--rounds N] [--out DIR]
CORPUS_DIR: e.g. the small regime, `fracture-batch synth` / `synth.corpus.make_regime_corpus(d, "small", 600)`."""
import argparse
import os
import platform
import time
from pathlib import Path

from fracture_batch.bench.cpu_peer import DEFAULT_VARIANTS, Variant, alternate_rounds, write_report

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("corpus")
    p.add_argument("warmup", nargs="?")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--thread-variant", action="store_true", help="also score with --decode-isolation thread")
    p.add_argument("--one-worker-variant", action="store_true", help="also score with --decode-workers 1")
    p.add_argument("--out", default="bench_results")
    a = p.parse_args()
    from fracture_batch.machine import cpu_info

    variants = DEFAULT_VARIANTS + ((Variant("score/openvino/int8 (decode threads)", decode_isolation="thread"),)
                                   if a.thread_variant else ())
    variants += (Variant("score/openvino/int8 (1 decode worker)", decode_workers=1),) if a.one_worker_variant else ()
    load0, t0 = os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime())
    result = alternate_rounds(corpus=a.corpus, model=a.model, warmup=a.warmup, rounds=a.rounds, variants=variants)
    result.update(cpu=cpu_info().get("cpu_model", platform.processor()), load_before=load0,
                  load_after=os.getloadavg(), started_utc=t0)
    write_report(result, Path(a.out), f"# score vs plain PIL+OpenVINO, {a.rounds} alternated rounds\n\nCPU: "
                 f"{result['cpu']}; load average before {load0[0]:.2f}, after {result['load_after'][0]:.2f}; "
                 f"started {t0} UTC; model {a.model}; corpus {a.corpus}")
