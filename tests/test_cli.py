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


def test_demo_scores_with_int8_unless_its_own_parity_failed(tmp_path):
    import json

    from fracture_batch.cli.demo_cmd import _cpu_scoring_file

    def report(int8_passed):
        (tmp_path / "export_report.json").write_text(json.dumps({"variants": [
            {"variant": "fp32", "passed": True}, {"variant": "int8", "passed": int8_passed},
            {"variant": "int8.trt", "passed": False}]}))

    report(True)  # only the TensorRT flavour missed: the CPU file is fine
    assert _cpu_scoring_file(tmp_path).name == "model.int8.onnx"
    report(False)
    assert _cpu_scoring_file(tmp_path).name == "model.onnx"
