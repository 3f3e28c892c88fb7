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
        return {"dataset": "visual7w", "dataset_idx": idx, "image_file": image, "linguistic_phenomena": "existence",
                "caption": caption, "foil": foil, "answer": "0", "classes": "dog", "classes_foil": "dog", "split": "test",
                "provenance_of_foils": "", "mturk": {"foil": 0, "caption": 3 if valid else 1, "other": 0}}
    data = {"existence_visual7w_0": item(0, "v7w_1.jpg", "There are no dogs.", "There are dogs.", True),
            "existence_visual7w_1": item(1, "v7w_2.jpg", "There is a dog.", "There is no dog.", True),
            "existence_visual7w_2": item(2, "v7w_2.jpg", "There is a cat.", "There is no cat.", False),
            "existence_visual7w_3": item(3, "v7w_9.jpg", "There is a cat.", "There is no cat.", True)}
    (tmp_path / "existence.json").write_text(json.dumps(data))
    items = load_valse_existence(tmp_path / "existence.json", tmp_path / "v7w")
    assert len(items) == 2  # one invalid (mturk.caption < 2), one with a missing image
    assert [it.texts[it.answer] for it in items] == ["There are no dogs.", "There is a dog."]
    assert [it.groups["polarity"] for it in items] == ["negated-caption", "negated-foil"]
    assert items[0].groups["cue"] == "no"


def test_negbench_mcq_csv_paths_resolved_and_options_shuffled(tmp_path):
    _image(tmp_path / "coco" / "val2017" / "000000000001.jpg")
    rows = [{"image_path": "data/coco/images/val2017/000000000001.jpg", "correct_answer": 0,
             "caption_0": f"right {i}", "caption_1": "hybrid wrong", "caption_2": "positive wrong", "caption_3": "negative wrong",
             "correct_answer_template": t} for i, t in enumerate(["positive", "negative", "hybrid"] * 4)]
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
    frame = pd.DataFrame([{"filepath": "data/coco/images/val2017/000000000001.jpg",
                           "captions": str(["a dog on grass", "no cat in sight"]), "image_id": 1,
                           "positive_objects": "['dog']", "negative_objects": "['cat']"}])
    frame.to_csv(tmp_path / "COCO_val_negated_retrieval_llama3.1_rephrased.csv", index=False)
    data = load_negbench_retrieval(tmp_path / "COCO_val_negated_retrieval_llama3.1_rephrased.csv", tmp_path)
    assert data.texts == ["a dog on grass", "no cat in sight"] and data.owner == [0, 0]
    with pytest.raises(CorpusFormatError, match="not a list literal"):
        parse_list_cell("__import__('os').system('echo pwned')")


def test_ccneg_pt_foreign_paths_and_last_split(tmp_path):
    for k in range(3):
        _image(tmp_path / "imgs" / f"{k:09d}.jpg")
    data = {"image_paths": [f"/raid/authors/cc3m/training/{k:09d}.jpg" for k in range(3)],
            "annotations": [{"json": {"caption": f"a dog {k}"}, "sop_data": {"negative-prompt": f"a dog, but not {k}"}}
                            for k in range(3)]}
    torch.save(data, tmp_path / "ccneg_preprocessed.pt")
    items = load_ccneg(tmp_path / "ccneg_preprocessed.pt", tmp_path / "imgs", last=2)
    assert [it.image.path.name for it in items] == ["000000001.jpg", "000000002.jpg"]
    assert items[0].texts[items[0].answer] == "a dog 1"
    assert "a dog but not 1" in items[0].texts  # commas stripped from the negated prompt
    torch.save({"image_paths": [Path("/x")], "annotations": []}, tmp_path / "evil.pt")  # a class: not plain data
    with pytest.raises(CorpusFormatError, match="weights_only"):
        load_ccneg(tmp_path / "evil.pt", tmp_path)
