"""Every mode option of every command is a click.Choice over an Enum's values."""
from __future__ import annotations

import click
import pytest

from fracture_batch.cli import COMMANDS, main

def test_spelled_out_choices_match_their_enums():
    from export.config import Precision as FilePrecision
    from fracture_batch.cli import export_cmd, train_cmd
    from train.config import AmpDtype, Imbalance, Loader, LrSchedule, Unfreeze

    assert train_cmd.UNFREEZE == tuple(e.value for e in Unfreeze)
    assert train_cmd.IMBALANCE == tuple(e.value for e in Imbalance)
    assert train_cmd.LOADERS == tuple(e.value for e in Loader)
    assert train_cmd.AMP_DTYPES == tuple(e.value for e in AmpDtype)
    assert train_cmd.LR_SCHEDULES == tuple(e.value for e in LrSchedule)
    assert export_cmd.PRECISIONS == tuple(e.value for e in FilePrecision)

@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name):
    cmd = main.get_command(click.Context(main), name)
    missing = [p.name for p in cmd.params if isinstance(p, click.Option) and not p.help]
    assert missing == [], f"{name}: options without --help text: {missing}"
