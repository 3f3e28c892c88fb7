"""The inputs of a corpus run, one split at a time: COCO captions, optional instances, optional VQAv2.

The scene world and a real COCO download share one layout, so one reader does
both: ``<root>/annotations/captions_<split>.json``, ``instances_<split>.json``,
``<root>/vqa/v2_OpenEnded_mscoco_<split>_questions.json`` +
``v2_mscoco_<split>_annotations.json``, images in ``<root>/images/<split>`` (the
world) or ``<root>/<split>`` (COCO's ``train2014/``).

The files are stream-parsed (``ijson``) into one sqlite file per split, and a
run looks captions, objects and questions up per image there, so its memory
does not grow with the number of images. The index is kept next to the run's
outputs and rebuilt when an input file changes (size or modification time).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..io import FormatError
from .captions import CaptionRecord
from .jsonstream import iter_array_items
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)

#: the image fields a run needs (COCO images carry more: licenses, URLs, dates)
_IMAGE_KEYS = ("id", "file_name", "height", "width", "scene_seed", "background")
#: bump when the tables change: an index of another version is rebuilt
INDEX_VERSION = 1
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (id INTEGER PRIMARY KEY, data TEXT NOT NULL, caption_file TEXT, scene INTEGER NOT NULL,
                     in_instances INTEGER NOT NULL DEFAULT 0);
CREATE TABLE raw_captions (image_id INTEGER, annotation_id INTEGER, caption TEXT);
CREATE TABLE captions (n INTEGER PRIMARY KEY, image_id INTEGER NOT NULL, annotation_id INTEGER, caption TEXT NOT NULL);
CREATE TABLE categories (id PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE raw_objects (image_id INTEGER, category_id, data TEXT NOT NULL, has_center INTEGER NOT NULL);
CREATE TABLE objects (image_id INTEGER NOT NULL, category TEXT NOT NULL, data TEXT NOT NULL, has_center INTEGER NOT NULL);
CREATE TABLE image_categories (category TEXT NOT NULL, image_id INTEGER NOT NULL, PRIMARY KEY (category, image_id)) WITHOUT ROWID;
CREATE TABLE questions (question_id PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE no_answers (question_id, image_id INTEGER NOT NULL);
"""


def discover_splits(root: str | os.PathLike) -> list[str]:
    """Split names that have a ``captions_<split>.json`` under ``<root>/annotations``."""
    names = sorted(
        p.name[len("captions_") : -len(".json")] for p in (Path(root) / "annotations").glob("captions_*.json")
    )
    if not names:
        raise FileNotFoundError(f"no annotations/captions_<split>.json under {root}")
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(names, key=lambda s: (order.get(re.sub(r"\d+", "", s), 3), s))


def image_dir_for(root: str | os.PathLike, split: str) -> Path:
    root = Path(root)
    for candidate in (root / "images" / split, root / split):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no image folder for split {split!r}: looked for {root / 'images' / split} and {root / split}"
    )


def split_files(root: Path, split: str) -> dict[str, Path]:
    """The input files of one split (the optional ones may not exist)."""
    return {
        "captions": root / "annotations" / f"captions_{split}.json",
        "instances": root / "annotations" / f"instances_{split}.json",
        "questions": root / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json",
        "answers": root / "vqa" / f"v2_mscoco_{split}_annotations.json",
    }


