"""The channels-last layout is named in an image's record, and --from-spec reproduces that path bit-exactly
(the layout changes the last bits of the result: ugd_plugins/digits/tests/test_speed_paths.py)."""

import torch

STEPS = 3


def test_the_record_names_the_layout_and_from_spec_reproduces_it():
    from cli.run import RunSpec, generate, spec_from_image_record

    spec = RunSpec(guides=["digit-robust:label=7"], preset="digits", overrides=dict(num_steps=STEPS, channels_last=True),
                   num_images=2, batch_size=2, seed=5)
    first = generate(spec)
    record = first[1].record
    assert record["sampler"]["channels_last"] is True
    again, index = spec_from_image_record(record)
    assert again.sampler["channels_last"] is True
    assert torch.equal(generate(again)[index].image, first[1].image)
