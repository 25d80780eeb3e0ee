"""benchmarks/composition_tradeoff.py: every composed-task row is a point, `auto`'s rows (weight 1 from a run of
every method, other weights from runs named W=DIR) one curve ordered by weight; other tasks are left out."""

import json


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"settings": {}, "rows": rows}))


def row(task, method, iou, cls, nn):
    return dict(task=task, method=method, metric=iou, class_accuracy=cls, nn_accuracy=nn)


def test_points_and_auto_curve_by_weight_and_the_figure_is_written(load_benchmark, tmp_path, capsys):
    mod = load_benchmark("composition_tradeoff")
    write_run(tmp_path / "all", [row("box", "auto", 0.4, 0.9, 0.95), row("box", "dsg", 0.6, 0.6, 0.6),
                                 row("label", "auto", 1.0, 1.0, 1.0), row("mask+label", "naive", 0.7, 0.8, 0.9)])
    write_run(tmp_path / "w4", [row("box", "auto", 0.6, 0.75, 0.8)])
    write_run(tmp_path / "w2", [row("box", "auto", 0.5, 0.8, 0.85)])
    points, curves = mod.collect([tmp_path / "all"], [(4.0, tmp_path / "w4"), (2.0, tmp_path / "w2")])
    assert points == {"box": {"auto": (0.4, 0.9, 0.95), "dsg": (0.6, 0.6, 0.6)}, "mask+label": {"naive": (0.7, 0.8, 0.9)}}
    assert curves == {"box": [(1.0, 0.4, 0.9, 0.95), (2.0, 0.5, 0.8, 0.85), (4.0, 0.6, 0.75, 0.8)]}
    out = tmp_path / "fig.png"
    mod.main(["--runs", str(tmp_path / "all"), "--auto-weights", f"4={tmp_path / 'w4'}", f"2={tmp_path / 'w2'}", "--out", str(out)])
    table = capsys.readouterr().out
    assert out.stat().st_size > 0 and "| box + label | auto | 4 | 0.600 | 0.750 / 0.800 |" in table
    assert "| mask + label | naive | bench | 0.700 | 0.800 / 0.900 |" in table and "label | auto | 1 | 1.000" not in table
