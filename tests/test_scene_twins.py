import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hf_negationclip.apps.cli import main
from hf_negationclip.benchmarks import load_ccneg, load_negbench_mcq, load_valse_existence, write_scene_benchmarks
from hf_negationclip.evaluation import write_plot


@pytest.fixture(scope="module")
def bench(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, write_scene_benchmarks(world, out, "val", n_items=24, seed=0)


def test_benchmarks_of_an_older_format_are_written_again_other_arguments_refused(world, tmp_path):
    from hf_negationclip.benchmarks.twins import SCENE_FORMAT_VERSION

    manifest = write_scene_benchmarks(world, tmp_path, "val", n_items=8, seed=0)
    path = tmp_path / "manifest.json"
    old = {**manifest, "params": {**manifest["params"], "format_version": SCENE_FORMAT_VERSION - 1}}
    path.write_text(json.dumps(old))
    again = write_scene_benchmarks(world, tmp_path, "val", n_items=8, seed=0)
    assert again["params"]["format_version"] == SCENE_FORMAT_VERSION
    assert json.loads(path.read_text())["params"]["format_version"] == SCENE_FORMAT_VERSION
    with pytest.raises(FileExistsError, match="other arguments"):
        write_scene_benchmarks(world, tmp_path, "val", n_items=12, seed=0)


def _diff_box(a: Image.Image, b: Image.Image):
    ys, xs = np.nonzero((np.asarray(a, dtype=np.int16) != np.asarray(b, dtype=np.int16)).any(-1))
    return (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else None


def _small(box, limit=50):
    return box is not None and box[2] - box[0] < limit and box[3] - box[1] < limit


def test_manifest_uses_the_real_layouts(bench):
    out, manifest = bench
    tasks = manifest["tasks"]
    assert {s["kind"] for s in tasks.values()} == {
        "negrefcocog",
        "valse-existence",
        "negbench-mcq",
        "ccneg",
        "retrieval",
        "zeroshot",
    }
    assert Path(tasks["scene-negrefcocog"]["json"]).name == "NegRefCOCOg.json"
    assert Path(tasks["scene-valse-existence"]["json"]).name == "existence.json"
    assert Path(tasks["scene-ccneg"]["pt"]).name == "ccneg_preprocessed.pt"
    assert tasks["scene-negrefcocog"]["crop_mode"] == "isolate"  # the scene twins are isolated, not cropped
    raw = torch.load(tasks["scene-ccneg"]["pt"], weights_only=True)
    assert raw["image_paths"][0].startswith("/home/")  # foreign absolute paths, as in the real file
    assert write_scene_benchmarks(manifest["params"]["world_dir"], out, "val", 24, 0) == manifest  # cached


def test_controlled_negrefcocog_crops_differ_only_in_the_negated_value(bench):
    _, manifest = bench
    spec = manifest["tasks"]["scene-negrefcocog-controlled"]
    records = json.loads(Path(spec["json"]).read_text())
    assert sum(" not " in r["phrase"] for r in records) == len(records) // 2
    for rec in records[:10]:
        image = Image.open(Path(spec["image_dir"]) / rec["image"]).convert("RGB")
        a, b = rec["bbox_list"]
        assert a[1:] == b[1:] and abs(abs(a[0] - b[0]) - image.height) < 1e-6  # same box in each half
        half = image.height
        left, right = image.crop((0, 0, half, half)), image.crop((half, 0, 2 * half, half))
        box = _diff_box(left, right)  # the halves differ only inside the candidate box
        x, y, w, h = a if a[0] < half else b
        assert box is not None and x - 1 <= box[0] and box[2] <= x + w + 1 and y - 1 <= box[1] and box[3] <= y + h + 1


def test_controlled_valse_and_ccneg_pair_each_text_with_both_renders(bench):
    _, manifest = bench
    for name, load in (
        ("scene-valse-existence-controlled", lambda s: load_valse_existence(s["json"], s["image_dir"])),
        ("scene-ccneg-controlled", lambda s: load_ccneg(s["pt"], s["image_dir"])),
    ):
        items = load(manifest["tasks"][name])
        assert len(items) % 2 == 0 and len(items) >= 20
        for first, second in zip(items[::2], items[1::2]):
            assert set(first.texts) == set(second.texts)
            assert first.texts[first.answer] != second.texts[second.answer]  # each text right once, wrong once
            a, b = (Image.open(it.image.path).convert("RGB") for it in (first, second))
            assert _small(_diff_box(a, b))  # renders differ only at the one spot


def test_controlled_mcq_groups_share_options_and_differ_in_one_object(bench):
    _, manifest = bench
    spec = manifest["tasks"]["scene-negbench-mcq-controlled"]
    frame = pd.read_csv(spec["csv"])
    assert len(frame) % 4 == 0
    for start in range(0, len(frame), 4):
        group = frame.iloc[start : start + 4]
        options = [frozenset(r[f"caption_{k}"] for k in range(4)) for _, r in group.iterrows()]
        assert len(set(options)) == 1 and group["caption_0"].nunique() == 4
    items = load_negbench_mcq(spec["csv"], spec["image_root"])
    # every template on n // 4 scenes of four renders: n rows each (n_items=24)
    assert Counter(it.groups["template"] for it in items) == {"affirmation": 24, "negation": 24, "hybrid": 24}


def test_evaluate_cli_two_models_writes_results_table_and_chart(world, bench, tmp_path, capsys, check_png):
    out, _ = bench
    args = [
        "evaluate",
        "--model",
        "tiny",
        "--model",
        "tiny",
        "--benchmarks_dir",
        str(out),
        "--output_dir",
        str(tmp_path),
        "--intervals",
        "true",
        "--show_progress",
        "false",
        "--tasks",
        "negrefcocog,valse-existence,negbench-mcq,ccneg,retrieval,zeroshot",
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"tasks", "models", "created", "seed"} and list(results["models"]) == ["tiny", "tiny'"]
    metrics = results["models"]["tiny"]["metrics"]
    for name in (
        "scene-negrefcocog/accuracy",
        "scene-negrefcocog-controlled/accuracy",
        "scene-negrefcocog-controlled/affirmative_accuracy",
        "scene-valse-existence-controlled/accuracy",
        "scene-negbench-mcq-controlled/negation_accuracy",
        "scene-ccneg-controlled/accuracy",
        "scene-retrieval/image_to_text_r@1",
        "scene-zeroshot-shape/accuracy",
        "scene-caption-flip/accuracy",
        "scene-scope-swap/accuracy",
        "scene-present-negation/accuracy",
    ):
        entry = metrics[name]
        assert (
            0 <= entry["value"] <= 1 and entry["n"] > 0 and entry["ci95"][0] <= entry["ci95"][1] and entry["chance"] > 0
        )
    assert metrics["scene-zeroshot-shape/accuracy"]["chance"] == pytest.approx(1 / 8, abs=0.2)
    for name in ("scene-caption-flip", "scene-scope-swap", "scene-present-negation"):  # caption choice: 2 options
        assert metrics[f"{name}/accuracy"]["chance"] == 0.5 and metrics[f"{name}/accuracy"]["n"] == 24
    assert set(metrics["scene-negrefcocog/accuracy"]["breakdown"]) == {"cue", "position"}
    assert results["models"]["tiny"]["metrics"] == results["models"]["tiny'"]["metrics"]  # same weights, same numbers
    assert "| scene-ccneg-controlled/accuracy | 0.500 |" in (tmp_path / "results.md").read_text()
    check_png(
        tmp_path / "results.png", height=540, min_width=720, colours=["#1f77b4", "#ff7f0e"]
    )  # a bar colour per model
    # a report's headline: the rows given, as labelled horizontal bars (a row no model has is left out)
    rows = [("scene-caption-flip/accuracy", "caption flip"), ("nowhere/accuracy", "absent"),
            ("scene-ccneg-controlled/accuracy", "CC-Neg")]  # fmt: skip
    write_plot(results, tmp_path / "headline.png", rows=rows)
    two_rows = check_png(tmp_path / "headline.png", width=1080, colours=["#1f77b4", "#ff7f0e"])
    write_plot(results, tmp_path / "headline.png", rows=rows[:1])
    assert check_png(tmp_path / "headline.png", width=1080).height < two_rows.height
    with pytest.raises(ValueError, match="none of the rows"):
        write_plot(results, tmp_path / "none.png", rows=rows[1:2])


def test_evaluate_cli_plain_errors_for_bad_models(tmp_path, capsys, monkeypatch):
    assert main(["evaluate", "--model", str(tmp_path / "nonexistent")]) == 2
    assert f"no checkpoint at {tmp_path / 'nonexistent'} (and it is not a Hub id)" in capsys.readouterr().err
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time, so not via the env
    assert main(["evaluate", "--model", "some-org/some-clip"]) == 2
    assert "Hub cannot be reached" in capsys.readouterr().err


def test_zeroshot_on_a_labelled_datasets_dataset(tmp_path):
    import datasets

    from hf_negationclip.evaluation.harness import load_task

    images = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "red")]
    ds = datasets.Dataset.from_dict(
        {"img": images, "label": [0, 1, 0]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["red", "blue"])}),
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    task = load_task("zs", {"kind": "zeroshot", "folder": str(tmp_path / "ds")})
    refs, labels, classes = task.zeroshot
    assert labels == [0, 1, 0] and classes == ["red", "blue"] and all(r.path.is_file() for r in refs)


