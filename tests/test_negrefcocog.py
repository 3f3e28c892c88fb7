import json
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_negationclip.benchmarks import crop_box, export_negrefcocog, load_negrefcocog_official, load_refcocog
from hf_negationclip.benchmarks.negrefcocog import negrefcocog_from_refcocog
from hf_negationclip.corpus import CorpusFormatError
from hf_negationclip.evaluation import HarnessConfig, run_harness

OFFICIAL = Path("/work/shared/negrefcocog/NegRefCOCOg.json")
if not OFFICIAL.is_file():  # a checkout elsewhere: look beside the repository
    OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "negrefcocog" / "NegRefCOCOg.json"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _refcocog_fixture(root: Path) -> None:
    """RefCOCOg (umd) layout: two dogs and a cat in image 1, one dog alone in image 2."""
    (root / "refcocog").mkdir(parents=True)
    images = [
        {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 100, "width": 100},
        {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "height": 100, "width": 100},
    ]
    anns = [
        {
            "id": 10,
            "image_id": 1,
            "category_id": 18,
            "bbox": [0.0, 0.0, 40.0, 40.0],
            "area": 1600.0,
            "iscrowd": 0,
            "segmentation": [],
        },
        {
            "id": 11,
            "image_id": 1,
            "category_id": 18,
            "bbox": [50.0, 50.0, 40.0, 40.0],
            "area": 1600.0,
            "iscrowd": 0,
            "segmentation": [],
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 17,
            "bbox": [50.0, 0.0, 30.0, 30.0],
            "area": 900.0,
            "iscrowd": 0,
            "segmentation": [],
        },
        {
            "id": 13,
            "image_id": 2,
            "category_id": 18,
            "bbox": [10.0, 10.0, 30.0, 30.0],
            "area": 900.0,
            "iscrowd": 0,
            "segmentation": [],
        },
    ]
    cats = [{"id": 17, "name": "cat", "supercategory": "animal"}, {"id": 18, "name": "dog", "supercategory": "animal"}]
    (root / "refcocog" / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )

    def sent(i, raw):
        return {"sent_id": i, "raw": raw, "sent": raw.lower(), "tokens": raw.lower().split()}

    refs = [
        {
            "ref_id": 0,
            "ann_id": 10,
            "image_id": 1,
            "category_id": 18,
            "split": "val",
            "sent_ids": [0, 1],
            "file_name": "COCO_train2014_000000000001_10.jpg",
            "sentences": [sent(0, "the dog that is not sitting"), sent(1, "a brown dog")],
        },
        {
            "ref_id": 1,
            "ann_id": 11,
            "image_id": 1,
            "category_id": 18,
            "split": "train",
            "sent_ids": [2],
            "file_name": "COCO_train2014_000000000001_11.jpg",
            "sentences": [sent(2, "dog without a collar")],
        },
        {
            "ref_id": 2,
            "ann_id": 13,
            "image_id": 2,
            "category_id": 18,
            "split": "val",
            "sent_ids": [3],
            "file_name": "COCO_train2014_000000000002_13.jpg",
            "sentences": [sent(3, "the dog with no friend")],
        },
    ]
    (root / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps(refs, protocol=2))


def test_builder_keeps_negated_expressions_with_same_category_distractors(tmp_path):
    _refcocog_fixture(tmp_path)
    samples = negrefcocog_from_refcocog(load_refcocog(tmp_path), tmp_path / "train2014")
    # "a brown dog" has no cue; the lone dog of image 2 has no same-category distractor
    assert sorted(s.phrase for s in samples) == ["dog without a collar", "the dog that is not sitting"]
    for s in samples:
        assert len(s.boxes) == 2 and [50.0, 0.0, 30.0, 30.0] not in [list(b) for b in s.boxes]  # never the cat
        assert s.image.name == "COCO_train2014_000000000001.jpg"
    by_phrase = {s.phrase: s for s in samples}
    assert list(by_phrase["the dog that is not sitting"].boxes[by_phrase["the dog that is not sitting"].target]) == [
        0,
        0,
        40,
        40,
    ]
    assert by_phrase["dog without a collar"].cue == "without" and by_phrase["dog without a collar"].position == "middle"
    assert only_val(tmp_path) == ["the dog that is not sitting"]


