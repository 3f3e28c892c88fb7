"""Exports of a corpus run: the interchange COCO JSON, run statistics, and a loadable parquet folder.

``negated_captions_<split>.json`` is COCO captions JSON with the paper's
``updated_caption`` field (so files of the official NegationCLIP repository and
ours are interchangeable) plus our fields: ``negated``, ``cue``, ``form``,
``position``, ``pipeline``, ``proposer``, ``verifier``, ``distractors``
(image paths relative to the JSON file's folder) and ``mcq_wrong`` (the
caption's wrong options: its affirmative flip and scope swap, see :mod:`.twins`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_json
from .jsonstream import iter_array_items
from .store import KeySet, iter_split_records

logger = logging.getLogger(__name__)

CONFIGS = {"pipeline1": ("absent-object",), "pipeline2": ("vqa-no",), "combined": ("absent-object", "vqa-no")}
LICENSE_NOTE = (
    "The scene world is CC0 1.0. Negated captions built from COCO follow the COCO annotations' license "
    "(CC BY 4.0); the images keep their Flickr terms."
)


def _annotation(rec: dict, ann_id: int) -> dict:
    return {
        "id": ann_id,
        "image_id": rec["image_id"],
        "caption_id": rec["caption_id"],
        "caption": rec["caption"],
        "updated_caption": rec["negated_caption"],
        "negated": rec["negated"],
        "cue": rec["cue"],
        "form": rec["form"],
        "position": rec["position"],
        "pipeline": rec["pipeline"],
        "proposer": rec["proposer"],
        "verifier": rec["verifier"],
        "distractors": rec["distractors"],
        **({"mcq_wrong": rec["mcq_wrong"]} if "mcq_wrong" in rec else {}),
        **({"image": rec["positive"]} if rec.get("positive") else {}),
        **({"distractor_source": rec["distractor_source"]} if rec.get("distractor_source") else {}),
    }


def export_split(
    out_dir: str | os.PathLike,
    split: str,
    image_dir: str | os.PathLike | None = None,
    source_captions: str | os.PathLike | None = None,
) -> dict:
    """Write ``<out_dir>/negated_captions_<split>.json`` from the split's shards; returns its counts.

    Annotations are streamed to the file in shard order (the order the run
    decided them, the same after a resume), then the images used, streamed
    from the source captions file; the ids of the images used are kept in a
    temporary sqlite file, so memory does not grow with the corpus.
    """
    out_dir = Path(out_dir)
    path = out_dir / f"negated_captions_{split}.json"
    tmp = path.with_name(path.name + ".tmp")
    info = {
        "description": f"hf-negationclip negated captions ({split})",
        "version": "1.0",
        "image_dir": str(image_dir) if image_dir else None,
    }
    image_ids = KeySet(arity=1)
    n = with_pairs = n_images = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write('{"info": ' + json.dumps(info) + ', "licenses": [], "annotations": [')
            for rec in iter_split_records(out_dir, split):
                if rec["status"] != "accepted":
                    continue
                n += 1
                fh.write((",\n" if n > 1 else "\n") + json.dumps(_annotation(rec, n)))
                image_ids.add((rec["image_id"],))
                with_pairs += bool(rec["distractors"])
            fh.write('\n], "images": [')
            for img in _image_records(out_dir, split, image_ids, source_captions):
                fh.write((", " if n_images else "") + json.dumps(img))
                n_images += 1
            fh.write("]}\n")
    finally:
        image_ids.close()
    os.replace(tmp, path)
    logger.info("wrote %d negated captions to %s", n, path)
    return {"file": path.name, "captions": n, "images": n_images, "with_distractors": with_pairs}


def _image_records(out_dir: Path, split: str, ids: KeySet, source_captions) -> Iterator[dict]:
    """``{id, file_name, height, width}`` of the images, streamed from the run's source captions file."""
    if source_captions is None:
        config = json.loads((out_dir / "corpus_config.json").read_text())
        source_captions = Path(config["coco_root"] or config["world_dir"]) / "annotations" / f"captions_{split}.json"
    for _, img in iter_array_items(source_captions, ("images",), "COCO captions JSON"):
        if (img["id"],) in ids:
            yield {k: img[k] for k in ("id", "file_name", "height", "width") if k in img}


