"""The digits bench's judges, evaluators, digit sets and scoring do what docs/benchmarks.md ("Protocol", "Who
judges", "Setup") and the modules' docstrings promise: the judges' documented numbers on real test digits, the
calibration report before and after temperature scaling, ECE weighted by bin share (Guo et al. 2017, eq. 3), the NN
judge's threshold, distance, normalisation and no-ink rule, the development judge's train digits, FID's refusal of
one sample, tight boxes in (x0, y0, x1, y1) with exclusive edges, reproducible ``ref=INT`` canvases, and score() /
aggregate() reporting each judge's own number per (task, method, steps). No training: the shipped weights."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from ugd_digits import judges
from ugd_digits.bench import DigitsBench, aggregate, ref_canvas, task_cases
from ugd_digits.data import DEV_JUDGE_SETS, foreground_mask, mask_iou, place, random_placement, tight_boxes, to_model_space
from ugd_digits.evaluators import Evaluators
from ugd_digits.judges import NearestNeighbourJudge, NNVerdict, calibration_report, expected_calibration_error, heldout_split
from ugd_digits.targets import REF_SEED, cached_digits

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def judge():
    return NearestNeighbourJudge()


@pytest.fixture(scope="module")
def bench(judge):
    b = DigitsBench(samples=1, cases=2)
    b._nn_judge = judge
    b.real_features = lambda classes=None: torch.randn(50, 64, generator=torch.Generator().manual_seed(0))  # FID not under test
    return b


class _RejectAll:
    """An NN judge that calls every image a non-digit, whatever its vote."""

    def __init__(self, pred=None):
        self.pred = pred

    def judge(self, images):
        n = len(images)
        pred = self.pred if self.pred is not None else torch.full((n,), -1)
        return NNVerdict(pred, torch.full((n,), 2.0), torch.zeros(n, dtype=torch.bool))


# -- both judges on real held-out test digits ------------------------------------------------------------


def test_real_reference_reports_the_documented_numbers_of_both_judges(bench):
    """docs/benchmarks.md, "The judges on real held-out test digits": classifier accuracy 0.980, ECE 0.110 -> 0.018,
    p >= 0.9 share 0.624 -> 0.968 (T = 0.442); NN accuracy 0.920 (non-digits wrong), vote accuracy 0.924, non-digit
    share 0.012, threshold 0.747 (k = 5, 99th percentile)."""
    real = bench.real_reference()
    c, nn = real["classifier"], real["nn"]
    assert c["n"] == 250 and nn["n"] == 250 and nn["k"] == 5 and nn["percentile"] == 99.0
    assert c["temperature"] == pytest.approx(0.442, abs=0.002)
    assert c["accuracy_before"] == c["accuracy_after"] == pytest.approx(0.980, abs=0.002)  # T changes no decision
    assert c["ece_before"] == pytest.approx(0.110, abs=0.0015) and c["ece_after"] == pytest.approx(0.018, abs=0.0015)
    assert c["confident_before"] == pytest.approx(0.624, abs=0.002) and c["confident_after"] == pytest.approx(0.968, abs=0.002)
    assert nn["accuracy"] == pytest.approx(0.920, abs=0.002) and nn["vote_accuracy"] == pytest.approx(0.924, abs=0.002)
    assert nn["nondigit"] == pytest.approx(0.012, abs=0.002) and nn["threshold"] == pytest.approx(0.747, abs=0.0015)


def test_calibration_report_is_raw_before_and_divided_by_t_after():
    """judges.calibration_report: 'before' is T = 1, 'after' softmax(logits / T). Logits [ln 13.5, 0 x 9]: p = 0.6
    raw (ECE 0.4, none confident), with T = 0.25 p = 13.5^4 / (13.5^4 + 9) (all confident, p >= 0.9)."""
    logits = torch.zeros(8, 10, dtype=torch.float64)
    logits[:, 0] = torch.log(torch.tensor(13.5, dtype=torch.float64))
    labels = torch.zeros(8, dtype=torch.long)
    r = calibration_report(logits, labels, 0.25)
    p_after = 13.5**4 / (13.5**4 + 9)
    assert r["n"] == 8 and r["temperature"] == 0.25 and r["accuracy_before"] == r["accuracy_after"] == 1.0
    assert r["ece_before"] == pytest.approx(0.4) and r["ece_after"] == pytest.approx(1 - p_after)
    assert r["confident_before"] == 0.0 and r["confident_after"] == 1.0


def test_ece_weights_each_bin_by_its_share_of_samples():
    """Guo et al. 2017, eq. 3: ECE = sum_b |B_b|/n |acc(B_b) - conf(B_b)|. Two samples at p = 1 (right) and two at
    p = 0.55 (wrong): 0.5 x 0 + 0.5 x 0.55 = 0.275."""
    probs = torch.zeros(4, 10)
    probs[:2, 0] = 1.0
    probs[2:, 1], probs[2:, 2:] = 0.55, 0.45 / 8
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 0])) == pytest.approx(0.275, abs=1e-6)


# -- the nearest-neighbour judge -------------------------------------------------------------------------


def test_the_threshold_rejects_about_one_percent_of_the_calibration_digits(judge):
    """judges.py: the threshold is the 99th percentile of the calibration digits' nearest distances, so the judge,
    on those very digits, calls 1-3 of 250 non-digits (at most floor(250 x 0.01) + 1) and keeps the rest."""
    x, _ = heldout_split("calibration")
    v = judge.judge(x)
    assert 1 <= int((~v.is_digit).sum()) <= 3


def test_a_reference_digit_is_at_distance_zero_from_its_nearest_reference(judge):
    """NNVerdict.distance is the distance to the *nearest* reference: a reference digit finds itself (0), a digit."""
    x, _ = heldout_split("reference")
    v = judge.judge(x[:20])
    assert (v.distance < 1e-2).all() and v.is_digit.all()


def test_normalised_digits_are_mean_centred_unit_vectors():
    """judges.normalise_digits: '... mean removed -> unit L2 norm' (docs/benchmarks.md, "Who judges")."""
    x, _ = heldout_split("test")
    v, has_ink = judges.normalise_digits(x[:10])
    assert has_ink.all() and v.shape == (10, 784)
    assert torch.allclose(v.mean(1), torch.zeros(10), atol=1e-6) and torch.allclose(v.norm(dim=1), torch.ones(10), atol=1e-5)


def test_a_canvas_without_ink_is_never_a_digit_even_under_a_threshold_that_admits_everything():
    """judges.py: an image that is farther than the threshold 'or that has no ink' is not a digit. Calibrated on
    blank canvases the threshold is 2.0 (the maximum distance), and a blank canvas is still no digit."""
    x, y = heldout_split("reference")
    j = NearestNeighbourJudge(references=(x[:20], y[:20]), calibration=-torch.ones(10, 1, 32, 32))
    assert j.threshold == pytest.approx(2.0)
    v = j.judge(torch.cat([-torch.ones(2, 1, 32, 32), x[:2]]))
    assert v.is_digit.tolist() == [False, False, True, True]


def test_the_ceiling_counts_every_non_digit_wrong(judge):
    """NearestNeighbourJudge.ceiling: 'accuracy (non-digits counted wrong)'. With a threshold no digit meets, the
    accuracy is 0 while the vote accuracy stays the judge's."""
    strict = copy.copy(judge)
    strict.threshold = -1.0
    c, plain = strict.ceiling(), judge.ceiling()
    assert c["nondigit"] == 1.0 and c["accuracy"] == 0.0 and c["vote_accuracy"] == plain["vote_accuracy"] > 0.9


