"""The bench's `guide_weights` parameter (docs/benchmarks.md, "A composition's weight on reported seeds"): a weight
for every spec of a named guide in every case, over the bench's own weights, checked before any work."""

from __future__ import annotations

import types

import pytest
import torch

from ugd_core import UgdError
from ugd_digits import bench as bench_module
from ugd_digits.bench import make_suite, task_cases


def weights_of(specs: list[str]) -> dict[str, float]:
    return {s.split(":")[0]: float(s.split("weight=")[1].split(",")[0]) for s in specs}


def test_a_named_guide_takes_its_weight_in_every_case_and_the_others_keep_theirs() -> None:
    """Methods that normalise each guide run every guide at 1, the others at the bench's unit conversions (box 20);
    `guide_weights` sets the named guide's weight in both, and leaves the class term's."""
    for unit in (True, False):
        for case in task_cases("box", 1000, 3, unit_weights=unit, guide_weights={"digit-box": 4.0}):
            assert weights_of(case.guides) == {"digit-box": 4.0, "digit-robust": 1.0}
    assert weights_of(task_cases("box", 1000, 1, unit_weights=False)[0].guides) == {"digit-box": 20.0, "digit-robust": 1.0}
    assert weights_of(task_cases("mask+label", 1000, 1, unit_weights=True, guide_weights={"digit-robust": 0.5})[0].guides) \
        == {"digit-mask": 1.0, "digit-robust": 0.5}


@pytest.mark.parametrize("text", ["nope=2", "digit-box=0", "digit-box=-1", "digit-box=x", "digit-box", "digit-box=inf"])
def test_a_bad_guide_weight_is_one_line_before_any_work(text: str) -> None:
    with pytest.raises(UgdError, match="guide_weights=.*GUIDE=WEIGHT.*write e.g. guide_weights=digit-box=4") as err:
        make_suite(guide_weights=text)
    assert "\n" not in str(err.value)


def test_the_bench_samples_with_the_weights_and_keeps_their_cells_apart(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A cell is sampled with the named guide at its weight, and its version (the cell cache's key) differs from the
    same method's at the bench's own weights, so a cached cell of other weights is never reused."""
    seen: list[list[float]] = []

    def fake_sample(backbone, guides, cfg, num_images, seed):  # type: ignore[no-untyped-def]
        seen.append([g.weight for g in guides])
        return types.SimpleNamespace(images=torch.zeros(num_images, 1, 32, 32),
                                     stats=types.SimpleNamespace(denoiser_forward=1, denoiser_backward=0))

    monkeypatch.setattr(bench_module, "sample", fake_sample)
    weighted = make_suite(samples=1, cases=2, seeds="1000", steps="2", tasks="box", methods="auto", guide_weights="digit-box=4")
    weighted._backbone = object()
    weighted.generate("box", weighted.methods["auto"], 1000)
    assert seen == [[4.0, 1.0], [4.0, 1.0]]
    own = make_suite(samples=1, cases=2, seeds="1000", steps="2", tasks="box", methods="auto")
    assert weighted._version("auto", 2) != own._version("auto", 2)
    assert make_suite(guide_weights="").guide_weights == {}
