"""`fracture-batch report`: one self-contained HTML file, checked in a real headless Chromium.

The browser test needs Chromium (Debian's ``chromium`` package, /usr/bin/chromium, which
.ci/run installs) and playwright's Python package (no browser download: it drives the
system Chromium). Without either it skips and says which is missing.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from fracture_batch.cli import main
from fracture_batch.report.html import CAM_CAPTION, ReportConfig, build_report
from fracture_batch.report.rundata import error_cause
from fracture_batch.scoring.config import DecodeIsolation, ScoreConfig
from fracture_batch.scoring.local import score

from support import modelgen

CHROMIUM = os.environ.get("FRACTURE_BATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# An input name a report must show as text, never as markup.
HOSTILE = '<img src=x onerror=alert(1)>"&.png'


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install '.[dev]')"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    ckpt, onnx_path = modelgen.tiny_models(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("report")
    for i, p in enumerate(("XR_WRIST/patient00001/study1_positive", "XR_WRIST/patient00002/study1_negative",
                           "XR_HAND/patient00003/study1_positive")):
        modelgen.write_images(tmp / "in" / p, 2 + i, size=48, start=10 * i, formats=("png", "png16", "jpeg"))
    modelgen.write_bad_inputs(tmp / "in" / "bad")
    modelgen.write_images(tmp / "in" / "odd", 1)[0].rename(tmp / "in" / "odd" / HOSTILE)
    score(ScoreConfig(inputs=(str(tmp / "in"),), model=str(onnx_path), out=str(tmp / "out"), decoder="python",
                      batch_size=4, decode_workers=1, intra_op_threads=1, decode_isolation=DecodeIsolation.THREAD))
    return tmp, ckpt


@pytest.fixture(scope="module")
def report(run):
    pytest.importorskip("captum", reason="captum not installed (pip install '.[report]', which make installs)")
    tmp, ckpt = run
    return build_report(ReportConfig(out=str(tmp / "out"), checkpoint=str(ckpt), top=10))


def test_self_contained_escaped_and_complete(run, report):
    tmp, _ = run
    assert report == tmp / "out" / "_report.html"  # "_": readers of the dataset skip it
    text = report.read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/") for s in srcs)  # nothing to fetch
    assert not re.search(r"(?i)\b(href|src)\s*=\s*[\"']?(https?:|//|file:)", text)
    assert "<script" not in text.lower() and "default-src 'none'" in text
    assert HOSTILE not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    for section in ("Run summary", "Probabilities", "most suspicious studies", "Errors"):
        assert section in text, section
    assert CAM_CAPTION in text and "where the model looked" in text
    assert "patient00001/study1_positive" in text and "empty file" in text  # a study and an error message
    import pyarrow.dataset as ds

    assert ds.dataset(str(tmp / "out"), format="parquet").count_rows() > 0  # the report broke nothing


def test_error_causes_group_messages_of_one_kind():
    a = error_cause("cannot identify image file '/data/a/b.png'")
    assert a == error_cause("cannot identify image file '/other/c.png'")
    assert error_cause("empty file (0 bytes)") == error_cause("empty file (12 bytes)")


def test_cli_without_checkpoint_writes_where_asked(run, tmp_path):
    tmp, _ = run
    target = tmp_path / "triage.html"
    r = CliRunner().invoke(main, ["report", str(tmp / "out"), "--top", "2", "--out", str(target)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = target.read_text()
    assert "The 2 most suspicious studies" in text and CAM_CAPTION not in text


def test_renders_in_headless_chromium(report, tmp_path):
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
            title = page.title()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            ctx.close()
    assert problems == []
    assert [u for u in requests if not u.startswith("data:")] == [report.as_uri()]  # the file itself, nothing else
    assert len(images) >= 1 + 2 * 6  # histogram + each view and its overlay (6 views in 3 studies, more shown)
    assert all(complete and width > 0 for _, complete, width in images), images
    assert title.startswith("Fracture triage")
    assert (tmp_path / "report.png").stat().st_size > 10_000
    keep = os.environ.get("FRACTURE_BATCH_KEEP_SCREENSHOT")
    if keep:  # for a person to look at: FRACTURE_BATCH_KEEP_SCREENSHOT=/tmp/report.png
        shutil.copy(tmp_path / "report.png", keep)