def test_the_development_judge_reads_train_0_2999_as_references_and_3000_3999_for_its_threshold(monkeypatch):
    """docs/benchmarks.md, "Protocol": the development NN judge's references are train digits 0-2,999 and its
    threshold comes from train 3,000-3,999, at placements seeded by DEV_PLACEMENT_SEED (judges.development_judge)."""
    seen = {}

    class Record:
        def __init__(self, references=None, calibration=None, **kwargs):
            seen.update(references=references, calibration=calibration, **kwargs)

    monkeypatch.setattr(judges, "NearestNeighbourJudge", Record)
    judges.development_judge.__wrapped__()  # the judge's arguments, without fitting it
    d = cached_digits("train")
    canvases = to_model_space(place(d.images, random_placement(len(d.labels), torch.Generator().manual_seed(judges.DEV_PLACEMENT_SEED))))
    ref_images, ref_labels = seen["references"]
    assert DEV_JUDGE_SETS == {"reference": (0, 3000), "calibration": (3000, 4000)}
    assert torch.equal(ref_labels, d.labels[:3000]) and torch.allclose(ref_images, canvases[:3000])
    assert torch.allclose(seen["calibration"], canvases[3000:4000])


# -- evaluators and model-free metrics ---------------------------------------------------------------------


def test_a_non_finite_sample_gets_no_probabilities_whatever_the_network_says():
    """evaluators.py: a non-finite sample is 'class -1 (never a target)' with no probabilities, never confident, even
    where the network's logits stay finite (a stand-in network that ignores its input and is sure of class 3)."""

    class SureOfThree(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([0.0, 0, 0, 20, 0, 0, 0, 0, 0, 0]).expand(len(x), -1)

    ev = Evaluators()
    ev._nets["eval_classifier"], ev._temperature = SureOfThree(), 1.0
    x = -torch.ones(3, 1, 32, 32)
    x[1, 0, 3, 3], x[2, 0, 5, 5] = float("nan"), float("inf")
    pred, prob = ev.classify(x)
    assert pred.tolist() == [3, -1, -1] and prob[0, 3] > 0.99
    assert torch.isnan(prob[1:]).all() and not (prob[1:].max(1).values >= 0.9).any()


def test_fid_refuses_a_set_of_one_sample():
    """Evaluators.fid: 'fid needs at least 2 samples in each set' (a covariance of one sample is undefined)."""
    with pytest.raises(ValueError, match="at least 2 samples"):
        Evaluators.fid(torch.randn(1, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="at least 2 samples"):
        Evaluators.fid(torch.randn(5, 8), torch.randn(1, 8))


def test_tight_boxes_are_x_first_with_exclusive_far_edges():
    """data.tight_boxes: '(x0, y0, x1, y1) boxes in pixel units (x1, y1 exclusive)'. Ink in rows 5-8, columns 3-4:
    [3, 5, 5, 9]; one pixel at x = 30, y = 1: [30, 1, 31, 2]; no ink: the zero box."""
    m = torch.zeros(3, 32, 32, dtype=torch.bool)
    m[0, 5:9, 3:5] = True
    m[1, 1, 30] = True
    assert tight_boxes(m).tolist() == [[3.0, 5.0, 5.0, 9.0], [30.0, 1.0, 31.0, 2.0], [0.0, 0.0, 0.0, 0.0]]


def test_no_ink_against_an_empty_target_mask_is_a_match():
    """mask_iou of two empty masks is 1 (evaluators.mask_iou: only a non-finite sample, 'neither is a mask', scores 0
    against an empty target; tests/test_protocol.py: NaN is not 'no ink = match')."""
    empty = torch.zeros(2, 32, 32, dtype=torch.bool)
    assert mask_iou(empty, empty).tolist() == [1.0, 1.0]
    assert Evaluators().mask_iou(-torch.ones(1, 1, 32, 32), empty[:1]).tolist() == [1.0]


# -- targets --------------------------------------------------------------------------------------------


def test_ref_int_places_the_digit_with_the_documented_seed():
    """targets.py: 'ref=INT places held-out digit INT with torch.Generator().manual_seed(REF_SEED + INT)', so a
    target is reproducible from the run spec alone, and two targets get their own placements."""
    d = cached_digits("heldout")
    for i in (750, 999):
        g = torch.Generator().manual_seed(REF_SEED + i)
        assert torch.equal(ref_canvas(i), to_model_space(place(d.images[i : i + 1], random_placement(1, g))))


@pytest.mark.parametrize("index", [-1, 1000, 2.0, True])
def test_ref_canvas_refuses_an_index_outside_the_heldout_digits(index):
    """targets.ref_canvas: 'use an integer 0..999', a UgdError naming the range."""
    from ugd_core.errors import UgdError

    with pytest.raises(UgdError, match=r"0\.\.999"):
        ref_canvas(index)


# -- the bench's scoring ---------------------------------------------------------------------------------


def test_the_box_tasks_guide_target_is_the_target_digits_own_ink_box():
    """docs/benchmarks.md: the box task's target is the target digit's tight ink box, box="x0,y0,x1,y1" (x the
    column, exclusive far edges), the same box placement() scores against."""
    for task in ("box", "box-alone"):
        for c in task_cases(task, 1000, 4):
            (spec,) = [g for g in c.guides if g.startswith("digit-box:")]
            box = [int(v) for v in re.search(r'box="([0-9,]+)"', spec).group(1).split(",")]
            ink = foreground_mask(ref_canvas(c.ref))[0]
            ys, xs = torch.nonzero(ink, as_tuple=True)
            assert box == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("task", ["box", "mask+label"])
def test_a_well_placed_digit_of_another_class_scores_zero_in_both_joint_columns(bench, task):
    """bench.py, score(): "a placed sample of another class counts 0, by either judge" (the table's "else 0" column).
    Each target's own digit (IoU 1) asked as the next class: metric 1, joint 0 and nn_joint 0."""
    from dataclasses import replace

    own = task_cases(task, 500, 2)
    other = [replace(c, label=(c.label + 1) % 10) for c in own]
    images = torch.cat([ref_canvas(c.ref) for c in own])
    s = bench.score(task, other, images, 1)
    assert s["metric"] == pytest.approx(1.0) and s["class_accuracy"] == 0.0
    assert s["joint"] == 0.0 and s["nn_joint"] == 0.0


def test_per_digit_nn_accuracy_is_the_nn_judges(bench, monkeypatch):
    """score(): the label table's per-digit numbers are 'classifier / NN judge' (bench.markdown_table). An NN judge
    that votes right but calls everything a non-digit: per-digit NN accuracy 0 beside the classifier's own."""
    x, y = heldout_split("test")
    idx = [int(torch.nonzero(y == c)[0]) for c in range(10)]
    monkeypatch.setattr(bench, "_nn_judge", _RejectAll(pred=torch.arange(10)))
    s = bench.score("label", task_cases("label", 1000, 1), x[idx], 1)
    assert s["per_digit_nn_accuracy"] == [0.0] * 10 and s["nn_accuracy"] == 0.0
    assert sum(s["per_digit_accuracy"]) >= 9


def test_accuracy_at_0_9_counts_only_confident_right_samples(bench):
    """score()'s 'accuracy_at_0.9' (acc@p>=0.9, compare_classifier_guidance) counts a sample only when it is the
    target class *and* confident: real digits of the next class are confident but never right."""
    x, y = heldout_split("test")
    idx = [int(torch.nonzero(y == (c + 1) % 10)[0]) for c in range(10)]  # class c's case gets a digit of c + 1
    s = bench.score("label", task_cases("label", 1000, 1), x[idx], 1)
    assert s["confident"] >= 0.8 and s["class_accuracy"] == 0.0 and s["accuracy_at_0.9"] == 0.0


def test_the_label_tasks_fid_uses_the_class_balanced_real_set(bench, monkeypatch):
    """docs/benchmarks.md, "Who judges": FID against the judges' held-out digits, 'class-balanced for the label
    task'; every other task uses the whole set."""
    asked = []

    def real(classes=None):
        asked.append(classes)
        return torch.randn(50, 64, generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(bench, "real_features", real)
    x, _ = heldout_split("test")
    bench.score("label", task_cases("label", 1000, 1), x[:10], 1)
    cases = task_cases("mask", 1000, 2)
    bench.score("mask", cases, torch.cat([ref_canvas(c.ref) for c in cases]), 1)
    assert asked == [tuple(range(10)), None]


def test_the_development_objective_counts_a_non_digit_wrong(monkeypatch):
    """bench.evaluate (objective 'development', label): the metric is the development NN judge's accuracy, where a
    non-digit is never correct (judges.py: 'is "not a digit", and is never counted correct')."""
    suite = DigitsBench(samples=1, cases=1)
    cases = task_cases("label", 300, 1)
    images = heldout_split("test")[0][:10]
    monkeypatch.setattr(suite, "generate", lambda *a, **k: (cases, images, dict(seconds_per_sample=0.0)))
    monkeypatch.setattr(suite, "guide_loss", lambda *a, **k: torch.zeros(10))
    monkeypatch.setattr(suite, "dev_features", lambda imgs: torch.randn(len(imgs), 8, generator=torch.Generator().manual_seed(len(imgs))))
    monkeypatch.setattr(judges, "development_judge", lambda: _RejectAll(pred=torch.arange(10)))  # right votes, no digit
    monkeypatch.setattr(judges, "development_canvases", lambda part="calibration": (images, torch.arange(10)))
    r = suite.evaluate("label", {}, 300, 1)
    assert r["metric"] == 0.0 and r["dev_nn_nondigit"] == 1.0
    assert suite.objective == "development"  # the default


def test_aggregate_keeps_each_step_count_apart_and_reports_the_non_finite_share():
    """bench.aggregate: 'per (task, method, steps)', mean and std over seeds of every numeric field, the non-finite
    share included (every table has a non-finite column, docs/benchmarks.md "Protocol")."""
    base = dict(task="label", method="m", n=1, samples=10)
    rs = [dict(base, steps=10, seed=1000, metric=0.2, nonfinite_share=0.0), dict(base, steps=10, seed=1001, metric=0.4, nonfinite_share=0.5),
          dict(base, steps=50, seed=1000, metric=0.8, nonfinite_share=0.0)]
    rows = {r["steps"]: r for r in aggregate(rs)}
    assert set(rows) == {10, 50} and rows[10]["seeds"] == 2 and rows[50]["seeds"] == 1
    assert rows[10]["metric"] == pytest.approx(0.3) and rows[50]["metric"] == pytest.approx(0.8)
    assert rows[10]["nonfinite_share"] == pytest.approx(0.25) and rows[10]["nonfinite_share_std"] == pytest.approx(0.25)
