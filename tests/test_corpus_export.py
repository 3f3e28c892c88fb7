"""Corpus exports (parquet + card, the datasets builder), negation-stats, and COCO-format photos (retrieved pairs)."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hf_negationclip.apps import cards
from hf_negationclip.apps.cards import write_corpus_card
from hf_negationclip.apps.cli import main
from hf_negationclip.corpus import CorpusConfig, run_corpus
from hf_negationclip.corpus.export import export_parquet
from hf_negationclip.corpus.store import iter_split_records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_corpus(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("small_corpus")
    run_corpus(CorpusConfig(world_dir=str(world), output_dir=str(out), splits="val,test", show_progress=False))
    return out


def test_parquet_export_loads_offline_with_embedded_images(small_corpus, tmp_path):
    folder = tmp_path / "dataset"
    export_parquet(small_corpus, folder, rows_per_file=150)
    assert not (folder / "README.md").exists()  # the library writes data; the card is the applications' job
    write_corpus_card(folder)
    expected = {
        s: len(json.loads((small_corpus / f"negated_captions_{s}.json").read_text())["annotations"])
        for s in ("val", "test")
    }
    ds = datasets.load_dataset(str(folder), "combined", cache_dir=str(tmp_path / "cache"))
    assert {s: ds[s].num_rows for s in ds} == expected
    row = next(r for r in ds["val"] if r["distractors"])
    assert isinstance(row["image"], Image.Image) and isinstance(row["distractors"][0], Image.Image)
    assert row["negated_caption"] != row["caption"] and row["pipeline"] in ("absent-object", "vqa-no")
    # the wrong caption options (affirmative flip, scope swap) are a column, as in the interchange file
    anns = json.loads((small_corpus / "negated_captions_val.json").read_text())["annotations"]
    assert sorted(ds["val"]["mcq_wrong"]) == sorted(a["mcq_wrong"] for a in anns) and any(
        len(w) == 2 for w in ds["val"]["mcq_wrong"]
    )
    p1 = datasets.load_dataset(str(folder), "pipeline1", cache_dir=str(tmp_path / "cache"))
    assert set(p1["val"]["pipeline"]) == {"absent-object"} and p1["val"].num_rows < expected["val"]
    # the bytes are inside the parquet files, not paths to the source images
    table = pq.read_table(next((folder / "data" / "pipeline1").glob("val-*.parquet")))
    assert all(cell["bytes"] for cell in table.column("image").to_pylist())
    assert len(list((folder / "data" / "pipeline2").glob("val-*.parquet"))) >= 1
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: combined" in card and "## Citation" in card
    from huggingface_hub import DatasetCard

    data = DatasetCard.load(folder / "README.md").data
    assert {c["config_name"] for c in data.configs} == {"combined", "pipeline1", "pipeline2"}
    assert "| no |" in card or "| not |" in card  # the cue histogram
    assert cards.PAPER_CITATION in card  # the one citation, authors and all
    rows = {  # the configs table: row counts per split, read off the parquet files
        (c, s): sum(pq.ParquetFile(f).metadata.num_rows for f in (folder / "data" / c).glob(f"{s}-*.parquet"))
        for c in ("pipeline1", "pipeline2")
        for s in ("test", "val")
    }
    assert (
        f"| `pipeline1` | absent objects: an unmentioned object, verified absent, negated into the caption | "
        f"{rows['pipeline1', 'test']} | {rows['pipeline1', 'val']} |" in card
    )
    total = {s: rows["pipeline1", s] + rows["pipeline2", s] for s in ("test", "val")}
    assert (
        f"| `combined` | both pipelines | {total['test']} | {total['val']} |" in card
        and total["val"] == expected["val"]
    )


def test_export_corpus_cli_writes_the_card_and_push_dataset_stages_it(small_corpus, tmp_path, fake_hub, capsys):
    folder = tmp_path / "exported"
    args = ["export-corpus", "--corpus_dir", str(small_corpus), "--output_dir", str(folder), "--license", "cc-by-4.0"]
    assert main(args) == 0
    meta = _card_meta(folder)
    assert meta["license"] == "cc-by-4.0" and meta["configs"][0]["config_name"] == "combined"
    assert meta["configs"][0]["data_files"][0]["path"] == [
        "data/pipeline1/test-*.parquet",
        "data/pipeline2/test-*.parquet",
    ]
    stage = tmp_path / "stage"
    assert (
        main(
            ["push-dataset", str(folder), "--repo_id", "org/negation-captions", "--dry_run", "--stage_dir", str(stage)]
        )
        == 0
    )
    assert (stage / "README.md").read_text() == (folder / "README.md").read_text()
    assert sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*.parquet")) == sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")
    )
    assert fake_hub.requests == []


def _card_meta(folder: Path) -> dict:
    from huggingface_hub import DatasetCard

    return DatasetCard.load(folder / "README.md").data.to_dict()


def test_builder_reads_the_corpus_folder(small_corpus, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "negation_captions", REPO / "dataset_builders/negation_captions/negation_captions.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "negation_captions", module)  # datasets re-imports the builder's module by name
    spec.loader.exec_module(module)
    builder = module.NegationCaptions(config_name="pipeline2", data_dir=str(small_corpus), cache_dir=str(tmp_path))
    builder.download_and_prepare()
    ds = builder.as_dataset()
    p2 = [
        a
        for a in json.loads((small_corpus / "negated_captions_val.json").read_text())["annotations"]
        if a["pipeline"] == "vqa-no"
    ]
    assert ds["val"].num_rows == len(p2) > 0
    assert isinstance(ds["val"][0]["image"], Image.Image)
    with pytest.raises(FileNotFoundError):
        module.NegationCaptions(
            config_name="combined", data_dir=str(tmp_path / "nope"), cache_dir=str(tmp_path)
        ).download_and_prepare()


def test_negation_stats_on_json_and_parquet(world, small_corpus, tmp_path, capsys, monkeypatch, check_png):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # the Hub-id branch must fail fast, not time out
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "stats"
    assert (
        main(["negation-stats", "--source", str(world / "annotations" / "captions_val.json"), "--output_dir", str(out)])
        == 0
    )
    stats = json.loads((out / "negation_stats.json").read_text())
    assert stats["captions"] == 100 and stats["with_negation"] == 0  # the world's captions never negate
    assert (
        main(
            [
                "negation-stats",
                "--source",
                str(small_corpus / "negated_captions_val.json"),
                "--field_name",
                "updated_caption",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    stats = json.loads((out / "negation_stats.json").read_text())
    assert stats["fraction"] == 1.0 and len(stats["by_cue"]) >= 8
    check_png(out / "negation_stats.png", height=400, width=600, colours=["#4c72b0"])  # one panel of bars
    folder = tmp_path / "dataset"
    export_parquet(small_corpus, folder)
    assert main(["negation-stats", "--source", str(folder), "--field_name", "caption", "--output_dir", str(out)]) == 0
    assert json.loads((out / "negation_stats.json").read_text())["with_negation"] == 0
    assert main(["negation-stats", "--source", "no-such-org/no-such-dataset", "--output_dir", str(out)]) == 2
    assert "error:" in capsys.readouterr().err


# --------------------------------------------------------------------------- COCO-format photos

CATEGORIES = ["person", "dog", "cat", "car", "bicycle", "umbrella"]
WORDS = {"person": "man", "dog": "dog", "cat": "cat", "car": "car", "bicycle": "bike", "umbrella": "umbrella"}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """A small COCO 2014 layout: photos of no renderer, real category names, VQA with 'no' answers."""
    root = tmp_path_factory.mktemp("coco")
    (root / "train2014").mkdir()
    (root / "annotations").mkdir()
    (root / "vqa").mkdir()
    rng = np.random.default_rng(0)
    images, instances, captions, questions, answers = [], [], [], [], []
    for k in range(1, 25):
        name = f"COCO_train2014_{k:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "train2014" / name)
        images.append({"id": k, "file_name": name, "height": 24, "width": 32})
        cats = sorted(rng.choice(len(CATEGORIES), size=int(rng.integers(2, 4)), replace=False))
        for c in cats:
            instances.append(
                {
                    "id": len(instances) + 1,
                    "image_id": k,
                    "category_id": int(c) + 1,
                    "bbox": [1.0, 2.0, 5.0, 6.0],
                    "area": 30.0,
                    "iscrowd": 0,
                    "segmentation": [[1, 2, 6, 2, 6, 8]],
                }
            )
        names = [WORDS[CATEGORIES[c]] for c in cats]
        for text in (
            f"a {names[0]} next to a {names[1]} on the street",
            f"A {names[0]} in a park.",
            f"a photo of a {names[1]}",
        ):
            captions.append({"id": len(captions) + 1, "image_id": k, "caption": text})
        absent = next(c for c in CATEGORIES if CATEGORIES.index(c) not in cats)
        for q in (f"Is there a {absent} in the picture?", f"Is the {names[0]} wearing a hat?"):
            questions.append({"image_id": k, "question": q, "question_id": len(questions) + 1})
            answers.append(
                {
                    "question_id": len(answers) + 1,
                    "image_id": k,
                    "question_type": "is the",
                    "answer_type": "yes/no",
                    "multiple_choice_answer": "no",
                    "answers": [{"answer": "no", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)],
                }
            )
    head = {"info": {}, "licenses": []}
    (root / "annotations" / "captions_train2014.json").write_text(
        json.dumps({**head, "images": images, "annotations": captions})
    )
    (root / "annotations" / "instances_train2014.json").write_text(
        json.dumps(
            {
                **head,
                "images": images,
                "annotations": instances,
                "categories": [{"id": i + 1, "name": c, "supercategory": "x"} for i, c in enumerate(CATEGORIES)],
            }
        )
    )
    (root / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(json.dumps({"questions": questions}))
    (root / "vqa" / "v2_mscoco_train2014_annotations.json").write_text(json.dumps({"annotations": answers}))
    return root


def test_coco_photos_get_retrieved_minimal_pairs(coco_root, tmp_path):
    run_corpus(
        CorpusConfig(coco_root=str(coco_root), output_dir=str(tmp_path), splits="train2014", show_progress=False)
    )
    inst = json.loads((coco_root / "annotations" / "instances_train2014.json").read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    cats: dict = {}
    for ann in inst["annotations"]:
        cats.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
    by_file = {img["file_name"]: img["id"] for img in inst["images"]}
    records = [r for r in iter_split_records(tmp_path, "train2014") if r["status"] == "accepted"]
    assert {r["pipeline"] for r in records} == {"absent-object", "vqa-no"}
    synonyms = {v: k for k, v in WORDS.items()}
    paired = 0
    for rec in records:
        target = rec["target"]
        if target["kind"] == "object":
            assert target["category"] not in cats[rec["image_id"]], rec  # never negates something in the image
        mentioned = {synonyms[w] for w in rec["caption"].lower().rstrip(".").split() if w in synonyms}
        for rel in rec["distractors"]:
            path = (tmp_path / rel).resolve()
            assert not os.path.isabs(rel) and path.is_file()
            other = cats[by_file[path.name]]
            assert target["category"] in other and mentioned <= other and by_file[path.name] != rec["image_id"]
            paired += 1
    assert paired > 5
    hat = [r for r in records if r["question"] and "hat" in r["question"]]
    assert hat and all(
        "not wearing a hat" in r["negated_caption"]
        or "isn't wearing a hat" in r["negated_caption"]
        or "not, wearing" not in r["negated_caption"]
        for r in hat
    )
    data = json.loads((tmp_path / "negated_captions_train2014.json").read_text())
    assert data["images"][0]["file_name"].startswith("COCO_train2014_")


def test_coco_distractors_fall_back_to_clip_neighbours(coco_root, tiny_checkpoints, tmp_path):
    import torch

    from hf_negationclip.modeling import NegationCLIPModel, feature_tensor, load_processor

    folder = tiny_checkpoints["clip-a"]
    base = dict(coco_root=str(coco_root), splits="train2014", show_progress=False)
    run_corpus(CorpusConfig(output_dir=str(tmp_path / "plain"), **base))
    run_corpus(CorpusConfig(output_dir=str(tmp_path / "clip"), distractor_clip_model=str(folder), **base))
    key = lambda r: (r["image_id"], r["caption_id"], r["pipeline"])  # noqa: E731
    plain = {key(r): r for r in iter_split_records(tmp_path / "plain", "train2014") if r["status"] == "accepted"}
    clip = {key(r): r for r in iter_split_records(tmp_path / "clip", "train2014") if r["status"] == "accepted"}
    assert plain.keys() == clip.keys()
    inst = json.loads((coco_root / "annotations" / "instances_train2014.json").read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    holders: dict = {}
    for ann in inst["annotations"]:
        holders.setdefault(names[ann["category_id"]], set()).add(ann["image_id"])
    files = {img["id"]: coco_root / "train2014" / img["file_name"] for img in inst["images"]}
    ids = sorted(files)
    model, processor = NegationCLIPModel.from_pretrained(folder).eval(), load_processor(folder)
    with torch.no_grad():
        pixels = processor(images=[Image.open(files[i]).convert("RGB") for i in ids], return_tensors="pt")[
            "pixel_values"
        ]
        emb = torch.nn.functional.normalize(feature_tensor(model.get_image_features(pixel_values=pixels)), dim=-1)
    by_file = {p.name: i for i, p in files.items()}
    fallback = 0
    for k, rec in clip.items():
        if plain[k]["distractors"]:  # annotations found one: the same as without the flag
            assert rec["distractors"] == plain[k]["distractors"] and rec["distractor_source"] == "annotations"
        elif rec["distractors"]:
            assert rec["distractor_source"] == "clip-neighbour" and rec["distractor_note"] is None
            candidates = sorted(holders[rec["target"]["category"]] - {rec["image_id"]})
            sims = [float(emb[ids.index(c)] @ emb[ids.index(rec["image_id"])]) for c in candidates]
            assert by_file[Path(rec["distractors"][0]).name] == candidates[int(np.argmax(sims))]
            fallback += 1
        else:
            assert rec["distractor_source"] is None
    assert fallback >= 3
    exported = json.loads((tmp_path / "clip" / "negated_captions_train2014.json").read_text())["annotations"]
    assert sum(a.get("distractor_source") == "clip-neighbour" for a in exported) == fallback
    cached = tmp_path / "clip" / "clip_embeddings" / "train2014.npy"
    assert np.allclose(np.load(cached), emb.numpy(), atol=1e-5)
    stamp = cached.stat().st_mtime_ns  # a resumed run reuses the embeddings
    shard = next((tmp_path / "clip" / "shards" / "train2014").glob("*.jsonl"))
    before = shard.read_bytes()
    shard.unlink()
    run_corpus(CorpusConfig(output_dir=str(tmp_path / "clip"), distractor_clip_model=str(folder), **base))
    assert cached.stat().st_mtime_ns == stamp and shard.read_bytes() == before
