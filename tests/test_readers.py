import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from hf_negationclip.benchmarks import load_ccneg, load_negbench_mcq, load_valse_existence
from hf_negationclip.benchmarks.readers import load_negbench_retrieval, parse_list_cell
from hf_negationclip.corpus import CorpusFormatError


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (90, 90, 90)).save(path)
    return path


def test_valse_existence_layout_valid_items_only(tmp_path):
    _image(tmp_path / "v7w" / "v7w_1.jpg")
    _image(tmp_path / "v7w" / "v7w_2.jpg")

    def item(idx, image, caption, foil, valid):
        return {
            "dataset": "visual7w",
            "dataset_idx": idx,
            "image_file": image,
            "linguistic_phenomena": "existence",
            "caption": caption,
            "foil": foil,
            "answer": "0",
            "classes": "dog",
            "classes_foil": "dog",
            "split": "test",
            "provenance_of_foils": "",
            "mturk": {"foil": 0, "caption": 3 if valid else 1, "other": 0},
        }

    data = {
        "existence_visual7w_0": item(0, "v7w_1.jpg", "There are no dogs.", "There are dogs.", True),
        "existence_visual7w_1": item(1, "v7w_2.jpg", "There is a dog.", "There is no dog.", True),
        "existence_visual7w_2": item(2, "v7w_2.jpg", "There is a cat.", "There is no cat.", False),
        "existence_visual7w_3": item(3, "v7w_9.jpg", "There is a cat.", "There is no cat.", True),
    }
    (tmp_path / "existence.json").write_text(json.dumps(data))
    items = load_valse_existence(tmp_path / "existence.json", tmp_path / "v7w")
    assert len(items) == 2  # one invalid (mturk.caption < 2), one with a missing image
    assert [it.texts[it.answer] for it in items] == ["There are no dogs.", "There is a dog."]
    assert [it.groups["polarity"] for it in items] == ["negated-caption", "negated-foil"]
    assert items[0].groups["cue"] == "no"


def test_negbench_mcq_csv_paths_resolved_and_options_shuffled(tmp_path):
    _image(tmp_path / "coco" / "val2017" / "000000000001.jpg")
    rows = [
        {
            "image_path": "data/coco/images/val2017/000000000001.jpg",
            "correct_answer": 0,
            "caption_0": f"right {i}",
            "caption_1": "hybrid wrong",
            "caption_2": "positive wrong",
            "caption_3": "negative wrong",
            "correct_answer_template": t,
        }
        for i, t in enumerate(["positive", "negative", "hybrid"] * 4)
    ]
    rows.append({**rows[0], "image_path": "data/coco/images/val2017/missing.jpg"})
    pd.DataFrame(rows).to_csv(tmp_path / "COCO_val_mcq_llama3.1_rephrased.csv", index=False)
    items = load_negbench_mcq(tmp_path / "COCO_val_mcq_llama3.1_rephrased.csv", tmp_path / "coco")
    assert len(items) == 12
    assert all(it.texts[it.answer] == f"right {i}" for i, it in enumerate(items))
    assert len({it.answer for it in items}) > 1  # the file always says 0
    assert [it.groups["template"] for it in items[:3]] == ["affirmation", "negation", "hybrid"]
    with pytest.raises(CorpusFormatError, match="missing columns"):
        pd.DataFrame([{"x": 1}]).to_csv(tmp_path / "bad.csv", index=False)
        load_negbench_mcq(tmp_path / "bad.csv", tmp_path)


def test_negbench_retrieval_list_cells_are_literals_never_code(tmp_path):
    _image(tmp_path / "val2017" / "000000000001.jpg")
    frame = pd.DataFrame(
        [
            {
                "filepath": "data/coco/images/val2017/000000000001.jpg",
                "captions": str(["a dog on grass", "no cat in sight"]),
                "image_id": 1,
                "positive_objects": "['dog']",
                "negative_objects": "['cat']",
            }
        ]
    )
    frame.to_csv(tmp_path / "COCO_val_negated_retrieval_llama3.1_rephrased.csv", index=False)
    data = load_negbench_retrieval(tmp_path / "COCO_val_negated_retrieval_llama3.1_rephrased.csv", tmp_path)
    assert data.texts == ["a dog on grass", "no cat in sight"] and data.owner == [0, 0]
    with pytest.raises(CorpusFormatError, match="not a list literal"):
        parse_list_cell("__import__('os').system('echo pwned')")


def test_ccneg_pt_foreign_paths_and_last_split(tmp_path):
    for k in range(3):
        _image(tmp_path / "imgs" / f"{k:09d}.jpg")
    data = {
        "image_paths": [f"/raid/authors/cc3m/training/{k:09d}.jpg" for k in range(3)],
        "annotations": [
            {"json": {"caption": f"a dog {k}"}, "sop_data": {"negative-prompt": f"a dog, but not {k}"}}
            for k in range(3)
        ],
    }
    torch.save(data, tmp_path / "ccneg_preprocessed.pt")
    items = load_ccneg(tmp_path / "ccneg_preprocessed.pt", tmp_path / "imgs", last=2)
    assert [it.image.path.name for it in items] == ["000000001.jpg", "000000002.jpg"]
    assert items[0].texts[items[0].answer] == "a dog 1"
    assert "a dog but not 1" in items[0].texts  # commas stripped from the negated prompt
    torch.save({"image_paths": [Path("/x")], "annotations": []}, tmp_path / "evil.pt")  # a class: not plain data
    with pytest.raises(CorpusFormatError, match="weights_only"):
        load_ccneg(tmp_path / "evil.pt", tmp_path)


