"""Run the paper's experiments end to end with real weights: one preset per experiment.

Each preset of the guide plugins (sd-face, sd-segmentation, sd-style, sd-clip,
sd-detection, imagenet-clip, imagenet-detection, imagenet-inpaint, and their -fast
variants) is run with the prompt / layout of the official repository's README
(arpitbansal297/Universal-Guided-Diffusion) and the inputs you pass. Images go to
--out/<preset>/, and a table of time and final guide losses is printed.

The ImageNet experiments run on the paper's ImageNet model, OpenAI's unconditional
256x256 guided-diffusion checkpoint, through the ``adm`` backbone (plugin ugd-adm):
download https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt
(guided-diffusion README, "Download pre-trained models") and pass it as --imagenet-model.
``imagenet-classifier-guidance`` is the baseline universal guidance generalises: Dhariwal &
Nichol's classifier guidance with the release's noise-aware 256x256_classifier.pt (same URL
folder), passed as --imagenet-classifier.

Nothing is downloaded by the guides: weights must be in the standard caches
(Hugging Face cache, torch hub dir, ultralytics weights dir) or passed by path.
A preset whose weights or inputs are missing is skipped with the reason; the
script exits with status 2 when no preset could run.

    python benchmarks/run_paper_presets.py --list
    python benchmarks/run_paper_presets.py --preset sd-segmentation --seg-ref dog.png --fast --device cuda
    python benchmarks/run_paper_presets.py --preset all --fast --device cuda \\
        --face-image me.jpg --face-weights backbone.pth --seg-ref dog.png --style-image starry.jpg \\
        --imagenet-model models/256x256_diffusion_uncond.pt --imagenet-classifier models/256x256_classifier.pt \\
        --detect-ref photo.jpg --inpaint-image dog.png
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# official README / script layouts (512 x 512 pixel boxes -> fractions): dog centred at (128, 256), 180 px;
# person centred at (384, 256), 200 x 400 px (scripts/object_detection.py, index 0)
SD_DETECTION_BOXES = "0.0742,0.3242,0.4258,0.6758;0.5547,0.1094,0.9453,0.8906"
SD_DETECTION_LABELS = "dog;person"
IMAGENET_MODEL = "--imagenet-model: 256x256_diffusion_uncond.pt (guided-diffusion; the adm backbone)"


@dataclass
class Experiment:
    """What one preset needs: a backbone spec, guide specs and a prompt, built from the arguments."""

    preset: str
    backbone: Callable[[argparse.Namespace], str]
    guides: Callable[[argparse.Namespace], list[str]]
    prompt: Callable[[argparse.Namespace], str | None]
    needs: list[tuple[str, str]] = field(default_factory=list)  # (argument, what it is)
    plugins: tuple[str, ...] = ()
    preset_name: str = ""  # the registered preset, when it is not named like the experiment

    @property
    def settings_preset(self) -> str:
        return self.preset_name or self.preset


def _sd(a: argparse.Namespace) -> str:
    return f"stable-diffusion:model={a.sd_model}"


def _imagenet(a: argparse.Namespace) -> str:
    return f'adm:model="{a.imagenet_model}"'


def _opt(key: str, value: str | None) -> str:
    return f',{key}="{value}"' if value else ""


EXPERIMENTS = [
    Experiment(
        "sd-face",
        _sd,
        lambda a: [f'face:image="{a.face_image}"' + _opt("weights", a.face_weights) + (",loss=l1" if a.face_l1 else "")],
        lambda a: a.prompt or "Headshot of a person with blonde hair with space background",
        [("face_image", "--face-image: reference face photo"), ("face_weights?", "--face-weights: insightface backbone.pth")],
        ("face",),
    ),
    Experiment(
        "sd-segmentation",
        _sd,
        lambda a: [f'segmentation:ref="{a.seg_ref}"' + _opt("arch", a.seg_arch)],
        lambda a: a.prompt or "Walker hound, Walker foxhound on snow",
        [("seg_ref", "--seg-ref: image whose segmentation is the target (e.g. a dog photo)")],
        ("segmentation",),
    ),
    Experiment(
        "sd-style",
        _sd,
        lambda a: [f'style:image="{a.style_image}",variant=clip' + _opt("model", a.clip_model)],
        lambda a: a.prompt or "A colorful photo of a eiffel tower",
        [("style_image", "--style-image: style reference")],
        ("style", "clip"),
    ),
    Experiment(
        "sd-clip",
        _sd,
        lambda a: [f'clip:prompt="{a.clip_text}"' + _opt("model", a.clip_model)],
        lambda a: a.prompt or "",  # the official SD CLIP run conditions SD on the empty prompt
        [],
        ("clip",),
    ),
    Experiment(
        "sd-detection",
        _sd,
        lambda a: [f'detection:boxes="{SD_DETECTION_BOXES}",labels="{SD_DETECTION_LABELS}"' + _opt("weights", a.detect_weights)],
        lambda a: a.prompt or "a headshot of a woman with a dog",
        [],
        ("detection",),
    ),
    Experiment(
        "imagenet-clip",
        _imagenet,
        lambda a: [f'clip:prompt="{a.clip_text_imagenet}"' + _opt("model", a.clip_model)],
        lambda a: None,
        [("imagenet_model", IMAGENET_MODEL)],
        ("adm", "clip"),
    ),
    Experiment(
        "imagenet-detection",
        _imagenet,
        lambda a: [f'detection:ref="{a.detect_ref}"' + _opt("weights", a.detect_weights)],
        lambda a: None,
        [("imagenet_model", IMAGENET_MODEL), ("detect_ref", "--detect-ref: photo whose detections are the target")],
        ("adm", "detection"),
    ),
    Experiment(
        "imagenet-inpaint",
        _imagenet,
        lambda a: [f'segmentation:ref="{a.inpaint_image}"', f'seg-inpaint:image="{a.inpaint_image}",mask=background'],
        lambda a: None,
        [("imagenet_model", IMAGENET_MODEL), ("inpaint_image", "--inpaint-image: photo to re-create (its background is kept)")],
        ("adm", "segmentation"),
    ),
    Experiment(
        "imagenet-classifier-guidance",
        _imagenet,
        lambda a: [f"classifier:label={a.imagenet_class}" + _opt("model", a.imagenet_classifier)],
        lambda a: None,
        [("imagenet_model", IMAGENET_MODEL), ("imagenet_classifier", "--imagenet-classifier: 256x256_classifier.pt (noise-aware)")],
        ("adm",),
        "classifier-guidance",
    ),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=["all"], help="experiments to run (names as in --list, or all)")
    p.add_argument("--fast", action="store_true", help="use the -fast variant of each preset (50 steps, fewer recurrences)")
    p.add_argument("--list", action="store_true", help="print what each experiment expects and exit")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of DDIM steps")
    p.add_argument("--num-images", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, default=Path("bench-out/paper-presets"))
    p.add_argument("--prompt", default=None, help="replace the experiment's text prompt")
    p.add_argument("--sd-model", default="CompVis/stable-diffusion-v1-4", help="SD pipeline id or folder (the paper used sd-v1-4)")
    p.add_argument("--imagenet-model", default=None, help="path of guided-diffusion's 256x256_diffusion_uncond.pt (adm backbone)")
    p.add_argument("--imagenet-classifier", default=None, help="path of guided-diffusion's 256x256_classifier.pt")
    p.add_argument("--imagenet-class", type=int, default=207, help="ImageNet class for classifier guidance (207: golden retriever)")
    p.add_argument("--clip-model", default=None, help="CLIP model id or folder (default: the clip plugin's)")
    p.add_argument("--clip-text", default="a hedgehog using a calculator", help="CLIP target for sd-clip")
    p.add_argument("--clip-text-imagenet", default="Birthday Cake", help="CLIP target for imagenet-clip")
    p.add_argument("--face-image", default=None)
    p.add_argument("--face-weights", default=None)
    p.add_argument("--face-l1", action="store_true", help="the official loss form (mean |e - e_ref|)")
    p.add_argument("--seg-ref", default=None)
    p.add_argument("--seg-arch", default=None, help="e.g. lraspp_mobilenet_v3_large (the official network)")
    p.add_argument("--style-image", default=None)
    p.add_argument("--detect-ref", default=None)
    p.add_argument("--detect-weights", default=None)
    p.add_argument("--inpaint-image", default=None)
    return p.parse_args(argv)


def describe(exps: list[Experiment], args: argparse.Namespace) -> None:
    print("experiment           preset (with --fast: NAME-fast)   needs")
    for e in exps:
        needs = "; ".join(text for _, text in e.needs) or "weights only"
        print(f"  {e.preset:<20} plugins: {', '.join(e.plugins):<20} {needs}")
    print("\nWeights are read from the Hugging Face cache (SD, CLIP), the torch hub dir "
          "(torchvision segmenters / detectors / VGG) or the paths you pass; nothing is downloaded by the guides. "
          "The ImageNet model and classifier are guided-diffusion's release files: "
          "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt and "
          ".../256x256_classifier.pt (guided-diffusion README, 'Download pre-trained models').")


def missing_inputs(e: Experiment, args: argparse.Namespace) -> list[str]:
    out = []
    for name, text in e.needs:
        optional = name.endswith("?")
        value = getattr(args, name.rstrip("?"))
        if value is None and not optional:
            out.append(text)
        elif value is not None and name.rstrip("?") not in ("imagenet_model", "imagenet_classifier") and not Path(value).expanduser().exists():
            out.append(f"{text} (given {value!r}, which does not exist)")
    return out


def save_images(images, folder: Path, preset: str) -> list[Path]:  # type: ignore[no-untyped-def]
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        arr = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        path = folder / f"{preset}_{i:03d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def run(exp: Experiment, args: argparse.Namespace, registry) -> dict:  # type: ignore[no-untyped-def]
    from ugd_core import GuideSet, SamplerConfig, UgdError, sample

    name = exp.settings_preset + ("-fast" if args.fast else "")
    row = dict(preset=name, status="", seconds=0.0, losses={})
    for plugin in exp.plugins:
        if plugin not in registry.plugins or registry.plugins[plugin].error:
            row["status"] = f"skipped: plugin {plugin!r} not installed (pip install -e ugd_plugins/{plugin})"
            return row
    lacking = missing_inputs(exp, args)
    if lacking:
        row["status"] = "skipped: needs " + "; ".join(lacking)
        return row
    try:
        settings = dict(registry.get("preset", name).settings)
        if args.steps:
            settings["num_steps"] = args.steps
        config = SamplerConfig.from_dict(settings)
        backbone = registry.build_from_spec("backbone", exp.backbone(args), device=args.device)
        guides = GuideSet([registry.build_from_spec("guide", g, device=args.device) for g in exp.guides(args)])
    except UgdError as exc:
        row["status"] = f"skipped: {exc}"
        return row
    print(f"[{name}] {exp.backbone(args)} | {' | '.join(exp.guides(args))} | prompt={exp.prompt(args)!r} | {settings}", flush=True)
    start = time.perf_counter()
    result = sample(backbone, guides, config, num_images=args.num_images, seed=args.seed, prompt=exp.prompt(args),
                    progress=lambda i, n: print(f"\r  step {i}/{n}", end="", flush=True))
    print()
    row["seconds"] = time.perf_counter() - start
    row["losses"] = {k: [round(float(v), 4) for v in t] for k, t in guides.losses(result.images).items()}
    paths = save_images(result.images, args.out / name, name)
    row["status"] = f"ok: {len(paths)} images in {args.out / name}"
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [e.preset for e in EXPERIMENTS] if "all" in args.preset else [p.removesuffix("-fast") for p in args.preset]
    unknown = [w for w in wanted if w not in {e.preset for e in EXPERIMENTS}]
    if unknown:
        print(f"unknown experiment(s) {unknown}; choose from {', '.join(e.preset for e in EXPERIMENTS)} or all", file=sys.stderr)
        return 2
    exps = [e for e in EXPERIMENTS if e.preset in wanted]
    if args.list:
        describe(exps, args)
        return 0
    import torch

    from ugd_core import load_registry

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: pass --device cpu (very slow at 512 x 512) or run on a GPU machine", file=sys.stderr)
        return 2
    registry = load_registry()
    rows = [run(e, args, registry) for e in exps]
    print("\n| preset | status | seconds | final guide losses |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['status']} | {r['seconds']:.1f} | {r['losses']} |")
    if not any(r["status"].startswith("ok") for r in rows):
        print("\nno experiment could run: install the plugins and put the weights in the caches or pass their paths "
              "(see the 'skipped' reasons above, and --list)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