def only_val(root):
    return [s.phrase for s in negrefcocog_from_refcocog(load_refcocog(root), root, splits=["val"])]


def test_malicious_refs_pickle_is_refused(tmp_path):
    _refcocog_fixture(tmp_path)
    (tmp_path / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(
        CorpusFormatError, match="refusing to load posix.system|refusing to load os.system|refusing to load nt.system"
    ):
        load_refcocog(tmp_path)


def test_official_file_cues_and_shuffled_candidates():
    samples = load_negrefcocog_official(OFFICIAL, "/nowhere")
    assert len(samples) == 440 and len({s.image_id for s in samples}) == 402
    cues = Counter(s.cue for s in samples)
    assert (cues["not"], cues["no"], cues["without"], cues["mixed"], cues["none"]) == (198, 143, 97, 2, 0)
    raw = json.loads(OFFICIAL.read_text())
    for s, rec in zip(samples, raw):
        assert [float(v) for v in rec["ref_bbox"]] == list(s.boxes[s.target])
    answers = Counter(s.target for s in samples)
    assert 150 < answers[0] < 290  # the official file always has the answer first; ours is shuffled


def test_crop_box_official_and_margin():
    im = Image.fromarray(np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3))
    assert crop_box(im, [10, 20, 30, 40]).size == (30, 40)
    assert crop_box(im, [30, 30, 30, 40], margin=0.5).size == (60, 80)  # 15 / 20 px of context per side
    assert crop_box(im, [90, 90, 30, 30], margin=1.0).size == (40, 40)  # clipped to the image
    assert crop_box(im, [5, 5, 0, 0]).size == (1, 1)


def test_official_json_end_to_end_with_stand_in_images(tmp_path, caplog, check_png):
    raw = json.loads(OFFICIAL.read_text())
    folder = tmp_path / "train2014"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = list(dict.fromkeys(r["image"] for r in raw))[:4]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(folder / name)
    expected = sum(r["image"] in names for r in raw)
    results = run_harness(
        HarnessConfig(
            {"tiny": "tiny"},
            {"negrefcocog": {"kind": "negrefcocog", "json": str(OFFICIAL), "image_dir": str(folder)}},
            str(tmp_path / "eval"),
            show_progress=False,
        )
    )
    entry = results["models"]["tiny"]["metrics"]["negrefcocog/accuracy"]
    assert entry["n"] == expected and entry["chance"] == 0.5 and len(entry["ci95"]) == 2
    assert set(entry["breakdown"]) == {"cue", "position"}
    check_png(tmp_path / "eval" / "results.png", height=540, min_width=720, colours=["#1f77b4"])  # the bars drawn


def test_scene_config_exports_loadable_parquet_with_card(world, tmp_path):
    from datasets import load_dataset

    from hf_negationclip.apps.cards import PAPER_CITATION, write_negrefcocog_card

    out = export_negrefcocog(tmp_path / "negrefcocog", "scene", world, cache_dir=tmp_path / "cache")
    assert not (out / "README.md").exists()  # the library writes data; the card is the applications' job
    assert list((tmp_path / "cache").iterdir()) == []  # the staged examples are gone: no stale cache next time
    card = write_negrefcocog_card(out).read_text()
    assert "config_name: scene" in card and "scene/test-*" in card and PAPER_CITATION in card
    stats = json.loads((out / "stats.json").read_text())["scene"]
    cues = ", ".join(f"{k} {v}" for k, v in stats["cue"].items())
    assert f"| `scene` | {stats['n']} | {stats['images']} | {cues} |" in card
    ds = load_dataset(str(out), "scene", split="test")
    row = ds[0]
    assert row["image"].size == (128, 128) and len(row["boxes"]) >= 2 and 0 <= row["target"] < len(row["boxes"])
    assert row["cue"] in ("not", "without", "no") and row["position"] in ("front", "middle", "end")
    (tmp_path / "cache").rename(tmp_path / "gone")  # the parquet holds the image bytes, not paths
    assert load_dataset(str(out), "scene", split="test")[0]["image"].size == (128, 128)