def _exported(tmp_path: Path, records: list[dict], images: list[dict]) -> Path:
    """A negated_captions_<split>.json in the exact layout corpus.export writes (its own annotation builder)."""
    from hf_negationclip.corpus.export import _annotation

    base = {
        "caption_id": 1,
        "cue": "no",
        "form": "no",
        "position": "front",
        "pipeline": "absent-object",
        "proposer": "plausible",
        "verifier": "annotations",
        "distractors": [],
    }
    anns = [_annotation({**base, **rec}, i) for i, rec in enumerate(records, 1)]
    data = {
        "info": {"description": "hf-negationclip negated captions (val)", "version": "1.0", "image_dir": None},
        "licenses": [],
        "annotations": anns,
        "images": images,
    }
    path = tmp_path / "corpus" / "negated_captions_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_ccneg_reads_our_negated_captions_json(tmp_path, caplog):
    for k in (1, 2):
        _image(tmp_path / "world" / "images" / "val" / f"{k:012d}.jpg")
    _image(tmp_path / "corpus" / "added" / "1_1.png")  # an added pair's rendered positive, relative to the JSON
    images = [{"id": k, "file_name": f"{k:012d}.jpg", "height": 32, "width": 32} for k in (1, 2, 3)]
    path = _exported(
        tmp_path,
        [
            {
                "image_id": 1,
                "caption": "a red circle.",
                "negated_caption": "no blue star here: a red circle",
                "negated": "blue star",
            },
            {
                "image_id": 2,
                "caption": "a red circle and a square",
                "negated_caption": "a red circle and a square, free of stars",
                "negated": "star",
                "cue": "free of",
                "form": "free-of",
                "position": "end",
            },
            {
                "image_id": 2,
                "caption": "a square that is not red",
                "negated_caption": "no star: a square that is not red",
                "negated": "star",
            },  # the original already negates: no honest false caption
            {
                "image_id": 3,
                "caption": "a ring",
                "negated_caption": "a ring without a star",
                "negated": "star",
            },  # no image
            {
                "image_id": 1,
                "caption": "a red circle",
                "negated_caption": "a red circle with no green ring",
                "negated": "green ring",
                "positive": "added/1_1.png",
            },
        ],
        images,
    )
    with caplog.at_level("WARNING"):
        items = load_ccneg(path, tmp_path / "world" / "images" / "val")
    assert "original caption already negated" in caplog.text and "missing image" in caplog.text
    assert len(items) == 3
    pairs = [(it.texts[it.answer], it.texts[1 - it.answer]) for it in items]
    assert pairs == [
        ("no blue star here: a red circle", "a blue star here: a red circle"),
        ("a red circle and a square, free of stars", "a red circle and a square, full of stars"),
        ("a red circle with no green ring", "a red circle with a green ring"),
    ]
    assert [it.image.path.name for it in items] == ["000000000001.jpg", "000000000002.jpg", "1_1.png"]
    assert items[1].groups == {"cue": "free of", "position": "end", "form": "free-of"}
    # the format is told by content when the extension says nothing
    renamed = path.with_name("negated_captions_val.data")
    renamed.write_bytes(path.read_bytes())
    assert load_ccneg(renamed, tmp_path / "world" / "images" / "val") == items
    plain_coco = tmp_path / "captions_val.json"
    plain_coco.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "a dog"}], "images": images}))
    with pytest.raises(CorpusFormatError, match="updated_caption"):
        load_ccneg(plain_coco, tmp_path)


@pytest.mark.parametrize(
    "negated_caption, caption, negated, expected",
    [
        (
            "there are no red stars in the scene; a ring",
            "a ring",
            "red star",
            "there are some red stars in the scene; a ring",
        ),
        ("a ring, and no star anywhere", "a ring", "star", "a ring, and a star somewhere"),
        ("a ring; there aren't any stars", "a ring", "star", "a ring; there are some stars"),
        ("not an egg, but rather a ring", "a ring", "egg", "an egg, and a ring"),
        ("a ring, but not a star, on grey", "a ring on grey", "star", "a ring, and a star, on grey"),
        ("a ring lacking any stars", "a ring", "star", "a ring with some stars"),
        ("A star is missing from this photo of a ring", "a ring", "star", "A star is present in this photo of a ring"),
        ("Nothing here is a star; a ring", "a ring", "star", "Something here is a star; a ring"),
        ("a ring, and none of the things is a star", "a ring", "star", "a ring, and one of the things is a star"),
        ("the picture doesn't contain a star: a ring", "a ring", "star", "the picture does contain a star: a ring"),
        ("a ring which isn't small", "a ring", "small", "a ring which is small"),
        ("a ring, not red, on grey", "a ring on grey", "red", "a ring, red, on grey"),
        ("a man who never smiles", "a man", None, None),  # no rule for "never": skipped, not guessed
    ],
)
def test_affirmative_counterpart_takes_out_only_the_negation(negated_caption, caption, negated, expected):
    from hf_negationclip.benchmarks.readers import affirmative_counterpart

    assert affirmative_counterpart(negated_caption, caption, negated) == expected
