"""The bench's composed placement tasks report the placement counted only where the asked class is drawn
(``joint`` by the classifier, ``nn_joint`` by the NN judge), beside the plain IoU."""

import pytest
import torch

from ugd_digits.bench import DigitsBench, placement, ref_canvas, task_cases


@pytest.mark.parametrize("task", ["box", "mask+label"])
def test_a_sample_of_another_class_places_nothing(task):
    bench = DigitsBench(samples=1, cases=2)
    cases = task_cases(task, 500, 2)
    own = torch.cat([ref_canvas(c.ref) for c in cases])  # each target's own digit: placed, and of its class
    wrong = own.clone()
    wrong[1] = float("nan")  # a diverged sample: no class, no placement
    ok, bad = bench.score(task, cases, own, 1), bench.score(task, cases, wrong, 1)
    iou = placement(task, own, own, bench.evaluators)
    assert ok["class_accuracy"] == 1.0 and ok["joint"] == pytest.approx(ok["metric"]) == pytest.approx(float(iou.mean()))
    nn_hit = bench.nn_judge.judge(own).correct(torch.tensor([c.label for c in cases])).float()
    assert ok["nn_joint"] == pytest.approx(float((iou * nn_hit).mean()))
    assert bad["joint"] == pytest.approx(float(iou[0]) / 2) and bad["nn_joint"] == pytest.approx(float(iou[0] * nn_hit[0]) / 2)
    assert "joint" not in bench.score("mask", task_cases("mask", 500, 2), own, 1)  # no class asked: no joint number
