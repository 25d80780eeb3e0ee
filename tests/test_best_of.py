"""``--best-of N``: N candidates per image, the one with the lowest guide loss kept, every candidate's loss
recorded; the pick is the same whatever a guide's loss units, and the record regenerates the same image."""

import torch

from cli.best_of import STRIDE, candidate_seeds, pick
from cli.run import RunSpec, generate, spec_from_image_record
from ugd_core import make_guide
from ugd_core.noise import make_generators
from ugd_core.guidance import as_guide_set


def level(target: float, scale: float = 1.0, name: str = "level"):
    return make_guide(name, f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: scale * (m - c) ** 2, target=target)


def test_candidate_seeds_start_with_the_images_own():
    assert candidate_seeds([5, 6], 3) == [5, 6, 5 + STRIDE, 6 + STRIDE, 5 + 2 * STRIDE, 6 + 2 * STRIDE]


def test_candidates_draw_different_noise_and_small_seeds_are_torchs_own():
    """torch's CPU generator reads only a seed's low 32 bits, so candidate seeds s + j * 2^32 once drew the image's
    own noise and every candidate was the same image. Seeds below 2^32 are handed to torch as they are; a larger one
    is mixed to 32 bits first."""
    draws = [torch.randn(8, generator=g) for g in make_generators([0, STRIDE, 2 * STRIDE, 2**32 - 1, 2**64 - 1])]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])
    for s in (0, 7, 2**32 - 1):
        assert torch.equal(draws[0] if s == 0 else torch.randn(8, generator=make_generators([s])[0]),
                           torch.randn(8, generator=torch.Generator().manual_seed(s)))


def test_the_pick_is_the_lowest_loss_and_does_not_depend_on_loss_units():
    images = torch.stack([torch.full((1, 2, 2), v) for v in (0.9, -0.5, 0.1, 0.2, 0.3, float("nan"))])  # 3 candidates x 2 images
    best, records = pick(images, as_guide_set([level(0.25)]), [0, 1], 3)
    assert best == [2, 1]  # candidate-major: image 0 has 0.9 / 0.1 / 0.3 (0.3 nearest 0.25), image 1 -0.5 / 0.2 / nan
    assert records[1][2]["score"] == float("inf")  # a non-finite candidate is never kept
    two = as_guide_set([level(0.25), (level(-0.4, name="other"), 2.0)])
    scaled = as_guide_set([level(0.25, scale=1e3), (level(-0.4, scale=1e-3, name="other"), 2.0)])
    assert pick(images, two, [0, 1], 3)[0] == pick(images, scaled, [0, 1], 3)[0]


def test_best_of_keeps_the_lowest_loss_candidate_and_regenerates_it():
    spec = RunSpec(guides=["digit-robust:label=3"], num_images=2, seed=11, best_of=3, overrides=dict(num_steps=3))
    out = generate(spec)
    for item in out:
        bo = item.record["best_of"]
        losses = [c["losses"]["digit-robust"] for c in bo["candidates"]]
        assert bo["n"] == 3 and len(losses) == 3 and losses[bo["kept"]] == min(losses)
        assert len(set(losses)) == 3  # three different candidates
        assert bo["candidates"][0]["seed"] == item.record["seed"]
    again, index = spec_from_image_record(out[1].record)
    assert again.best_of == 3
    assert torch.equal(generate(again)[index].image, out[1].image)
