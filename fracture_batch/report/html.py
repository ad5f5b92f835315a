"""``fracture-batch report``: one self-contained HTML triage page for a scored run.

Everything is inside the file: CSS inline, figures and thumbnails as data URIs, no
script at all. A Content-Security-Policy (``default-src 'none'``) makes the browser
refuse any network request and any script, so a file name like ``<script>.png`` (every
value is HTML-escaped as well) can neither run nor phone home.

Sections: run summary (files, ok, errors by cause, images/s, model, threshold, date),
the probability histogram with the threshold, the N most suspicious studies with
windowed thumbnails (and, with a checkpoint, class-activation overlays captioned as
where the model looked, not a localisation), and the error table.
"""
from __future__ import annotations

import datetime as dt
import html
import logging
from dataclasses import dataclass
from pathlib import Path

from fracture_batch.report.plots import plot_histogram, write_atomic
from fracture_batch.report.rundata import RunData, TopStudy, load_run
from fracture_batch.report.thumbs import GradCam, ThumbMaker, png_uri

log = logging.getLogger(__name__)

REPORT_NAME = "_report.html"  # "_": pyarrow, pandas and Spark skip it when they read OUT
CAM_CAPTION = ("Grad-CAM: where the model looked, not a localisation of the fracture. "
               "Warm colours weigh most in its score.")
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}
header{background:#1d2430;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c2d0;font-size:13px}main{padding:8px 28px 40px;max-width:1280px}
h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d5dae1;padding-bottom:4px}
table{border-collapse:collapse;background:#fff}td,th{padding:4px 10px;border-bottom:1px solid #e6e9ee;
text-align:left;vertical-align:top}th{background:#eef1f5;font-weight:600}
table.kv th{width:210px;background:#fff;font-weight:500;color:#556}
.num{text-align:right;font-variant-numeric:tabular-nums}
.study{background:#fff;border:1px solid #d5dae1;border-radius:6px;margin:0 0 14px;padding:10px 14px}
.study h3{margin:0 0 6px;font-size:15px}.study h3 .rank{color:#778;margin-right:6px}
.meta{color:#445;font-size:13px;margin-bottom:8px}.views{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:204px}figure img{display:block;max-width:200px;max-height:200px;border:1px solid #ccd;
background:#000}figcaption{font-size:12px;color:#445;word-break:break-all;margin-top:3px}
.pair{display:flex;gap:6px}.pair figure{width:auto}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.pos{background:#fbe3e4;color:#9b1c23}.neg{background:#e3f3e7;color:#1d6b34}.na{background:#eee;color:#555}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:10px 0;font-size:13px}
.muted{color:#778}footer{color:#778;font-size:12px;margin-top:36px}
"""


@dataclass(frozen=True)
class ReportConfig:
    out: str  # the scored dataset
    report_path: str | None = None  # default OUT/_report.html
    checkpoint: str | None = None  # model.pt: class-activation overlays
    top: int = 20
    max_views: int = 4
    max_errors: int = 200
    thumb_px: int = 200


def e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt_prob(p) -> str:
    return "–" if p is None else f"{p:.3f}"


def _badge(label: str | None, spec) -> str:
    if label is None:
        return '<span class="badge na">no readable image</span>'
    cls = "pos" if label == spec.positive_class else "neg"
    return f'<span class="badge {cls}">{e(label)}</span>'


def _summary(run: RunData, cam_note: str) -> str:
    s = run.success or {}
    spec = run.spec
    causes = "<br>".join(f"{n:,} × {e(c)}" for c, n in run.error_causes[:8]) or "none"
    if len(run.error_causes) > 8:
        causes += f"<br><span class='muted'>… {len(run.error_causes) - 8} more kinds (table below)</span>"
    rows = [
        ("files", f"{run.n_rows:,} rows in the dataset" + (f" ({s['files_seen']:,} found by the last run)"
                                                           if "files_seen" in s else "")),
        ("ok", f"{run.n_ok:,}"), ("errors", f"{run.n_errors:,}"), ("errors by cause", causes),
        ("studies", f"{run.study_table.num_rows:,} ({e(run.rules.to_dict()['study_key'])} grouping, study "
                    f"probability = {e(run.rules.to_dict()['aggregate'])} of its views)"),
        ("images/s (last run)", f"{s['images_per_s']:.1f}" if "images_per_s" in s else "–"),
        ("model", f"{e(s.get('model', '?'))}<br><span class='muted'>{e(spec.arch)} at {spec.input_size} px, "
                  f"sha256 {e(str(s.get('model_sha256', ''))[:16])}…</span>"),
        ("backend", f"{e(s.get('backend', '?'))} on {e(s.get('device', '?'))}"),
        ("threshold", f"{spec.threshold:.4f} <span class='muted'>({e(spec.threshold_method.value)}"
                      f"{': ' + e(spec.threshold_detail) if spec.threshold_detail else ''})</span>"),
        ("scored", f"{e(s.get('started_at', '?'))} – {e(s.get('finished_at', 'run not finished (no _SUCCESS)'))}"),
        ("overlays", cam_note),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section id="summary"><h2>Run summary</h2><table class="kv">{body}</table></section>'


def _histogram(run: RunData) -> str:
    sp = run.study_table.column("prob_study").to_numpy(zero_copy_only=False)
    sp = sp[~(sp != sp)] if len(sp) else sp  # drop NaN (studies without a readable image)
    png = plot_histogram(run.image_probs, sp, run.spec.threshold)
    return ('<section id="histogram"><h2>Probabilities</h2>'
            f'<img alt="histogram of image and study probabilities with the threshold" src="{png_uri(png)}">'
            "</section>")


def _study(t: TopStudy, thumbs: ThumbMaker, spec) -> str:
    r = t.row
    figures = []
    for v in t.views:
        caption = f"{e(Path(v.relpath).name)} · p {_fmt_prob(v.prob)}"
        if v.status != "ok":
            figures.append(f'<figure><figcaption>{caption}<br>error: {e(v.error)}</figcaption></figure>')
            continue
        th = thumbs.make(v.path)
        if th.uri is None:
            figures.append(f'<figure><figcaption>{caption}<br>{e(th.error)}</figcaption></figure>')
            continue
        img = f'<figure><img alt="{e(v.relpath)}" src="{th.uri}"><figcaption>{caption}</figcaption></figure>'
        if th.overlay:
            img = (f'<div class="pair">{img}<figure><img alt="class activation of {e(v.relpath)}" '
                   f'src="{th.overlay}"><figcaption>where the model looked</figcaption></figure></div>')
        figures.append(img)
    more = r["n_images"] - len(t.views)
    extra = f" · {more} more view(s) not shown" if more > 0 else ""
    return (f'<article class="study"><h3><span class="rank">#{t.rank}</span>{e(r["study_folder"])} '
            f'{_badge(r["pred_label"], spec)}</h3><div class="meta">study probability <b>{_fmt_prob(r["prob_study"])}'
            f'</b> ({e(r["aggregate"])}; mean {_fmt_prob(r["prob_mean"])}, max {_fmt_prob(r["prob_max"])}) · '
            f'{r["n_images"]} image(s), {r["n_errors"]} error(s) · key {e(r["key_source"])}: '
            f'<span class="muted">{e(r["study_key"])}</span>{extra}</div>'
            f'<div class="views">{"".join(figures)}</div></article>')


def _studies(run: RunData, thumbs: ThumbMaker, with_cam: bool) -> str:
    note = f'<p class="note">{e(CAM_CAPTION)}</p>' if with_cam else ""
    items = "".join(_study(t, thumbs, run.spec) for t in run.top) or "<p>No study has a readable image.</p>"
    return (f'<section id="studies"><h2>The {len(run.top)} most suspicious studies</h2>'
            f'<p class="muted">Ordered by study probability; thumbnails windowed as the model reads them '
            f'(DICOM VOI window, MONOCHROME1 inverted).</p>{note}{items}</section>')


def _errors(run: RunData) -> str:
    if not run.n_errors:
        return '<section id="errors"><h2>Errors</h2><p>No file failed.</p></section>'
    causes = "".join(f'<tr><td class="num">{n:,}</td><td>{e(c)}</td></tr>' for c, n in run.error_causes)
    rows = "".join(f"<tr><td>{e(p)}</td><td>{e(m)}</td></tr>" for p, m in run.errors)
    more = (f'<p class="muted">{run.n_errors - len(run.errors):,} more error rows are in the dataset '
            "(status = 'error').</p>" if run.n_errors > len(run.errors) else "")
    return (f'<section id="errors"><h2>Errors ({run.n_errors:,})</h2>'
            f'<table><tr><th>count</th><th>cause</th></tr>{causes}</table><h3>Files</h3>'
            f'<table><tr><th>file</th><th>message</th></tr>{rows}</table>{more}</section>')


def build_report(cfg: ReportConfig) -> Path:
    """Write the report; returns its path."""
    run = load_run(cfg.out, top=cfg.top, max_errors=cfg.max_errors, max_views=cfg.max_views)
    cam, cam_note = None, "none (pass --checkpoint model.pt for class-activation overlays)"
    if cfg.checkpoint:
        cam = GradCam(cfg.checkpoint)
        cam_note = f"Grad-CAM (captum) from {e(cfg.checkpoint)}"
        if not cam.matches(run.spec):
            cam_note += (" <b>— this checkpoint's weights are not the ones recorded for the run: the overlays "
                         "may not explain these scores</b>")
            log.warning("--checkpoint %s holds other weights than the scored model", cfg.checkpoint)
    thumbs = ThumbMaker(max_side=cfg.thumb_px, cam=cam)
    out = Path(cfg.report_path) if cfg.report_path else Path(cfg.out) / REPORT_NAME
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Fracture triage: {e(Path(cfg.out).name)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Fracture triage report</h1><p>{e(Path(cfg.out).absolute())} · generated {now}</p></header>"
        f"<main>{_summary(run, cam_note)}{_histogram(run)}{_studies(run, thumbs, cam is not None)}{_errors(run)}"
        "<footer>fracture-batch: decision support for reading order, not a diagnosis. Every study still needs "
        "a reader.</footer></main></body></html>\n"
    )
    write_atomic(out, page.encode("utf-8"))
    log.info("report: %s (%d studies shown, %.1f MB)", out, len(run.top), out.stat().st_size / 1e6)
    return out