def test_scene_negrefcocog_candidates_are_isolated_and_each_rendering_encoded_once(bench, monkeypatch):
    import hf_negationclip.evaluation.harness as harness
    from hf_negationclip.benchmarks.twins import with_scene_defaults

    _, manifest = bench
    spec = manifest["tasks"]["scene-negrefcocog-controlled"]
    assert spec["crop_mode"] == manifest["tasks"]["scene-negrefcocog"]["crop_mode"] == "isolate"
    assert with_scene_defaults({"tasks": {"old": {"kind": "negrefcocog"}}})["tasks"]["old"]["crop_mode"] == "isolate"
    isolated, cropped = harness.load_task("a", spec), harness.load_task("b", spec, crop_mode="crop")  # override
    assert {r.mode for it in isolated.items for r in it.images} == {"isolate"}
    assert {r.mode for it in cropped.items for r in it.images} == {"crop"}
    assert harness.load_task("c", {k: v for k, v in spec.items() if k != "crop_mode"}).items == cropped.items  # default
    calls, real = [], harness.render_candidate
    monkeypatch.setattr(harness, "render_candidate", lambda image, ref: calls.append(ref) or real(image, ref))
    refs = isolated.image_refs() + cropped.image_refs() + isolated.image_refs()
    cache = harness.encode_once(*harness.load_checkpoint("tiny"), refs, [], batch_size=7)
    assert len(calls) == len(set(calls)) == 2 * len(set(isolated.image_refs()))  # each rendering once
    assert cache.images(isolated.image_refs()[:2]).shape[0] == 2


