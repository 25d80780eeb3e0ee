"""`ugd generate` on saved tiny SD3 and FLUX pipeline folders with a CLIP guide (offline), and the
one-line error for a missing model folder."""

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from ugd_sd.testing import save_tiny_flow_pipeline

runner = CliRunner()


def _tiny_clip_folder(path):
    from transformers import CLIPImageProcessor

    from ugd_kit.testing import tiny_clip

    model, tok = tiny_clip()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind,backbone", [("flux", "flux"), ("sd3", "stable-diffusion-3")])
def test_generate_on_a_saved_flow_pipeline_with_a_clip_guide(tmp_path, kind, backbone):
    folder = save_tiny_flow_pipeline(tmp_path / kind, kind=kind)
    clip = _tiny_clip_folder(tmp_path / "clip")
    size = ",height=16,width=16" if kind == "flux" else ""
    res = runner.invoke(app, ["generate", "--backbone", f"{backbone}:model={folder},max_sequence_length=16{size}", "--prompt", "a dog",
                              "--guide", f"clip:prompt=a cat,model={clip}", "--steps", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "ugd-000000.png").exists()


def test_a_missing_model_folder_is_one_line(tmp_path):
    res = runner.invoke(app, ["generate", "--backbone", f"flux:model={tmp_path / 'nowhere'}", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "not found" in res.output and "model=" in res.output and len(res.output.strip().splitlines()) == 1