def write_stats(out_dir: Path, stats, summary: dict) -> None:
    """``corpus_stats.json`` (every count) and ``corpus_stats.png`` (form and position histograms)."""
    report = {
        **summary,
        "accepted": stats.accepted,
        "rejected": stats.rejected,
        "forms": stats.grouped("form"),
        "positions": stats.grouped("position"),
        "kinds": stats.grouped("kind"),
        "text_twins": stats.grouped("twins"),
    }
    (out_dir / "corpus_stats.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    if report["forms"]:
        histogram_png(
            out_dir / "corpus_stats.png", {"negation form": report["forms"], "cue position": report["positions"]}
        )


def histogram_png(path: Path, panels: dict[str, dict[str, int]]) -> None:
    """Bar charts side by side, one per panel (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, counts) in zip(axes[0], panels.items()):
        names = list(counts)
        ax.bar(range(len(names)), [counts[n] for n in names], color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel("captions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_interchange(path: str | os.PathLike) -> list[dict]:
    """The annotations of a ``negated_captions_<split>.json`` (ours or the paper's), image file names attached."""
    data = read_json(path)
    files = {img["id"]: img["file_name"] for img in data["images"]}
    return [{**ann, "file_name": files.get(ann["image_id"])} for ann in data["annotations"]]


def form_position_histogram(annotations) -> dict[str, dict[str, int]]:
    """Counts of ``form`` and ``position`` over interchange annotations."""
    return {
        "forms": dict(Counter(a.get("form") for a in annotations).most_common()),
        "positions": dict(Counter(a.get("position") for a in annotations).most_common()),
        "cues": dict(Counter(a.get("cue") for a in annotations).most_common()),
    }


# --------------------------------------------------------------------------- parquet folder (its card: apps.cards)


@dataclass
class ExportCorpusConfig:
    """Export a corpus run as parquet (images embedded) + a dataset card: ``load_dataset(folder, "combined")``."""

    corpus_dir: str = field(default="runs/corpus", metadata={"help": "output folder of `hf-negationclip corpus`"})
    output_dir: str = field(default="runs/corpus_dataset", metadata={"help": "where the dataset folder goes"})
    image_dir: str | None = field(
        default=None, metadata={"help": "source images (default: recorded in the corpus JSON)"}
    )
    license: str = field(default="cc0-1.0", metadata={"help": "license id for the card (COCO-derived data: cc-by-4.0)"})
    rows_per_file: int = field(default=2000, metadata={"help": "rows per parquet file (bounds memory)"})


def corpus_features():
    """The dataset's features: the image, both captions, what is negated and how, and the distractor images."""
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features(
        {
            "image": Image(),
            "image_id": Value("int64"),
            "caption_id": Value("int64"),
            "caption": text,
            "negated_caption": text,
            "negated": text,
            "cue": text,
            "form": text,
            "position": text,
            "pipeline": text,
            "proposer": text,
            "verifier": text,
            "distractors": List(Image()),
            "mcq_wrong": List(text),
        }
    )


def corpus_splits(corpus_dir: str | os.PathLike) -> list[str]:
    names = sorted(p.name[len("negated_captions_") : -5] for p in Path(corpus_dir).glob("negated_captions_*.json"))
    if not names:
        raise FileNotFoundError(f"no negated_captions_<split>.json in {corpus_dir}: run `hf-negationclip corpus` first")
    return names


def iter_corpus_rows(
    corpus_dir: str | os.PathLike, split: str, pipelines: Sequence[str], image_dir: str | os.PathLike | None = None
) -> Iterator[dict]:
    """Rows of one split for the given pipelines, images as absolute file paths (``Image()`` reads them)."""
    corpus_dir = Path(corpus_dir)
    data = read_json(corpus_dir / f"negated_captions_{split}.json")
    image_dir = Path(image_dir or (data.get("info") or {}).get("image_dir") or "")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {str(image_dir)!r} of split {split} not found: pass image_dir")
    files = {img["id"]: img["file_name"] for img in data["images"]}
    for ann in data["annotations"]:
        if ann["pipeline"] not in pipelines:
            continue
        image = (corpus_dir / ann["image"]).resolve() if ann.get("image") else image_dir / files[ann["image_id"]]
        yield {
            "image": str(image),
            "image_id": ann["image_id"],
            "caption_id": ann.get("caption_id", ann["id"]),
            "caption": ann["caption"],
            "negated_caption": ann["updated_caption"],
            "negated": ann["negated"],
            "cue": ann["cue"],
            "form": ann["form"],
            "position": ann["position"],
            "pipeline": ann["pipeline"],
            "proposer": ann["proposer"],
            "verifier": ann["verifier"],
            "distractors": [str((corpus_dir / p).resolve()) for p in ann.get("distractors", [])],
            "mcq_wrong": [t for t in ann.get("mcq_wrong") or [] if isinstance(t, str)],
        }


def _write_parquet(rows: list[dict], path: Path) -> None:
    from datasets import Dataset
    from datasets.table import embed_table_storage

    ds = Dataset.from_list(rows, features=corpus_features())
    # to_parquet alone would store file paths; embedding puts the image bytes inside the file
    ds = ds.with_format("arrow").map(embed_table_storage, batched=True, batch_size=500)
    ds.with_format(None).to_parquet(str(path))


def export_parquet(
    corpus_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    image_dir: str | None = None,
    rows_per_file: int = 2000,
) -> dict:
    """Write ``data/pipeline{1,2}/<split>-NNNNN-of-NNNNN.parquet``; returns ``{"output_dir", "splits"}`` (row counts).

    The library writes the data only; its dataset card (``README.md``, which
    ``load_dataset(folder, "combined")`` needs for the configs) is written by
    the applications: ``hf_negationclip.apps.cards.write_corpus_card(output_dir)``
    (``hf-negationclip export-corpus`` and the demo call it).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for split in corpus_splits(corpus_dir):
        for config in ("pipeline1", "pipeline2"):
            rows = list(iter_corpus_rows(corpus_dir, split, CONFIGS[config], image_dir))
            folder = out / "data" / config
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob(f"{split}-*.parquet"):
                old.unlink()
            n_files = max(1, -(-len(rows) // rows_per_file))
            for k in range(n_files):
                chunk = rows[k * rows_per_file : (k + 1) * rows_per_file]
                if chunk or k == 0:
                    _write_parquet(chunk, folder / f"{split}-{k:05d}-of-{n_files:05d}.parquet")
            counts.setdefault(split, {})[config] = len(rows)
    return {"output_dir": str(out), "splits": counts}


def corpus_card_configs(folder: str | os.PathLike) -> list[dict]:
    """The ``configs:`` of an exported corpus folder: ``combined`` (both pipelines, the default), then each pipeline."""
    folder = Path(folder)
    splits = sorted({p.name.split("-")[0] for p in folder.glob("data/pipeline*/*.parquet")})
    if not splits:
        raise FileNotFoundError(f"no data/pipeline1|2/<split>-*.parquet in {folder}: run export-corpus first")

    def path(config: str, split: str) -> str:
        return f"data/{config}/{split}-*.parquet"

    combined = [{"split": s, "path": [path("pipeline1", s), path("pipeline2", s)]} for s in splits]
    return [
        {"config_name": "combined", "default": True, "data_files": combined},
        *(
            {"config_name": c, "data_files": [{"split": s, "path": path(c, s)} for s in splits]}
            for c in CONFIGS
            if c != "combined"
        ),
    ]


def run_export_corpus(cfg: ExportCorpusConfig) -> dict:
    """``hf-negationclip export-corpus`` without its card (the CLI writes that: ``apps.cards.write_corpus_card``)."""
    return export_parquet(cfg.corpus_dir, cfg.output_dir, cfg.image_dir, cfg.rows_per_file)