def test_caption_side_twins_are_negbench_mcq_files_whose_options_differ_only_in_the_negation(world, bench):
    from hf_negationclip.benchmarks.twins import CAPTION_TWINS
    from hf_negationclip.corpus import has_negation

    out, manifest = bench
    for name in CAPTION_TWINS:
        spec = manifest["tasks"][name]
        assert spec["kind"] == "negbench-mcq" and Path(spec["csv"]).is_relative_to(out)
        frame = pd.read_csv(spec["csv"])
        assert list(frame.columns) == [
            "image_path",
            "correct_answer",
            "caption_0",
            "caption_1",
            "correct_answer_template",
        ]
        assert len(frame) == 24 and (frame["correct_answer"] == 0).all()  # the NegBench convention: answer first
        for _, row in frame.iterrows():
            right, wrong = row["caption_0"].split(), row["caption_1"].split()
            assert len(right) == len(wrong) and right != wrong
            if name == "scene-scope-swap":
                assert has_negation(row["caption_0"]) and has_negation(row["caption_1"])
            else:  # one side negated, the other its affirmative flip
                assert has_negation(row["caption_0"]) != has_negation(row["caption_1"])
                assert has_negation(row["caption_0"]) == (name == "scene-caption-flip")
        items = load_negbench_mcq(spec["csv"], spec["image_root"])
        assert len(items) == 24 and all(len(it.texts) == 2 and it.image.path.is_file() for it in items)
        assert {it.answer for it in items} == {0, 1}  # the reader shuffles the options
    # a manifest written before the caption twins gets them added when it is read again
    manifest_path = out / "manifest.json"
    old = json.loads(manifest_path.read_text())
    for name in CAPTION_TWINS:
        del old["tasks"][name]
    manifest_path.write_text(json.dumps(old))
    again = write_scene_benchmarks(manifest["params"]["world_dir"], out, "val", 24, 0)
    assert again == manifest and json.loads(manifest_path.read_text())["tasks"].keys() == manifest["tasks"].keys()
