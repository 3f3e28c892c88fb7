import hashlib
import json
import math

import numpy as np
import pytest

from hf_negationclip import COLORS, SHAPES, SIZES, load_refcocog, negation_cues, render_scene, sample_scene, write_world
from hf_negationclip import world as scene_world


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_vocabulary_sizes():
    assert len(SHAPES) >= 8 and len(COLORS) >= 8 and len(SIZES) >= 2


def test_same_seed_same_bytes(tmp_path):
    write_world(tmp_path / "a", 30, seed=7, show_progress=False)
    write_world(tmp_path / "b", 30, seed=7, show_progress=False)
    write_world(tmp_path / "c", 30, seed=8, show_progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_render_scene_deterministic_and_local():
    rng = np.random.default_rng(0)
    objects = sample_scene(rng, 128)
    a, b = np.asarray(render_scene(objects, 128, seed=5)), np.asarray(render_scene(objects, 128, seed=5))
    assert a.shape == (128, 128, 3) and (a == b).all()
    extra = dict(objects[0], color=next(c for c in COLORS if c != objects[0]["color"]))
    c = np.asarray(render_scene([extra] + objects[1:], 128, seed=5))
    ys, xs = np.nonzero((a != c).any(-1))
    x, y, w, h = scene_world.object_bbox(objects[0], 128)
    assert xs.min() >= math.floor(x) - 1 and xs.max() <= math.ceil(x + w) + 1
    assert ys.min() >= math.floor(y) - 1 and ys.max() <= math.ceil(y + h) + 1
    # the kept background of seed 5 is not painted on: an empty scene is the background drawn afresh
    fresh, _ = scene_world.render._background(np.random.default_rng(5), 128, scene_world.DEFAULT_BACKGROUND)
    assert (np.asarray(render_scene([], 128, seed=5)) == fresh).all()


@pytest.mark.parametrize("layout", scene_world.LAYOUTS)
def test_sampled_scenes_fit_and_do_not_overlap(layout):
    rng = np.random.default_rng(1)
    counts = set()
    for _ in range(300):
        objs = sample_scene(rng, 128, layout=layout)
        counts.add(len(objs))
        for i, o in enumerate(objs):
            r = scene_world.SIZE_RADIUS[o["size"]] * 128
            assert r <= o["x"] <= 128 - r and r <= o["y"] <= 128 - r
            for p in objs[i + 1 :]:
                assert math.hypot(o["x"] - p["x"], o["y"] - p["y"]) > r + scene_world.SIZE_RADIUS[p["size"]] * 128
    assert counts == {1, 2, 3, 4}


def test_coco_formats_read_back_with_plain_json(world):
    for split in ("train", "val", "test"):
        inst = json.loads((world / "annotations" / f"instances_{split}.json").read_text())
        caps = json.loads((world / "annotations" / f"captions_{split}.json").read_text())
        assert {c["name"] for c in inst["categories"]} == set(SHAPES)
        sizes = {im["id"]: (im["width"], im["height"]) for im in inst["images"]}
        for im in inst["images"]:
            assert (world / "images" / split / im["file_name"]).is_file()
        assert inst["annotations"]
        for ann in inst["annotations"]:
            x, y, w, h = ann["bbox"]
            W, H = sizes[ann["image_id"]]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= W and y + h <= H
            assert ann["area"] > 0 and ann["iscrowd"] == 0 and ann["attributes"]["color"] in COLORS
            assert ann["attributes"]["size"] in SIZES
            seg = ann["segmentation"]  # polygons, or an uncompressed RLE for rings (they have a hole)
            assert isinstance(seg[0], list) if isinstance(seg, list) else sum(seg["counts"]) == W * H
        per_image = {}
        for c in caps["annotations"]:
            per_image[c["image_id"]] = per_image.get(c["image_id"], 0) + 1
            assert negation_cues(c["caption"]) == [], c["caption"]
        assert set(per_image.values()) == {5} and len(per_image) == len(caps["images"])
        assert len({c["caption"] for c in caps["annotations"]}) > 0.9 * len(caps["annotations"])


def test_refcocog_layout_and_negated_expressions(world):
    ref = load_refcocog(world)
    assert set(ref.categories) == set(range(1, len(SHAPES) + 1))
    sents = []
    for r in ref.refs:
        assert {"ref_id", "ann_id", "category_id", "image_id", "split", "sent_ids", "file_name", "sentences"} <= set(r)
        assert ref.annotations[r["ann_id"]]["image_id"] == r["image_id"]
        assert ref.image_path(r, world / "images").is_file()
        for s in r["sentences"]:
            assert {"sent_id", "raw", "sent", "tokens"} <= set(s) and s["tokens"] == s["sent"].split()
            sents.append(s["raw"])
    assert {r["split"] for r in ref.refs} == {"train", "val", "test"}
    assert any(" is not " in s for s in sents)
    assert any(" without " in s for s in sents)


def test_vqa_layout_and_balance(world):
    q = json.loads((world / "vqa" / "v2_OpenEnded_mscoco_train_questions.json").read_text())
    a = json.loads((world / "vqa" / "v2_mscoco_train_annotations.json").read_text())
    assert {"info", "license", "task_type", "data_type", "data_subtype", "questions"} <= set(q)
    assert [x["question_id"] for x in q["questions"]] == [x["question_id"] for x in a["annotations"]]
    for ann in a["annotations"]:
        assert ann["answer_type"] == "yes/no" and len(ann["answers"]) == 10
        assert ann["multiple_choice_answer"] in ("yes", "no")
    no = np.mean([ann["multiple_choice_answer"] == "no" for ann in a["annotations"]])
    assert 0.4 < no < 0.6


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="n_images must be a positive integer"):
        write_world(tmp_path / "w", -5, show_progress=False)
    with pytest.raises(ValueError, match="image_size"):
        write_world(tmp_path / "w", 5, image_size=32, show_progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot write the world"):
        write_world(blocker / "w", 5, show_progress=False)
    with pytest.raises(ValueError, match="shape must be one of"):
        render_scene([{"shape": "blob", "color": "red", "size": "small", "x": 50, "y": 50}])


def test_resume_keeps_images_and_refuses_a_different_world(tmp_path):
    write_world(tmp_path, 20, seed=1, show_progress=False)
    first = (tmp_path / "images" / "train" / "000000000001.jpg").stat().st_mtime_ns
    write_world(tmp_path, 20, seed=1, show_progress=False)
    assert (tmp_path / "images" / "train" / "000000000001.jpg").stat().st_mtime_ns == first
    with pytest.raises(FileExistsError, match="different world"):
        write_world(tmp_path, 20, seed=2, show_progress=False)


def test_grid_layout_puts_each_object_inside_its_own_cell():
    rng = np.random.default_rng(4)
    cell = 128 / scene_world.GRID
    for _ in range(200):
        objs = sample_scene(rng, 128)
        assert len({(o["x"], o["y"]) for o in objs}) == len(objs)
        for o in objs:
            assert (o["x"], o["y"]) in scene_world.grid_cells(128)
            x, y, w, h = scene_world.object_bbox(o, 128)
            col, row = int(o["x"] // cell), int(o["y"] // cell)
            assert col * cell <= x and x + w <= (col + 1) * cell and row * cell <= y and y + h <= (row + 1) * cell


def test_background_families_and_named_styles_render_the_same_pixels():
    objs = sample_scene(np.random.default_rng(2), 128)
    for family, styles in scene_world.BACKGROUND_FAMILIES.items():
        seen = set()
        for seed in range(12):
            style = scene_world.background_style(seed, 128, family)
            seen.add(style)
            a = np.asarray(render_scene(objs, 128, seed, family))
            assert (a == np.asarray(render_scene(objs, 128, seed, style))).all()
        assert seen == set(styles)
    with pytest.raises(ValueError, match="background must be one of"):
        render_scene(objs, 128, 0, "neon")


def test_world_options_are_recorded_and_validated(tmp_path):
    write_world(tmp_path / "r", 10, seed=1, layout="random", background="textured", show_progress=False)
    params = json.loads((tmp_path / "r" / "world.json").read_text())
    assert params["layout"] == "random" and params["background"] == "textured"
    inst = json.loads((tmp_path / "r" / "annotations" / "instances_train.json").read_text())
    assert {im["background"] for im in inst["images"]} <= set(scene_world.BACKGROUND_FAMILIES["textured"])
    with pytest.raises(ValueError, match="layout must be one of"):
        write_world(tmp_path / "x", 5, layout="spiral", show_progress=False)


def test_mask_areas_agree_with_coco_rasterisation(world):
    """pycocotools' annToMask (the reference reader) gives back each annotation's area, rings (holes) included."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        coco = coco_mod.COCO(str(world / "annotations" / "instances_train.json"))
    rings = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        area = coco.annToMask(ann).sum()
        if coco.cats[ann["category_id"]]["name"] == "ring":
            rings += 1
            assert area == ann["area"] and isinstance(ann["segmentation"], dict)
        else:
            assert abs(area - ann["area"]) <= 0.1 * ann["area"] + 4, (ann["category_id"], area, ann["area"])
    assert rings > 0
