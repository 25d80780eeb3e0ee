"""What a run writes: its folder, one PNG + JSON sidecar per image, and a contact sheet.

- :func:`default_out_dir` gives every run a new folder ``outputs/<date>/<NNNN>-<guide slug>``;
  :func:`check_out_dir` refuses a folder that cannot be created or written, before any work.
- :func:`plan_outputs` decides which seeds to sample and write (``--overwrite``/``--resume``);
  :func:`save_planned` writes one image of the plan. An item is complete iff its PNG exists:
  :func:`save_image` writes the sidecar, then renames the PNG into place.
- :func:`write_contact_sheet` draws the run's images in one labelled grid
  (:func:`labelled_grid`, shared with the benchmark grids).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ugd_core.errors import UgdError
from ugd_core.registry import Registry, get_registry

from .spec import RunSpec, resolve_config

if TYPE_CHECKING:  # no torch at import: `ugd generate` checks the output folder before torch loads
    import torch

SHEET_NAME = "contact-sheet.png"
SHEET_MAX_IMAGES = 64  # a contact sheet shows the first 64 images of a run
TMP_SUFFIX = ".tmp"


# -- the folder ------------------------------------------------------------------------------


def check_out_dir(out: Path | str) -> None:
    """UgdError unless ``out`` is, or can be created as, a writable folder (nothing is created)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UgdError(f"--out {p} is a file, not a folder; choose a folder path")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UgdError(f"--out {p} lies under {parent}, which is a file; choose another folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UgdError(f"--out {p} cannot be written ({parent} is not writable); choose a folder you can write to")


def make_out_dir(path: Path) -> None:
    """Create ``path`` (and its parents) or raise a one-line UgdError: a folder that passes
    :func:`check_out_dir` may still refuse (``/sys``, a read-only mount, a full disk)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UgdError(f"--out {path} cannot be created ({exc.strerror or exc}); choose a folder you can write to") from None


def sheet_name(seeds: Sequence[int], own_folder: bool) -> str:
    """The contact sheet's file name: ``contact-sheet.png`` in a run's own folder (the default, a new
    folder per run); under ``--out``, which runs with other seeds may share, one per run named for its
    seeds, ``contact-sheet-0-15.png``, so concurrent runs into one folder never replace each other's."""
    if own_folder or not seeds:
        return SHEET_NAME
    return f"contact-sheet-{seeds[0]}.png" if len(seeds) == 1 else f"contact-sheet-{seeds[0]}-{seeds[-1]}.png"


def guide_slug(guides: Sequence[str], limit: int = 40) -> str:
    """A short folder-name form of the guide specs: ``digit:label=7`` -> ``digit-label-7``."""
    text = "+".join(guides) or "unguided"
    slug = re.sub(r"[^a-z0-9+.]+", "-", text.lower()).strip("-.")
    return slug[:limit].rstrip("-.+") or "run"


def default_out_dir(spec: RunSpec, root: Path | str = "outputs") -> Path:
    """Create and return a new folder ``root/<YYYY-MM-DD>/<NNNN>-<guide slug>`` for a run.

    NNNN counts up within the day; the folder is created here (``mkdir`` without
    ``exist_ok``), so two runs started at once, even with identical commands, never share one.
    """
    day = Path(root) / dt.date.today().isoformat()
    check_out_dir(day)
    make_out_dir(day)
    slug = guide_slug(spec.guides)
    for _ in range(10_000):
        taken = [int(p.name[:4]) for p in day.iterdir() if p.name[:4].isdigit()]
        path = day / f"{max(taken, default=0) + 1:04d}-{slug}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took this number first: count on
            continue
    raise UgdError(f"no free run folder under {day}; pass --out")


# -- the files of one image ------------------------------------------------------------------


def image_name(seed: int) -> str:
    """File stem of the image with that seed."""
    if seed < 0:
        raise UgdError(f"seed {seed} must be >= 0")
    return f"ugd-{seed:06d}"


def output_paths(out_dir: Path, seeds: Iterable[int]) -> list[tuple[Path, Path]]:
    """(png, json) paths for each seed."""
    return [(out_dir / f"{image_name(s)}.png", out_dir / f"{image_name(s)}.json") for s in seeds]


def to_pil(image: torch.Tensor) -> Any:
    """CHW in [-1, 1] -> PIL image (L for one channel, RGB for three)."""
    import torch
    from PIL import Image

    arr = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")


def save_image(item: Any, out_dir: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a generated image's PNG (record in its 'ugd' text chunk) and JSON sidecar.

    The PNG is written to ``NAME.png.tmp`` and renamed into place last, so a PNG that
    exists is complete. Never clobbers without ``overwrite``.
    """
    from PIL.PngImagePlugin import PngInfo

    out_dir.mkdir(parents=True, exist_ok=True)
    png, side = output_paths(out_dir, [item.record["seed"]])[0]
    if not overwrite and (png.exists() or side.exists()):
        raise UgdError(f"{png} already exists; pass --overwrite or choose another --out")
    info = PngInfo()
    info.add_text("ugd", json.dumps(item.record, sort_keys=True))  # the record only: same record, same bytes
    tmp = png.with_suffix(".png" + TMP_SUFFIX)
    to_pil(item.image).save(tmp, format="PNG", pnginfo=info)
    side.write_text(json.dumps(dict(item.record, stats=item.stats), indent=2, sort_keys=True))
    tmp.replace(png)
    return png, side


def remove_temporaries(out_dir: Path, seeds: Iterable[int]) -> int:
    """Delete the half-written files this run may have left (``*.png.tmp``, the sheet's); returns how many."""
    seeds = list(seeds)
    sheets = {sheet_name(seeds, own) for own in (True, False)}
    names = [f"{image_name(s)}.png{TMP_SUFFIX}" for s in seeds] + [f"{name}.{os.getpid()}{TMP_SUFFIX}" for name in sheets]
    removed = 0
    for name in names:
        try:
            (out_dir / name).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


# -- what to write ---------------------------------------------------------------------------


@dataclass
class OutputPlan:
    """Which batches to sample and which seeds to write."""

    batches: list[list[int]]
    write: list[int]
    skipped: list[int] = field(default_factory=list)
    partial: list[int] = field(default_factory=list)  # sidecar without PNG (an interrupted write): replaced


def spec_identity(spec: RunSpec, registry: Registry | None = None) -> dict[str, Any]:
    """What an image record must match to count as 'made by this spec' (seed and batch aside)."""
    config, _ = resolve_config(spec, registry or get_registry())
    ident = dict(
        backbone=spec.backbone, guides=list(spec.guides), sampler=config.to_dict(),
        prompt=spec.prompt, negative_prompt=spec.negative_prompt,
    )
    return json.loads(json.dumps(ident, sort_keys=True))


def record_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The :func:`spec_identity` fields of an image record (a part that is no object, as a hand edit may leave it, has no
    spec: the record then differs from any run's)."""
    def spec_of(part: Any) -> Any:
        return part.get("spec") if isinstance(part, dict) else None

    guides = record.get("guides", [])
    ident = dict(
        backbone=spec_of(record.get("backbone", {})),
        guides=[spec_of(g) for g in guides] if isinstance(guides, list) else None,
        sampler=record.get("sampler"),
        prompt=record.get("prompt"),
        negative_prompt=record.get("negative_prompt"),
    )
    return json.loads(json.dumps(ident, sort_keys=True))


def check_outputs_free(out_dir: Path, seeds: Iterable[int], overwrite: bool) -> None:
    """UgdError if any output exists and ``overwrite`` is False (checked before any work)."""
    if overwrite:
        return
    taken = [p for pair in output_paths(out_dir, seeds) for p in pair if p.exists()]
    if taken:
        raise UgdError(f"{taken[0]} already exists ({len(taken)} output files in all); pass --overwrite, --resume or choose another --out")


def plan_outputs(
    spec: RunSpec,
    out_dir: Path,
    seeds: Iterable[int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    registry: Registry | None = None,
) -> OutputPlan:
    """Decide what a run writes into ``out_dir``, checking everything before any work.

    - neither flag: any existing output file of a requested seed is a UgdError;
    - ``overwrite``: everything is sampled and replaced;
    - ``resume``: complete items (PNG present) of this very spec are skipped; a complete item
      of another spec is a UgdError; a sidecar left without its PNG is written again.
    """
    from .records import read_image_record

    if overwrite and resume:
        raise UgdError("--overwrite and --resume contradict each other; --resume keeps existing images, --overwrite replaces them")
    out_dir = Path(out_dir)
    wanted = list(spec.seeds() if seeds is None else seeds)
    write, skipped, partial = list(wanted), [], []
    if resume:
        identity = None
        write = []
        for seed, (png, side) in zip(wanted, output_paths(out_dir, wanted)):
            if not png.exists():
                write.append(seed)
                if side.exists():
                    partial.append(seed)
                continue
            identity = identity if identity is not None else spec_identity(spec, registry)
            record = read_image_record(side if side.exists() else png)
            mine = record_identity(record)
            if mine != identity or record.get("seed") != seed:
                diff = sorted(k for k in identity if identity[k] != mine.get(k)) or ["seed"]
                raise UgdError(
                    f"{png} was made by a different run spec (differs in {', '.join(diff)}); "
                    "--resume only completes the same command: choose another --out, or pass --overwrite"
                )
            skipped.append(seed)
    elif not overwrite:
        check_outputs_free(out_dir, wanted, overwrite=False)
    todo = set(write)
    batches = [b for b in spec.batches() if todo.intersection(b)]
    return OutputPlan(batches, write, skipped, partial)


def save_planned(item: Any, out_dir: Path, plan: OutputPlan, overwrite: bool) -> tuple[Path, Path]:
    """Write one item of the plan; a complete (PNG) item is never replaced unless ``overwrite``."""
    seed = item.record["seed"]
    png, _ = output_paths(out_dir, [seed])[0]
    if not overwrite and png.exists():
        raise UgdError(f"{png} appeared while this run was writing; is another run using the same --out?")
    return save_image(item, out_dir, overwrite=overwrite or seed in plan.partial)


# -- grids -----------------------------------------------------------------------------------


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def labelled_grid(
    tiles: Sequence[Sequence[Any]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    title: Sequence[str] = (),
    tile: int | None = None,
) -> Any:
    """A grid of PIL images (rows of tiles; None = blank) with labels, as one RGB PIL image.

    ``row_labels`` are drawn left of each row, ``col_labels`` above each column,
    ``captions[r][c]`` under each tile, ``title`` lines on top. Tiles are scaled to
    ``tile`` pixels on their longer side (default: the largest tile, kept between 96
    and 256; small images are enlarged with nearest-neighbour so pixels stay sharp).
    """
    from PIL import Image, ImageDraw

    images = [im for row in tiles for im in row if im is not None]
    if tile is None:
        biggest = max((max(im.size) for im in images), default=96)
        tile = min(256, max(96, biggest))
    font_size = max(11, tile // 9)
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str) -> int:
        return int(probe.textlength(text, font=font))

    pad, line = 4, font_size + 4
    ncols = max((len(r) for r in tiles), default=0)
    left = (max((width(t) for t in row_labels), default=0) + 2 * pad) if row_labels else 0
    top = len(title) * line + (line if col_labels else 0) + pad
    cap = line if captions else 0
    cell_w, cell_h = tile + pad, tile + cap + pad
    total_w = max(left + ncols * cell_w + pad, max((width(t) for t in title), default=0) + 2 * pad)
    sheet = Image.new("RGB", (total_w, top + len(tiles) * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(title):
        draw.text((pad, pad + i * line), text, fill="black", font=font)
    for c, text in enumerate(col_labels or []):
        draw.text((left + c * cell_w + pad, top - line), text, fill="black", font=font)
    for r, row in enumerate(tiles):
        y = top + r * cell_h
        if row_labels:
            draw.text((pad, y + tile // 2 - font_size // 2), row_labels[r], fill="black", font=font)
        for c, im in enumerate(row):
            x = left + c * cell_w + pad
            if im is not None:
                scale = tile / max(im.size)
                size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
                sheet.paste(im.convert("RGB").resize(size, resample), (x, y))
            if captions and c < len(captions[r]):
                draw.text((x, y + tile + 2), captions[r][c], fill="dimgray", font=font)
    return sheet


def write_contact_sheet(out_dir: Path, spec: RunSpec, preset: str | None = None, name: str = SHEET_NAME) -> Path | None:
    """Draw the run's images (its first SHEET_MAX_IMAGES that exist) into ``out_dir/NAME``
    (``contact-sheet.png``; :func:`sheet_name` gives a run under ``--out`` its own).

    Titled with the guide specs, backbone, preset and seeds; each tile captioned with its
    seed. Replaces an earlier sheet of that name (a rerun of the same seeds, ``--resume``).
    Returns its path, or None when no image of the run exists.
    """
    from PIL import Image

    seeds = spec.seeds()
    pngs = [(s, p) for s, (p, _) in zip(seeds, output_paths(out_dir, seeds)) if p.exists()]
    shown = pngs[:SHEET_MAX_IMAGES]
    if not shown:
        return None
    ncols = min(8, math.ceil(math.sqrt(len(shown))))
    images = []
    for _, p in shown:
        with Image.open(p) as im:
            images.append(im.copy())
    rows = [images[i : i + ncols] for i in range(0, len(images), ncols)]
    captions = [[f"seed {s}" for s, _ in shown[i : i + ncols]] for i in range(0, len(shown), ncols)]
    title = [
        "guides: " + ("  +  ".join(spec.guides) if spec.guides else "none (unguided)"),
        f"backbone {spec.backbone}" + (f", preset {preset}" if preset else "") + (f", prompt {spec.prompt!r}" if spec.prompt else ""),
        (f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}") + (f" (first {len(shown)} of {len(pngs)} shown)" if len(pngs) > len(shown) else ""),
    ]
    sheet = labelled_grid(rows, captions=captions, title=title)
    path = out_dir / name
    tmp = out_dir / f"{name}.{os.getpid()}{TMP_SUFFIX}"
    sheet.save(tmp, format="PNG")
    tmp.replace(path)
    return path