def test_negrefcocog_cli_errors_are_one_line(tmp_path, capsys):
    from hf_negationclip.apps.cli import main

    assert (
        main(["negrefcocog", "--config", "official", "--data_dir", str(OFFICIAL.parent), "--out", str(tmp_path)]) == 2
    )
    assert "pass image_dir=" in capsys.readouterr().err
    assert main(["negrefcocog", "--config", "bogus", "--data_dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "unknown NegRefCOCOg config" in capsys.readouterr().err


@pytest.mark.parametrize("fill", ["median", "blur"])
def test_isolate_box_keeps_size_and_the_box_and_paints_over_the_rest(fill):
    from hf_negationclip.benchmarks.negrefcocog import isolate_box

    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    out = np.asarray(isolate_box(Image.fromarray(pixels), [30, 20, 40, 25], fill=fill))
    assert out.shape == pixels.shape
    assert (out[20:45, 30:70] == pixels[20:45, 30:70]).all()  # inside the box: unchanged
    outside = np.ones(pixels.shape[:2], dtype=bool)
    outside[20:45, 30:70] = False
    assert (out[outside] != pixels[outside]).any(-1).mean() > 0.9  # outside: painted over / blurred
    if fill == "median":
        assert len(np.unique(out[outside], axis=0)) == 1


def test_render_candidate_modes_keep_the_objects_scale_and_panel():
    from hf_negationclip.benchmarks import ImageRef, NegRefCOCOgSample
    from hf_negationclip.benchmarks.negrefcocog import isolate_box, render_candidate, square_window

    pixels = np.random.default_rng(1).integers(0, 256, (64, 128, 3), dtype=np.uint8)  # two 64 px panels side by side
    image, box = Image.fromarray(pixels), (80.0, 10.0, 20.0, 30.0)  # in the right panel
    assert render_candidate(image, ImageRef(Path("x"), box)).size == (20, 30)  # crop: the box alone
    isolated = render_candidate(image, ImageRef(Path("x"), box, mode="isolate"))
    assert isolated.size == (64, 64)  # the box's own panel, at the image's scale
    assert np.array_equal(np.asarray(isolated), np.asarray(isolate_box(image, box))[:, 64:])
    assert square_window((128, 64), (10, 10, 20, 20)) == (0, 0, 64, 64)
    assert square_window((96, 96), (10, 10, 20, 20)) == (0, 0, 96, 96)  # square: the whole image
    assert render_candidate(image, ImageRef(Path("x"))) is image
    sample = NegRefCOCOgSample(Path("x"), "1", "the ring that is not red", (box, (0.0, 0.0, 5.0, 5.0)), 0)
    assert {r.mode for r in sample.to_choice(mode="blur").images} == {"blur"}
    with pytest.raises(ValueError, match="crop mode"):
        sample.to_choice(mode="zoom")


def test_builder_lives_in_dataset_builders_and_reads_the_same_samples(world, tmp_path, monkeypatch):
    import importlib.util
    import sys

    import hf_negationclip.benchmarks.negrefcocog as library
    from hf_negationclip.benchmarks.negrefcocog import samples_for_config

    assert not hasattr(library, "NegRefCOCOgBuilder")  # one home per builder: dataset_builders/
    path = Path(__file__).resolve().parents[1] / "dataset_builders" / "negrefcocog" / "negrefcocog.py"
    spec = importlib.util.spec_from_file_location("negrefcocog", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "negrefcocog", module)  # datasets re-imports the builder's module by name
    spec.loader.exec_module(module)
    builder = module.NegRefCOCOg(config_name="scene", data_dir=str(world), cache_dir=str(tmp_path))
    builder.download_and_prepare()
    ds = builder.as_dataset(split="test")
    samples = samples_for_config("scene", world)
    assert ds["phrase"] == [s.phrase for s in samples] and ds["target"] == [s.target for s in samples]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        module.NegRefCOCOg(
            config_name="scene", data_dir=str(tmp_path / "nope"), cache_dir=str(tmp_path)
        ).download_and_prepare()


def test_negrefcocog_cli_writes_the_card_of_every_exported_config(world, tmp_path, capsys):
    from huggingface_hub import DatasetCard

    from hf_negationclip.apps.cli import main

    out = tmp_path / "negrefcocog"
    assert main(["negrefcocog", "--config", "scene", "--data_dir", str(world), "--out", str(out)]) == 0
    configs = DatasetCard.load(out / "README.md").data.to_dict()["configs"]
    assert [c["config_name"] for c in configs] == ["scene"] and "wrote NegRefCOCOg scene" in capsys.readouterr().out