class SplitSource:
    """Everything a corpus run reads about one split, looked up per image in the split's index.

    Objects are ``{category, attributes, center, bbox}`` dicts; ``has_objects``
    says whether an instances file was read, ``has_scenes`` whether the images
    are re-renderable scene-world images (``scene_seed`` + object centres).
    """

    def __init__(self, name: str, image_dir: Path, index_path: Path):
        self.name, self.image_dir, self.index_path = name, Path(image_dir), Path(index_path)
        self._db = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, check_same_thread=False)
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        self.has_objects = bool(json.loads(meta["has_instances"]))
        self.has_scenes = bool(json.loads(meta["has_scenes"]))
        self.vocabulary = (
            Vocabulary(json.loads(meta["categories"]), json.loads(meta["attribute_values"]))
            if self.has_objects
            else None
        )
        self.category_sizes = dict(
            self._db.execute("SELECT category, COUNT(*) FROM image_categories GROUP BY category")
        )
        self.objects = functools.lru_cache(maxsize=1024)(self._objects)

    def close(self) -> None:
        self._db.close()

    def captions(
        self, shard_index: int = 0, num_shards: int = 1, max_images: int = 0, captions_per_image: int = 0
    ) -> Iterator[tuple[int, CaptionRecord]]:
        """``(n, record)`` in caption-file order (``n`` counts every usable caption of the split) for the images
        of one shard: its first ``max_images`` images (by first caption), their first ``captions_per_image``."""
        rows = self._db.execute(
            """WITH shard AS (SELECT n, image_id FROM captions WHERE ((image_id % :k) + :k) % :k = :i),
                    firsts AS (SELECT image_id FROM shard GROUP BY image_id ORDER BY MIN(n) LIMIT :lim),
                    ranked AS (SELECT n, ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY n) AS r
                               FROM shard WHERE image_id IN firsts)
               SELECT c.n, c.image_id, c.annotation_id, c.caption, i.caption_file
               FROM ranked JOIN captions c USING (n) JOIN images i ON i.id = c.image_id
               WHERE ranked.r <= :per ORDER BY c.n""",
            {"k": num_shards, "i": shard_index, "lim": max_images or -1, "per": captions_per_image or 2**62},
        )
        for n, image_id, annotation_id, caption, file_name in rows:
            yield n, CaptionRecord(image_id, self.image_dir / file_name, caption, annotation_id)

    def n_images(self, shard_index: int = 0, num_shards: int = 1) -> int:
        return self._db.execute(
            "SELECT COUNT(DISTINCT image_id) FROM captions WHERE ((image_id % :k) + :k) % :k = :i",
            {"k": num_shards, "i": shard_index},
        ).fetchone()[0]

    def image(self, image_id: int) -> dict:
        """The image's record (``id, file_name, height, width`` and the world's ``scene_seed, background``)."""
        row = self._db.execute("SELECT data FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise KeyError(f"no image {image_id} in split {self.name}")
        return json.loads(row[0])

    def image_ids(self) -> Iterator[int]:
        """Every image id of the split (captions and instances files), ascending."""
        return (row[0] for row in self._db.execute("SELECT id FROM images ORDER BY id"))

    def _objects(self, image_id: int) -> list[dict] | None:
        """The image's annotated objects; None without instances or for an image the instances file lacks."""
        if not self.has_objects:
            return None
        if self._db.execute("SELECT in_instances FROM images WHERE id = ?", (image_id,)).fetchone() != (1,):
            return None
        return [
            {"category": cat, **json.loads(data)}
            for cat, data in self._db.execute(
                "SELECT category, data FROM objects WHERE image_id = ? ORDER BY rowid", (image_id,)
            )
        ]

    def no_questions(self, image_id: int) -> list[str]:
        """VQAv2 questions about the image whose majority answer is "no", in the answers file's order."""
        return [
            q
            for (q,) in self._db.execute(
                "SELECT q.text FROM no_answers a JOIN questions q USING (question_id) WHERE a.image_id = ? ORDER BY a.rowid",
                (image_id,),
            )
        ]

    def cooccurrence(self) -> dict[str, dict[str, int]]:
        """How often two categories share an image: the rules backend's notion of "plausible"."""
        table: dict[str, dict[str, int]] = {}
        for a, b, count in self._db.execute(
            """SELECT x.category, y.category, COUNT(*) FROM image_categories x JOIN image_categories y
                   ON x.image_id = y.image_id AND x.category != y.category GROUP BY x.category, y.category"""
        ):
            table.setdefault(a, {})[b] = count
        return table

    def images_with(self, categories: Sequence[str], exclude: int | None = None) -> list[int]:
        """Ids (ascending) of the annotated images holding every one of ``categories``, ``exclude`` left out."""
        cats = sorted(set(categories), key=lambda c: self.category_sizes.get(c, 0))
        if not cats or any(c not in self.category_sizes for c in cats):
            return []
        sql = "SELECT image_id FROM image_categories a WHERE category = ? AND image_id IS NOT ?" + "".join(
            " AND EXISTS (SELECT 1 FROM image_categories WHERE category = ? AND image_id = a.image_id)"
            for _ in cats[1:]
        )
        return [i for (i,) in self._db.execute(sql + " ORDER BY image_id", (cats[0], exclude, *cats[1:]))]


def load_split(
    root: str | os.PathLike, split: str, with_vqa: bool = True, index_dir: str | os.PathLike | None = None
) -> SplitSource:
    """Read one split of a scene world or COCO root into its index (kept in ``index_dir``, or a temporary folder)."""
    root = Path(root)
    image_dir = image_dir_for(root, split)
    files = split_files(root, split)
    if not files["captions"].is_file():
        raise FileNotFoundError(f"no such file: {files['captions']}")
    if not files["instances"].is_file():
        logger.warning("%s missing: no annotation verifier, no distractors for split %s", files["instances"], split)
    if index_dir is None:
        index_dir = tempfile.mkdtemp(prefix="corpus_index_")
        cleanup = True
    else:
        cleanup = False
    path = Path(index_dir) / f"{split}.sqlite"
    fingerprint = json.dumps([INDEX_VERSION, bool(with_vqa), [_stamp(p) for p in files.values()]])
    if _fingerprint(path) != fingerprint:
        build_index(files, path, with_vqa, fingerprint)
    src = SplitSource(split, image_dir, path)
    if cleanup:
        weakref.finalize(src, shutil.rmtree, index_dir, True)
    return src


def _stamp(path: Path) -> list | None:
    if not path.is_file():
        return None
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _fingerprint(path: Path) -> str | None:
    if not path.is_file():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
    except sqlite3.DatabaseError:  # a torn or foreign file: rebuilt
        return None
    finally:
        db.close()
    return row[0] if row else None


def build_index(files: dict[str, Path], path: Path, with_vqa: bool, fingerprint: str) -> None:
    """Stream the split's files into a fresh sqlite index at ``path`` (written aside, then moved into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + _SCHEMA)
        meta = {
            "fingerprint": fingerprint,
            "has_instances": "false",
            "has_scenes": "false",
            "categories": "[]",
            "attribute_values": "{}",
        }
        _index_captions(db, files["captions"])
        if files["instances"].is_file():
            meta.update(_index_instances(db, files["instances"]), has_instances="true")
        if with_vqa and files["questions"].is_file() and files["answers"].is_file():
            _index_questions(db, files["questions"], files["answers"])
        db.executescript("""
            CREATE INDEX captions_image ON captions (image_id);
            CREATE INDEX objects_image ON objects (image_id);
            CREATE INDEX no_answers_image ON no_answers (image_id);
            DROP TABLE raw_captions; DROP TABLE raw_objects;""")
        if meta["has_instances"] == "true":
            scenes = db.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM images WHERE scene = 0) AND "
                "NOT EXISTS (SELECT 1 FROM objects WHERE has_center = 0)"
            ).fetchone()[0]
            meta["has_scenes"] = json.dumps(bool(scenes))
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        db.commit()
    finally:
        db.close()
    os.replace(tmp, path)


def _image_row(img: dict, caption_file: str | None, path: Path) -> tuple:
    if not isinstance(img.get("id"), int):
        raise FormatError(f"{path}: image without an integer 'id': {str(img)[:120]}")
    data = {k: img[k] for k in _IMAGE_KEYS if k in img}
    return img["id"], json.dumps(data), caption_file, "scene_seed" in data


def _index_captions(db: sqlite3.Connection, path: Path) -> None:
    """Caption-file images, and usable captions numbered in file order (as ``load_coco_captions`` reads them)."""
    skipped = Counter()

    def rows():
        for kind, item in iter_array_items(path, ("images", "annotations"), "COCO captions JSON"):
            if kind == "images":
                if isinstance(item, dict) and "id" in item:
                    caption_file = item["file_name"] if "file_name" in item else None
                    yield (
                        "INSERT OR REPLACE INTO images (id, data, caption_file, scene) VALUES (?, ?, ?, ?)",
                        _image_row(item, caption_file, path),
                    )
                continue
            caption = item.get("caption") if isinstance(item, dict) else None
            if not isinstance(caption, str) or not caption.strip():
                skipped["no caption"] += 1
                continue
            yield "INSERT INTO raw_captions VALUES (?, ?, ?)", (item.get("image_id"), item.get("id"), caption.strip())

    for sql, row in rows():
        db.execute(sql, row)
    db.execute("""INSERT INTO captions SELECT ROW_NUMBER() OVER (ORDER BY r.rowid) - 1, r.image_id, r.annotation_id,
                  r.caption FROM raw_captions r JOIN images i ON i.id = r.image_id AND i.caption_file IS NOT NULL
                  ORDER BY r.rowid""")
    kept = db.execute("SELECT COUNT(*) FROM captions").fetchone()[0]
    unknown = db.execute("SELECT COUNT(*) FROM raw_captions").fetchone()[0] - kept
    if unknown:
        skipped["unknown image_id"] += unknown
    if skipped:
        logger.warning("%s: skipped %d annotations (%s)", path, sum(skipped.values()), dict(skipped))
    if not kept:
        raise FormatError(f"{path} holds no usable 'caption' annotations")


def _index_instances(db: sqlite3.Connection, path: Path) -> dict[str, str]:
    """Objects per image (categories resolved after the passes: COCO lists them last) and the vocabulary."""
    categories: list[str] = []
    values: dict[str, set] = {}
    for kind, item in iter_array_items(path, ("images", "annotations", "categories"), "COCO instances JSON"):
        try:
            if kind == "images":
                _merge_image(db, item, path)
            elif kind == "categories":
                categories.append(item["name"])
                db.execute("INSERT OR REPLACE INTO categories VALUES (?, ?)", (item["id"], item["name"]))
            else:
                attributes = dict(item.get("attributes") or {})
                for key, value in attributes.items():
                    if isinstance(value, str):
                        values.setdefault(key, set()).add(value)
                obj = {"attributes": attributes, "center": item.get("center"), "bbox": item.get("bbox")}
                db.execute(
                    "INSERT INTO raw_objects VALUES (?, ?, ?, ?)",
                    (item.get("image_id"), item.get("category_id"), json.dumps(obj), bool(obj["center"])),
                )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise FormatError(f"{path}: malformed {kind} entry {str(item)[:120]} ({err!r})") from err
    db.executescript("""
        INSERT INTO objects SELECT o.image_id, c.name, o.data, o.has_center FROM raw_objects o
            JOIN categories c ON c.id = o.category_id JOIN images i ON i.id = o.image_id AND i.in_instances = 1
            ORDER BY o.rowid;
        INSERT OR IGNORE INTO image_categories SELECT category, image_id FROM objects;""")
    return {
        "categories": json.dumps(categories),
        "attribute_values": json.dumps({k: sorted(v) for k, v in sorted(values.items())}),
    }


def _merge_image(db: sqlite3.Connection, img: dict, path: Path) -> None:
    # the world keeps scene_seed/background on instance images too: add the fields the captions file lacks
    image_id, data, _, _ = _image_row(img, None, path)
    row = db.execute("SELECT data FROM images WHERE id = ?", (image_id,)).fetchone()
    merged = json.loads(row[0]) if row else {}
    merged.update({k: v for k, v in json.loads(data).items() if k not in merged})
    db.execute(
        """INSERT INTO images (id, data, scene, in_instances) VALUES (?, ?, ?, 1) ON CONFLICT (id)
                  DO UPDATE SET data = excluded.data, scene = excluded.scene, in_instances = 1""",
        (image_id, json.dumps(merged), "scene_seed" in merged),
    )


def _index_questions(db: sqlite3.Connection, q_path: Path, a_path: Path) -> None:
    """VQAv2 questions whose majority answer is "no" (the 10 answers are counted as they stream by)."""
    try:
        for _, q in iter_array_items(q_path, ("questions",), "VQAv2 questions JSON"):
            db.execute("INSERT OR REPLACE INTO questions VALUES (?, ?)", (q["question_id"], q["question"]))
        for _, ann in iter_array_items(a_path, ("annotations",), "VQAv2 annotations JSON"):
            votes = Counter(str(_answer(a)).strip().lower() for a in ann.get("answers", []))
            top = ann.get("multiple_choice_answer", "").strip().lower()
            if top == "no" and votes.get("no", 0) >= votes.get("yes", 0):
                db.execute("INSERT INTO no_answers VALUES (?, ?)", (ann["question_id"], ann["image_id"]))
    except (KeyError, TypeError, AttributeError) as err:
        raise FormatError(f"{q_path} / {a_path} are not VQAv2 question/annotation files: missing {err}") from err


def _answer(a):
    return a["answer"] if isinstance(a, dict) and "answer_id" in a and "answer" in a else a
