"""The digits bench's measurement pinned in closed forms and with stub judges: the box IoU (never negative), which IoU
each placement task scores, the known-pixel MSE over the known (left) half, the style distance's direction and
normaliser, the classifier's temperature applied once and the calibrated confident share, the NN judge's k = 5 vote,
its tie-break, "correct" only on a digit, its references and threshold read from their own splits only, targets drawn
per seed, the class-balanced FID set, non-finite samples as +inf, the joint columns by their own judge, and the
aggregation over seeds. Each of these could change without any other test failing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ugd_digits import judges
from ugd_digits.bench import DigitsBench, REPORTED_SEEDS, aggregate, placement, ref_canvas, target_refs, task_cases
from ugd_digits.data import box_iou, foreground_mask
from ugd_digits.evaluators import Evaluators
from ugd_digits.guides import gram_distance
from ugd_digits.judges import NearestNeighbourJudge, NNVerdict, heldout_split

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bench():
    b = DigitsBench(samples=1, cases=2)
    b.real_features = lambda classes=None: torch.randn(50, 64, generator=torch.Generator().manual_seed(0))  # FID not under test
    return b


class _RejectAll:
    """An NN judge that calls every image a non-digit (vote -1)."""

    def judge(self, images):
        n = len(images)
        return NNVerdict(torch.full((n,), -1), torch.full((n,), 2.0), torch.zeros(n, dtype=torch.bool))


# -- model-free metrics --------------------------------------------------------------------------


def test_box_iou_closed_form_for_overlapping_and_disjoint_boxes():
    """[0,0,4,4] vs [2,2,6,6]: IoU 4/28; [0,0,2,2] vs [4,0,6,2] (disjoint): 0, never negative."""
    a = torch.tensor([[0.0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 2, 2]])
    b = torch.tensor([[2.0, 2, 6, 6], [4, 0, 6, 2], [0, 4, 2, 6]])
    assert torch.allclose(box_iou(a, b), torch.tensor([4 / 28, 0.0, 0.0]))


def test_a_mid_grey_pixel_is_not_ink():
    """Ink is pixels > 0 in [-1, 1]: a canvas of exact zeros has no ink."""
    assert not foreground_mask(torch.zeros(1, 1, 32, 32)).any()


def test_box_task_scores_box_iou_and_mask_tasks_mask_iou():
    """Reference = a 5x5 ink square; image = its two opposite corners: box IoU 1, mask IoU 2/25."""
    ref = -torch.ones(1, 1, 32, 32)
    ref[..., 4:9, 4:9] = 1.0
    img = -torch.ones(1, 1, 32, 32)
    img[..., 4, 4] = img[..., 8, 8] = 1.0
    ev = Evaluators()
    assert float(placement("box", img, ref, ev)) == pytest.approx(1.0)
    for task in ("mask", "mask+label"):
        assert float(placement(task, img, ref, ev)) == pytest.approx(2 / 25)


def test_gram_distance_is_relative_to_the_target_gram():
    """Per layer mean((G - Gt)^2) / mean(Gt^2): G = 2 Gt gives 1 per layer (2 layers: 2), G = Gt / 2 gives 1/4 each."""
    g = torch.Generator().manual_seed(0)
    t = [torch.rand(3, 4, 4, generator=g) + 0.1, torch.rand(3, 8, 8, generator=g) + 0.1]
    assert torch.allclose(gram_distance([2 * x for x in t], t), torch.full((3,), 2.0), atol=1e-6)
    assert torch.allclose(gram_distance([x / 2 for x in t], t), torch.full((3,), 0.5), atol=1e-6)


# -- the calibrated classifier ---------------------------------------------------------------------


def test_classify_divides_the_logits_by_the_temperature_once():
    """p = softmax(logits / T) with T fitted on the calibration split (Guo et al. 2017), T applied exactly once."""
    ev = Evaluators()
    x, _ = heldout_split("test")
    x = x[:40]
    t = ev.temperature
    assert abs(t - 1) > 0.1  # the check below tells T from T^2 and from 1
    _, prob = ev.classify(x)
    assert torch.allclose(prob, (ev.logits(x) / t).softmax(1), atol=1e-6)
    assert torch.allclose(ev.classify(x, calibrated=False)[1], ev.logits(x).softmax(1), atol=1e-6)


def test_the_bench_confident_share_is_the_calibrated_one(bench):
    """score()'s 'confident' = share of calibrated max p >= 0.9 (on 20 real target digits: 0.95 calibrated vs 0.65 raw)."""
    cases = task_cases("mask", REPORTED_SEEDS[0], 20)
    own = torch.cat([ref_canvas(c.ref) for c in cases])
    ev = bench.evaluators
    calibrated = float(((ev.logits(own) / ev.temperature).softmax(1).max(1).values >= 0.9).float().mean())
    raw = float((ev.logits(own).softmax(1).max(1).values >= 0.9).float().mean())
    assert calibrated != raw
    assert bench.score("mask", cases, own, 1)["confident"] == pytest.approx(calibrated)


