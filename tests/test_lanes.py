"""Batches side by side (cli.lanes): how many lanes a run gets, the same pixels as one lane at the same
per-lane thread count, progress that never goes back, and a failing or interrupted lane stopping the run."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cli.lanes import in_lanes, lane_plan
from cli.run import LocalExecutor, RunInterrupted, RunSpec, generate, generate_to_dir
from tests.test_runs import local, tiny_registry, tiny_spec


@pytest.mark.parametrize("lanes, batches, threads, device, expected", [
    (None, 2, 2, "cpu", (2, 1)),  # the README's 16 images: two batches of 8 side by side on 2 cores
    (None, 1, 2, "cpu", (1, 1)),  # never more lanes than batches; the threads per lane stay as for many
    (None, 8, 2, "cpu", (2, 1)),  # one lane per torch thread
    (None, 8, 16, "cpu", (8, 1)),
    (None, 8, 16, "cuda", (1, 16)),  # a GPU runs one batch at a time
    (2, 8, 16, "cpu", (2, 8)),  # asked for: as asked, the threads shared among them
    (3, 8, 2, "cpu", (3, 1)),
    (3, 2, 2, "cuda", (2, 1)),
    (1, 8, 16, "cpu", (1, 16)),
])
def test_how_many_lanes_a_run_gets_and_their_threads(lanes, batches, threads, device, expected):
    assert lane_plan(lanes, batches, threads, device) == expected


def test_two_lanes_draw_the_pixels_one_lane_draws_at_the_same_threads_per_lane():
    """The digits UNet's results depend on the batch and the torch thread count, not on what runs beside it:
    two batches in two lanes of one thread each equal the same batches one after another on one thread."""
    spec = RunSpec(guides=["digit-robust:label=7"], overrides=dict(num_steps=3), seed=3, num_images=4, batch_size=2)
    side_by_side = generate(replace(spec, lanes=2, threads=2))
    in_turn = generate(replace(spec, lanes=1, threads=1))
    assert [g.record["seed"] for g in side_by_side] == [3, 4, 5, 6]  # in seed order whatever finished first
    assert [g.record["batch_seeds"] for g in side_by_side] == [[3, 4], [3, 4], [5, 6], [5, 6]]
    assert {g.record["torch_threads"] for g in side_by_side + in_turn} == {1}  # each lane's share of 2 threads
    for a, b in zip(side_by_side, in_turn):
        assert torch.equal(a.image, b.image)


def test_progress_counts_every_lane_and_never_goes_back():
    seen: list[tuple[int, int]] = []
    generate_to_dir_spec = replace(tiny_spec(n=6), lanes=3)
    items = generate(generate_to_dir_spec, tiny_registry(), progress=lambda d, t: seen.append((d, t)))
    assert [g.record["seed"] for g in items] == list(range(100, 106))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1] == (3 * 8, 3 * 8) and len(seen) == 3 * 8


def test_a_failing_lane_stops_the_others_and_batches_not_begun_never_start():
    started: list[int] = []
    stopped: list[int] = []
    second_running = threading.Event()

    def sample(seeds: list[int], step) -> list[int]:
        started.append(seeds[0])
        if seeds[0] == 0:
            assert second_running.wait(10)
            raise ValueError("guide broke")
        second_running.set()
        try:
            for i in range(1000):  # stops at its next step once the run is stopping
                step(i, 1000)
                time.sleep(0.005)
        except Exception:
            stopped.append(seeds[0])
            raise
        return seeds

    results: list[int] = []
    with pytest.raises(ValueError, match="guide broke"):
        in_lanes([[0], [1], [2], [3]], 2, sample, lambda k, r: results.append(k), lambda d, t: None)
    assert sorted(started) == [0, 1] and stopped == [1] and results == []


def test_ctrl_c_in_a_lane_stops_the_run_and_resume_completes_it_byte_for_byte(tmp_path):
    """A KeyboardInterrupt raised in one lane (the browser UI's stop, Ctrl-C in a step hook) ends the run as
    Ctrl-C does: the other lane stops, no temporary file is left, and --resume writes the same bytes."""
    spec = replace(tiny_spec(n=4), lanes=2, threads=2)
    reference = generate_to_dir(spec, tmp_path / "ref", local())

    def hook(view) -> None:
        if view.seeds[0] == 102 and view.step == 3:
            raise KeyboardInterrupt

    out = tmp_path / "o"
    with pytest.raises(RunInterrupted) as err:
        generate_to_dir(spec, out, LocalExecutor(tiny_registry(), on_step=hook))
    assert err.value.summary.interrupted and err.value.summary.written in (0, 2)
    assert not list(out.glob("*.tmp")) and not (out / "ugd-000102.png").exists()
    done = generate_to_dir(spec, out, local(), resume=True)
    assert done.written + done.skipped == 4
    for s in range(100, 104):
        name = f"ugd-{s:06d}.png"
        assert (out / name).read_bytes() == (reference.out / name).read_bytes()


def test_lanes_must_be_a_whole_number_of_at_least_one(tmp_path):
    from ugd_core import UgdError

    for bad in (0, -1, 1.5, "two"):
        with pytest.raises(UgdError, match=r"lanes .* must be a whole number >= 1") as err:
            generate_to_dir(replace(tiny_spec(), lanes=bad), tmp_path / "o", local())
        assert "\n" not in str(err.value)
    assert not Path(tmp_path / "o").exists()


def test_the_browser_runs_loss_chart_puts_each_lanes_steps_in_its_own_batch(tmp_path, monkeypatch):
    """The UI's run (cli.ui.watch.Run) charts every guide's loss at each step over the run: with two batches in
    two lanes, batch k's step s is run step k * steps + s, whichever lane finished a step first."""
    from cli.ui.watch import Run

    monkeypatch.chdir(tmp_path)
    spec = RunSpec(guides=["digit-robust:label=7"], overrides=dict(num_steps=3), seed=3, num_images=4, batch_size=2, lanes=2, threads=2)
    run = Run(spec, steps=3).start()
    deadline = time.time() + 120
    while not run.watch.finished and time.time() < deadline:
        run.wait_change(1.0)
    w = run.watch
    assert w.finished and w.error is None and w.summary is not None and w.summary.written == 4
    assert sorted(row["step"] for row in w.losses) == [1, 2, 3, 4, 5, 6] and (w.done, w.total) == (6, 6)
