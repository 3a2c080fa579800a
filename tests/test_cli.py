import json

import pytest

from simclrv2.cli import main
from simclrv2.models import ARCHITECTURES


def test_models_json_lists_the_registry_with_params_and_flops(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["arch"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(ARCHITECTURES)  # the table iterates the registry
    for name, architecture in ARCHITECTURES.items():
        assert rows[name]["paper_params_M"] == architecture.paper_params_m
    assert 8.0 < rows["r50_1x_sk0"]["GFLOPs_224px"] < 8.4  # 4.1 G multiply-adds
    assert rows["r152_3x_sk1"]["feature_dim"] == 6144


def test_models_table_is_text(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["arch", "params_M", "paper_params_M"]
    assert "r152_3x_sk1" in out


def test_show_augmentations_writes_a_grid_of_the_embedded_data(tmp_path, capsys):
    from PIL import Image

    from simclrv2.visualize import GAP, ORIGINALS_GAP

    out = tmp_path / "grid.png"
    assert main(["show-augmentations", "--out", str(out), "--images", "3", "--views", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    tile = 28 * 4  # the demo preset's 28 px, enlarged to at least 96 px
    with Image.open(out) as grid:
        assert grid.size == (GAP + 3 * (tile + GAP) + ORIGINALS_GAP - GAP, GAP + 3 * (tile + GAP))


def test_overrides_may_stand_before_and_after_options_and_later_ones_win(capsys):
    argv = ["config", "pretrain.epochs=3", "--preset", "demo", "model.arch=r18_1x_sk0"]
    assert main([*argv, "pretrain.epochs=4"]) == 0
    printed = capsys.readouterr().out
    assert "arch: r18_1x_sk0" in printed and "epochs: 4" in printed


def test_stray_arguments_are_still_refused(capsys):
    with pytest.raises(SystemExit):
        main(["config", "pretrain.epochs=3", "--preset", "demo", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["models", "pretrain.epochs=3"])
    assert "unrecognized arguments: pretrain.epochs=3" in capsys.readouterr().err