# -- the nearest-neighbour judge -----------------------------------------------------------------


def test_nn_correct_requires_a_digit():
    """NNVerdict.correct: the vote equals the label AND the image is a digit; pred 3 on a non-digit is wrong."""
    v = NNVerdict(torch.tensor([3, 3, 4]), torch.tensor([0.1, 1.9, 0.1]), torch.tensor([True, False, True]))
    assert v.correct(torch.tensor([3, 3, 3])).tolist() == [True, False, False]


def _real(n: int = 12):
    x, y = heldout_split("reference")
    return x[:n], y[:n]


def test_nn_vote_is_k5_and_ties_go_to_the_nearer_neighbour():
    """k = 5 (documented): query X with references [X, X, Y, Y, Y] votes Y (3 to 2; k = 3 would vote X);
    with k = 2 and references [X, Y] (one vote each) the tie goes to X, the nearer."""
    x, y = _real()
    i = 0
    j = next(k for k in range(1, len(y)) if y[k] != y[i])
    X, Y = x[i : i + 1], x[j : j + 1]
    cal = x[:8]
    assert judges.NN_K == 5 and NearestNeighbourJudge(references=(x, y), calibration=cal).k == 5
    five = NearestNeighbourJudge(references=(torch.cat([X, X, Y, Y, Y]), torch.stack([y[i], y[i], y[j], y[j], y[j]])), calibration=cal)
    assert int(five.judge(X).pred[0]) == int(y[j])
    two = NearestNeighbourJudge(k=2, references=(torch.cat([X, Y]), torch.stack([y[i], y[j]])), calibration=cal)
    assert int(two.judge(X).pred[0]) == int(y[i])


def test_reported_nn_judge_reads_only_reference_and_calibration_splits(monkeypatch):
    """The threshold is the 99th percentile of the *calibration* split's nearest distances; no target digit is read."""
    read = []
    real = judges.heldout_split
    monkeypatch.setattr(judges, "heldout_split", lambda name: (read.append(name), real(name))[1])
    j = NearestNeighbourJudge()
    assert sorted(set(read)) == ["calibration", "reference"]
    d = j._nearest(real("calibration")[0])[0][:, 0]
    assert j.threshold == pytest.approx(float(torch.quantile(d, 0.99)))


# -- targets and seeds -------------------------------------------------------------------------------


def test_each_reported_seed_draws_its_own_targets():
    """target_refs is seeded by the seed: the three reported seeds draw three different target lists."""
    lists = [tuple(target_refs(s, 4)) for s in REPORTED_SEEDS]
    assert len(set(lists)) == 3


def test_label_fid_real_set_is_class_balanced():
    """real_features(classes 0-9): min-count digits of every class among held-out 0-749, 10 x that count in all."""
    from ugd_digits.bench import FID_REAL
    from ugd_digits.targets import heldout_canvases

    suite = DigitsBench(samples=1, cases=1)

    class Echo:
        def features(self, images):
            return images.flatten(1)

    suite._evaluators = Echo()
    x, y = heldout_canvases(1000)
    y = y[FID_REAL[0] : FID_REAL[1]]
    per = min(int((y == c).sum()) for c in range(10))
    assert per < max(int((y == c).sum()) for c in range(10))
    assert len(suite.real_features(tuple(range(10)))) == 10 * per


# -- score() ------------------------------------------------------------------------------------------


