"""A PNG with a few frames of one test video per class of a generated benchmark (``stfn synth --contact-sheet``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stfn.data.synthetic.generate import load_info, video_entries
from stfn.data.synthetic.render import render
from stfn.data.synthetic.scenes import GROUPS, build_scene
from stfn.data.synthetic.variants import split_variant, tint, variant_class

__all__ = ["contact_sheet"]


def contact_sheet(root: str | os.PathLike, out_png: str | os.PathLike, frames: int = 6, scale: int = 1) -> Path:
    """A PNG with one row per class: ``frames`` evenly spaced frames of one of its test videos.

    Class ``k`` shows its ``k``-th test video (cycling), so the rows show different backdrops and
    colours (videos with the same group and clip number share them). Frames are rendered again from
    the scene: identical to what was encoded, before compression. Saved with a 256-colour palette.
    """
    info = load_info(root)
    p = info.params
    tests: dict[str, list[tuple[int, int]]] = {}
    for name, subset, g, c in video_entries(p):
        if subset == "test":
            tests.setdefault(name, []).append((g, c))
    s = p["size"] * scale
    label_w, pad, head = 170, 4, 14
    rows = info.class_names
    width = label_w + frames * (s + pad)
    height = len(rows) * (s + pad) + head * len(GROUPS)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y, last_group = 0, None
    for k, name in enumerate(rows):
        group = variant_class(name).group
        if group != last_group:
            draw.text((2, y + 1), f"{group}", fill=(160, 0, 0))
            y, last_group = y + head, group
        g, c = tests[name][k % len(tests[name])]
        base, variant = split_variant(name)
        video = tint(render(build_scene(base, p, [info.seed, g, c] + ([variant] if variant else []))), variant)
        picks = np.linspace(0, len(video) - 1, frames).round().astype(int)
        draw.text((8, y + s // 2 - 6), name, fill=(0, 0, 0))
        for j, t in enumerate(picks):
            img = Image.fromarray(video[t]).resize((s, s), Image.NEAREST)
            sheet.paste(img, (label_w + j * (s + pad), y))
        y += s + pad
    sheet = sheet.crop((0, 0, width, y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    sheet.quantize(256, method=Image.Quantize.FASTOCTREE).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, out_png)
    return out_png
