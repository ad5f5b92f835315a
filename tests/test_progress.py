"""Output for logs and pipes: progress as a line per few percent, third-party chatter kept out."""
from __future__ import annotations

import ctypes
import io
import logging

from click.testing import CliRunner

from fracture_batch.cli import main
from fracture_batch.progress import LineProgress, create_progress, quiet_output

from support import modelgen


def test_line_progress_writes_a_line_per_step_not_frames():
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="scoring", unit="img", step=5.0, min_interval=0.0, file=out)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 20  # 5 %, 10 %, ... 95 %, then the final 100 % line
    assert lines[0].startswith("scoring:   5% 50/1000 img") and lines[-1].startswith("scoring: 100% 1000/1000")


def test_a_total_learned_late_still_gives_few_lines():
    out = io.StringIO()
    bar = LineProgress(total=None, desc="x", file=out, interval=3600, min_interval=0.0)
    for _ in range(300):
        bar.update(1)  # total unknown (discovery still running): time-based lines only
    bar.total = 400
    for _ in range(100):
        bar.update(1)
    bar.close()
    assert len(out.getvalue().splitlines()) <= 6  # 80 %, 85 %, 90 %, 95 %, the final line


def test_a_fast_stage_prints_only_its_last_line(monkeypatch):
    import fracture_batch.progress as progress

    monkeypatch.setattr(progress.time, "monotonic", lambda: 100.0)  # every step within the same instant
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="synth", file=out)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines() == ["synth: 100% 1000/1000 it [00:00, 0.0 it/s]"]


def test_not_a_terminal_means_no_tqdm():
    assert isinstance(create_progress(10, file=io.StringIO()), LineProgress)


def test_quiet_output_sends_prints_and_c_level_writes_to_the_debug_log(capfd, caplog):
    libc = ctypes.CDLL(None)
    with caplog.at_level(logging.DEBUG, logger="fracture_batch.progress"):
        with quiet_output("calibrator"):
            print("Number of tensors : 50")
            libc.puts(b"[INFO] tile 1/1")
            libc.fflush(None)
    captured = capfd.readouterr()
    assert "Number of tensors" not in captured.out and "[INFO]" not in captured.out
    assert "Number of tensors : 50" in caplog.text and "[INFO] tile 1/1" in caplog.text


def test_score_in_a_pipe_prints_progress_lines_without_carriage_returns(tmp_path, tmp_path_factory):
    _, onnx_path = modelgen.tiny_models(tmp_path_factory)
    modelgen.write_images(tmp_path / "in", 40)
    r = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--model", str(onnx_path), "--out",
                                  str(tmp_path / "out"), "--decode-workers", "1", "--intra-op-threads", "1",
                                  "--decode-isolation", "thread", "--batch-size", "2", "--progress"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output
    progress = [line for line in r.output.splitlines() if line.startswith("scoring:")]
    assert 1 <= len(progress) <= 21 and progress[-1].startswith("scoring: 100% 40/40")
