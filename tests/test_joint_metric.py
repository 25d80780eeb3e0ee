"""benchmarks/joint_metric.py: a sample's IoU counts only where its class is drawn; bad folders and a wrong
samples x cases layout end in one line (exit 2)."""

import pytest
import torch


def write_cell(folder, images, task="box", method="auto", seed=500):
    cells = folder / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    torch.save({"_images": images}, cells / f"{task}-{method}-{seed}-0123abcd.pt")


def test_the_targets_own_digits_keep_their_iou_and_a_wrong_class_scores_zero(load_benchmark, tmp_path):
    from ugd_digits.bench import ref_canvas, task_cases

    cases = task_cases("box", 500, 2)
    refs = torch.cat([ref_canvas(c.ref) for c in cases for _ in range(2)])  # each case's own digit, twice
    write_cell(tmp_path / "a", refs, method="targets")
    other = refs.clone()
    other[0] = float("nan")  # a non-finite sample is wrong everywhere
    write_cell(tmp_path / "a", other, method="one-nan")
    rows = {r["method"]: r for r in load_benchmark("joint_metric").main([str(tmp_path / "a"), "--samples", "2", "--cases", "2"])}
    own = rows["targets"]
    assert own["class_accuracy"] == 1.0 and own["joint"] == pytest.approx(own["metric"]) and own["metric"] > 0.5
    assert rows["one-nan"]["class_accuracy"] == 0.75 and rows["one-nan"]["metric"] < own["metric"]
    assert rows["one-nan"]["joint"] == pytest.approx(rows["one-nan"]["metric"])  # the NaN sample scored 0 in both


def test_bad_folders_and_layouts_are_one_line(load_benchmark, tmp_path, capsys):
    main = load_benchmark("joint_metric").main
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--samples", "2", "--cases", "2"])
    assert exit_.value.code == 2 and "no cells/ folder" in capsys.readouterr().err
    write_cell(tmp_path / "b", torch.zeros(6, 1, 32, 32))
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "b"), "--samples", "2", "--cases", "2"])
    assert exit_.value.code == 2 and "6 images, not cases x samples = 2 x 2" in capsys.readouterr().err
