"""``fracture-batch synth``: options -> SynthConfig -> generate_dataset, then a count table."""
from __future__ import annotations

import os
from pathlib import Path

import click

from fracture_batch.synth.writers import DEFAULT_FORMATS, ImageFormat


@click.command(context_settings={"show_default": True})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(6), default=1000,
              help="Total images over train/val/test (70/15/15, each split rounded to an even count "
                   "so both classes have the same number).")
@click.option("--size", "size", type=click.IntRange(16), default=None,
              help="Longest image side in pixels: each side is drawn in [0.75*SIZE, SIZE]. "
                   "Default: each side drawn in 400-700.")
@click.option("--seed", type=int, default=0, help="Same seed, same bytes (independent of --workers).")
@click.option("--format", "formats", type=click.Choice([f.value for f in ImageFormat]), multiple=True,
              default=[f.value for f in DEFAULT_FORMATS],
              help="File formats, in equal shares within every split and class (repeat the option).")
@click.option("--subtle-fraction", type=click.FloatRange(0.0, 1.0), default=0.1,
              help="Share of fractures drawn as hairline, undisplaced lines (harder to see).")
@click.option("--workers", type=click.IntRange(1), default=min(2, os.cpu_count() or 1),
              help="Threads rendering and encoding images.")
@click.option("--contact-sheet/--no-contact-sheet", default=True,
              help="Write OUT_DIR/contact_sheet.png: decoded samples with their labels.")
@click.option("--studies", "n_studies", type=click.IntRange(0), default=0,
              help="Study mode: instead of the ImageFolder splits, write this many MURA-like studies (2-4 views "
                   "of one limb, one label per study) to OUT_DIR/valid/XR_<PART>/patientNNNNN/studyK_<label>/ "
                   "with MURA's label file OUT_DIR/valid_labeled_studies.csv; --n is ignored.")
def synth(out_dir: Path, n: int, size: int | None, seed: int, formats: tuple[str, ...] = (),
          subtle_fraction: float = 0.1, workers: int = 1, contact_sheet: bool = True, n_studies: int = 0) -> None:
    """Write seeded radiograph-like limb images to OUT_DIR/{train,val,test}/{fractured,not_fractured}/.

    Long bones in soft tissue with film grain and exposure, rotation and scale changes;
    fractures are lucent lines through the cortex, from displaced to hairline. Only the
    pixels tell the class: sizes, formats, file names and order are class-independent.
    OUT_DIR also gets synth_manifest.csv (one row per file) and contact_sheet.png.
    With --studies, MURA-like study folders instead (see the option).
    """
    from fracture_batch.progress import create_progress
    from fracture_batch.synth import (
        CONTACT_SHEET_NAME, MANIFEST_NAME, SynthConfig, count_table, generate_dataset, resolve_split_counts,
        size_range_for, write_contact_sheet,
    )

    if n_studies:
        _studies(out_dir, n_studies, size, seed, formats, subtle_fraction, workers)
        return
    try:
        config = SynthConfig(
            n=n, seed=seed, size_range=size_range_for(size),
            formats=tuple(ImageFormat(f) for f in (formats or [f.value for f in DEFAULT_FORMATS])),
            subtle_fraction=subtle_fraction, workers=workers,
        )
        total = sum(resolve_split_counts(n, config.split_ratios).values())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    with create_progress(total, "synth", "img") as bar:
        records = generate_dataset(out_dir, config, progress=bar.update)
    _echo_table(count_table(records))
    click.echo(f"{len(records)} images in {out_dir} (manifest: {MANIFEST_NAME})")
    if contact_sheet:
        sheet = write_contact_sheet(out_dir, records, out_dir / CONTACT_SHEET_NAME, seed=seed)
        click.echo(f"contact sheet: {sheet}")


def _studies(out_dir: Path, n_studies: int, size, seed: int, formats, subtle_fraction: float, workers: int) -> None:
    from fracture_batch.progress import create_progress
    from fracture_batch.synth import generate_studies, labels_csv_name, size_range_for

    fmts = tuple(ImageFormat(f) for f in formats) if formats else (ImageFormat.PNG8,)
    with create_progress(None, "synth studies", "img") as bar:
        records = generate_studies(out_dir, n_studies, seed=seed, size_range=size_range_for(size), formats=fmts,
                                   subtle_fraction=subtle_fraction, workers=workers, progress=bar.update)
    positive = len({r.relpath.rsplit("/", 1)[0] for r in records if r.label == "fractured"})
    click.echo(f"{n_studies} studies ({positive} positive), {len(records)} images in {out_dir / 'valid'}; "
               f"labels: {out_dir / labels_csv_name('valid')}")


def _echo_table(rows: list[tuple[str, str, str, int]]) -> None:
    """Images per split and class (rows) and format (columns)."""
    formats = sorted({r[2] for r in rows})
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for split, label, fmt, count in rows:
        cells.setdefault((split, label), {})[fmt] = count
    header = ["split", "class", *formats, "total"]
    body = [[split, label, *(str(c.get(f, 0)) for f in formats), str(sum(c.values()))]
            for (split, label), c in sorted(cells.items(), key=lambda kv: (_SPLIT_ORDER.get(kv[0][0], 9), kv[0]))]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    for row in [header, *body]:
        click.echo("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
