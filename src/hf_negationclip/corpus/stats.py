"""How often captions negate, by cue: the paper's corpus analysis (about 0.7% of LAION-400M captions)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..io import FormatError, read_json
from .captions import negation_cues, negation_position

logger = logging.getLogger(__name__)


@dataclass
class NegationStatsConfig:
    """Count negation cues in a caption collection: COCO captions JSON, a parquet folder/file, or a Hub dataset id."""

    source: str = field(
        default="runs/world/annotations/captions_train.json",
        metadata={"help": "COCO captions JSON, parquet file or folder, or a Hub dataset id"},
    )
    field_name: str = field(default="caption", metadata={"help": "caption field / column (e.g. updated_caption)"})
    split: str = field(default="train", metadata={"help": "split of a Hub dataset"})
    output_dir: str = field(default="runs/negation_stats", metadata={"help": "where stats.json and the bar chart go"})
    max_captions: int = field(default=0, metadata={"help": "stop after this many captions (0 = all)"})


def iter_captions(source: str, field_name: str = "caption", split: str = "train") -> Iterator[str]:
    """Captions of a COCO JSON, a parquet file/folder (streamed by row group) or a Hub dataset (streamed)."""
    path = Path(source)
    if path.suffix == ".json" or (path.is_file() and path.suffix != ".parquet"):
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise FormatError(f"{path} is not COCO captions JSON (no 'annotations' list)")
        for ann in data["annotations"]:
            if isinstance(ann, dict) and isinstance(ann.get(field_name), str):
                yield ann[field_name]
        return
    if path.exists():
        import pyarrow.parquet as pq

        files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no parquet files under {path}")
        for file in files:
            pf = pq.ParquetFile(file)
            if field_name not in pf.schema_arrow.names:
                raise KeyError(f"{file} has no column {field_name!r} (columns: {pf.schema_arrow.names})")
            for batch in pf.iter_batches(columns=[field_name], batch_size=4096):
                yield from (c for c in batch.column(0).to_pylist() if isinstance(c, str))
        return
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split, streaming=True)
    except Exception as err:  # the Hub raises many types (offline, missing repo, gated): one clear message
        raise OSError(f"{source!r} is neither a local file/folder nor a loadable Hub dataset: {err}") from err
    for row in ds:
        if isinstance(row.get(field_name), str):
            yield row[field_name]


def negation_stats(captions: Iterable[str], max_captions: int = 0, show_progress: bool = True) -> dict:
    """Share of captions with a negation cue, counts by cue and by position."""
    total, negated, cues, positions = 0, 0, Counter(), Counter()
    for caption in tqdm(captions, desc="counting cues", unit="cap", disable=not show_progress):
        total += 1
        found = negation_cues(caption)
        if found:
            negated += 1
            cues.update(set(found))
            positions[negation_position(caption)] += 1
        if max_captions and total >= max_captions:
            break
    return {
        "captions": total,
        "with_negation": negated,
        "fraction": negated / total if total else 0.0,
        "by_cue": dict(cues.most_common()),
        "by_position": dict(positions.most_common()),
    }


def run_negation_stats(cfg: NegationStatsConfig) -> dict:
    from .export import histogram_png

    stats = negation_stats(iter_captions(cfg.source, cfg.field_name, cfg.split), cfg.max_captions)
    if not stats["captions"]:
        raise ValueError(f"{cfg.source}: no '{cfg.field_name}' captions found")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "negation_stats.json").write_text(json.dumps({"source": cfg.source, **stats}, indent=2))
    histogram_png(
        out / "negation_stats.png", {f"captions with each cue (of {stats['captions']})": stats["by_cue"] or {"none": 0}}
    )
    print(
        f"{stats['with_negation']} of {stats['captions']} captions ({stats['fraction']:.2%}) contain a negation cue; "
        f"by cue: {stats['by_cue']}. Wrote {out / 'negation_stats.json'} and {out / 'negation_stats.png'}"
    )
    return stats
