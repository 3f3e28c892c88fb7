"""A small negated-caption corpus on a scene world, in the corpus interchange format, for fine-tuning tests.

Stands in for the corpus issue's output (built in parallel): for each image
with 2+ objects, captions "<anchor> with no <colour> <shape>" (a few sentence
forms) for a (colour, shape) absent from the scene, each with one rendered
distractor: the same scene where another object (one the caption does not
mention) is replaced, at its spot and size, by the negated object. Image and
distractor differ only in that object, so only reading the negation tells
them apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_negationclip import world as scene_world
from hf_negationclip.benchmarks import load_world_split

FORMS = ("{head} with no {x}", "{head} without {ax}", "{head} but no {x}", "there is {head} and no {x}")


def write_negation_fixture(
    world_dir,
    out_dir,
    split: str = "train",
    per_image: int = 1,
    seed: int = 0,
    max_images: int | None = None,
    forms=FORMS,
) -> Path:
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "distractors" / split).mkdir(parents=True, exist_ok=True)
    captions = json.loads((Path(world_dir) / "annotations" / f"captions_{split}.json").read_text())
    first_caption = {}
    for ann in captions["annotations"]:
        first_caption.setdefault(ann["image_id"], ann["caption"])
    images, annotations = [], []
    for im in load_world_split(world_dir, split)[:max_images]:
        if len(im.objects) < 2:
            continue
        images.append({"id": im.image_id, "file_name": im.path.name, "height": im.image_size, "width": im.image_size})
        present = {(o["color"], o["shape"]) for o in im.objects}
        for _ in range(per_image):
            anchor_i, replaced_i = rng.choice(len(im.objects), size=2, replace=False)
            anchor, replaced = im.objects[int(anchor_i)], im.objects[int(replaced_i)]
            while True:
                color = scene_world.COLORS[int(rng.integers(len(scene_world.COLORS)))]
                shape = scene_world.SHAPES[int(rng.integers(len(scene_world.SHAPES)))]
                if (color, shape) not in present and shape != anchor["shape"]:
                    break
            objects = [dict(o) for o in im.objects]
            objects[int(replaced_i)] = {**replaced, "color": color, "shape": shape}
            ann_id = len(annotations) + 1
            rel = f"distractors/{split}/{ann_id:08d}.jpg"
            scene_world.render_scene(objects, im.image_size, im.scene_seed).save(out / rel, quality=95)
            x = f"{color} {shape}"
            form = forms[int(rng.integers(len(forms)))]
            text = form.format(head=scene_world.describe(anchor, "color"), x=x, ax=f"{scene_world.article(x)} {x}")
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": im.image_id,
                    "caption": first_caption[im.image_id],
                    "updated_caption": text,
                    "negated": f"{scene_world.article(x)} {x}",
                    "cue": "no",
                    "form": form,
                    "position": None,
                    "pipeline": "absent-object",
                    "proposer": "fixture",
                    "verifier": "annotations",
                    "distractors": [rel],
                }
            )
    path = out / f"negated_captions_{split}.json"
    path.write_text(
        json.dumps(
            {
                "info": {"description": "negated-caption test fixture"},
                "licenses": [],
                "images": images,
                "annotations": annotations,
            }
        )
    )
    return path