def test_inpaint_metric_is_mse_on_the_known_left_half_and_inf_for_a_nan_sample(bench):
    """Image = ref on the left half (x < 16), anything on the right: known-pixel MSE 0; a NaN sample makes it +inf."""
    cases = task_cases("inpaint", 500, 2)
    refs = torch.cat([ref_canvas(c.ref) for c in cases])
    img = refs.clone()
    img[..., 16:] = torch.rand(2, 1, 32, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert bench.score("inpaint", cases, img, 1)["metric"] == pytest.approx(0.0, abs=1e-12)
    img2 = refs.clone()
    img2[..., :16] = -refs[..., :16]  # left half negated: MSE = mean over the left half of (2 ref)^2
    expected = float(((2 * refs[..., :16]) ** 2).flatten(1).mean(1).mean())
    assert bench.score("inpaint", cases, img2, 1)["metric"] == pytest.approx(expected, rel=1e-5)
    img[1] = float("nan")
    assert bench.score("inpaint", cases, img, 1)["metric"] == math.inf


@pytest.mark.parametrize("task", ["box", "inpaint"])
def test_an_alone_task_is_its_placement_guide_without_the_class_term_and_scored_the_same(bench, task):
    """"box-alone" / "inpaint-alone": the same targets and placement guide (same spec, same weight) as "box" /
    "inpaint", without the class term; the same metric on the same images; no class is judged."""
    for seed in (500, 1000):
        composed, alone = task_cases(task, seed, 3), task_cases(task + "-alone", seed, 3)
        assert [c.ref for c in alone] == [c.ref for c in composed] and [c.label for c in alone] == [c.label for c in composed]
        assert [c.guides for c in alone] == [c.guides[:1] for c in composed]
        assert all(len(c.guides) == 2 and c.guides[1].startswith("digit-robust:") for c in composed)
    cases = task_cases(task, 500, 2)
    img = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    both, one = bench.score(task, cases, img, 1), bench.score(task + "-alone", task_cases(task + "-alone", 500, 2), img, 1)
    assert one["metric"] == both["metric"] and "class_accuracy" in both and "class_accuracy" not in one
    assert task_cases(task + "-alone", 500, 1, unit_weights=True)[0].guides[0].endswith("weight=1.0")


def test_style_metric_is_distance_of_sample_to_target_and_inf_for_nan(bench):
    """style metric = mean style_distance(sample, target) (normalised by the target's Gram), +inf with a NaN sample."""
    cases = task_cases("style", 500, 2)
    refs = torch.cat([ref_canvas(c.ref) for c in cases])
    thick = torch.nn.functional.max_pool2d(refs, 3, 1, 1)
    ev = bench.evaluators
    fwd, back = float(ev.style_distance(thick, refs).mean()), float(ev.style_distance(refs, thick).mean())
    assert abs(fwd - back) > 1e-3 * fwd  # the direction matters
    assert bench.score("style", cases, thick, 1)["metric"] == pytest.approx(fwd, rel=1e-6)
    thick[0] = float("nan")
    assert bench.score("style", cases, thick, 1)["metric"] == math.inf


def test_nn_joint_counts_the_nn_judges_hits_not_the_classifiers(bench, monkeypatch):
    """Own target digits, an NN judge that rejects everything: joint = IoU (classifier right), nn_joint = 0, nn acc 0."""
    cases = task_cases("box", 500, 2)
    own = torch.cat([ref_canvas(c.ref) for c in cases])
    monkeypatch.setattr(bench, "_nn_judge", _RejectAll())
    s = bench.score("box", cases, own, 1)
    assert s["class_accuracy"] == 1.0 and s["joint"] == pytest.approx(s["metric"]) and s["metric"] > 0.5
    assert s["nn_joint"] == 0.0 and s["nn_accuracy"] == 0.0


def test_label_metric_is_the_classifiers_accuracy(bench, monkeypatch):
    """Label task: 'metric' is the classifier's target accuracy, not the NN judge's (one real digit of each class)."""
    x, y = heldout_split("test")
    idx = [int(torch.nonzero(y == c)[0]) for c in range(10)]
    cases = task_cases("label", 1000, 1)
    monkeypatch.setattr(bench, "_nn_judge", _RejectAll())
    s = bench.score("label", cases, x[idx], 1)
    assert s["nn_accuracy"] == 0.0 and s["metric"] == s["class_accuracy"] >= 0.9


# -- aggregation --------------------------------------------------------------------------------------


def test_aggregate_is_the_mean_over_seeds_and_a_nan_stays_nan():
    """Two seeds: metric 0.2, 0.6 -> mean 0.4, std 0.2 (population); lists element-wise; FID nan, 3 -> nan."""
    base = dict(task="label", method="m", steps=5, n=1, samples=10)
    rs = [dict(base, seed=1000, metric=0.2, fid=float("nan"), per_digit_accuracy=[0.0] * 10),
          dict(base, seed=1001, metric=0.6, fid=3.0, per_digit_accuracy=[1.0] * 10)]
    (row,) = aggregate(rs)
    assert row["metric"] == pytest.approx(0.4) and row["metric_std"] == pytest.approx(0.2)
    assert row["per_digit_accuracy"] == pytest.approx([0.5] * 10)
    assert math.isnan(row["fid"]) and row["samples"] == 20 and row["seeds"] == 2
