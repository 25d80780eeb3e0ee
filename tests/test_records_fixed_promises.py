"""Two record promises a mutation audit found broken, now kept (each test failed on the code before the fix).

README.md "Use": bad input ends in one line naming the problem and the fix, exit status 2, before anything is
sampled or written; cli/records.py check_record: "Check every field of a (possibly hand-edited) image record; one
UgdError line naming the field"; cli/run.py generate_to_dir: "raises a one-line UgdError for any bad input: ...
existing outputs".
"""

from __future__ import annotations

import json

import pytest

from cli.outputs import save_image
from cli.run import generate, generate_to_dir, regenerate_from_record
from tests.test_runs import local, tiny_registry, tiny_spec
from ugd_core import UgdError


@pytest.mark.parametrize("best_of", [3, "x", {"n": "three"}, {"n": None}])
def test_an_edited_best_of_field_is_one_line_naming_it(tmp_path, best_of):
    """check_record checks every field a user may have edited, best_of (which _spec_for reads) included: an edit
    ended in AttributeError/ValueError/TypeError tracebacks before the fix."""
    item = generate(tiny_spec(n=1, num_steps=2), tiny_registry())[0]
    _, side = save_image(item, tmp_path / "orig")
    record = dict(json.loads(side.read_text()), best_of=best_of)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    with pytest.raises(UgdError, match="best_of") as err:
        regenerate_from_record(path, registry=tiny_registry())
    assert "\n" not in str(err.value)


def test_resume_over_a_sidecar_whose_backbone_is_no_object_is_one_line(tmp_path):
    """--resume reads the records of the images already there (cli/outputs.py plan_outputs, record_identity); a
    sidecar whose backbone is a text instead of an object is a record of another run spec (it was an AttributeError)."""
    out = tmp_path / "o"
    generate_to_dir(tiny_spec(n=2, num_steps=2), out, local())
    side = out / "ugd-000100.json"
    side.write_text(json.dumps(dict(json.loads(side.read_text()), backbone="tiny")))
    with pytest.raises(UgdError) as err:
        generate_to_dir(tiny_spec(n=2, num_steps=2), out, local(), resume=True)
    assert "ugd-000100" in str(err.value) and "\n" not in str(err.value)
