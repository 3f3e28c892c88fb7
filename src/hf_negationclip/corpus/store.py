"""Append-only sharded JSONL: one line per decided (image_id, caption_id, pipeline), accepted or rejected.

A run killed at any point (SIGKILL included) loses at most the line being
written: on reopening, a torn last line is cut off, the keys already written
are skipped, and the rest is appended. Rejections are stored too, so a resumed
run neither redoes them nor miscounts them. The keys already written are kept in
a private temporary sqlite file, not in memory, so memory does not grow with the
corpus.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

Key = tuple[int, int, str]


def shard_path(out_dir: str | os.PathLike, split: str, shard_index: int, num_shards: int) -> Path:
    return Path(out_dir) / "shards" / split / f"shard-{shard_index:05d}-of-{num_shards:05d}.jsonl"


def record_key(record: dict) -> Key:
    return (int(record["image_id"]), int(record["caption_id"]), str(record["pipeline"]))


class KeySet:
    """A set of equal-length tuples of ints and strings, kept in a private temporary sqlite file (flat memory)."""

    def __init__(self, arity: int = 3):
        self._db = sqlite3.connect("", check_same_thread=False)  # "": a temporary file, deleted on close
        cols = ", ".join(f"c{i}" for i in range(arity))
        self._db.execute(f"CREATE TABLE k ({cols}, PRIMARY KEY ({cols})) WITHOUT ROWID")
        self._add = f"INSERT OR IGNORE INTO k VALUES ({', '.join('?' * arity)})"
        self._has = f"SELECT 1 FROM k WHERE {' AND '.join(f'c{i} = ?' for i in range(arity))}"
        self._len = 0

    def add(self, key: tuple) -> bool:
        """Add ``key``; False when it was there already."""
        added = self._db.execute(self._add, key).rowcount == 1
        self._len += added
        return added

    def __contains__(self, key: tuple) -> bool:
        return self._db.execute(self._has, key).fetchone() is not None

    def __len__(self) -> int:
        return self._len

    def close(self) -> None:
        self._db.close()


def _repair(path: Path) -> None:
    """Cut a torn trailing line (a write interrupted by a kill)."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


def read_records(path: str | os.PathLike) -> Iterator[dict]:
    """Complete records of one shard file (a torn last line is ignored)."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.endswith(b"\n"):
                yield json.loads(line)


class ShardWriter:
    """Appends records to one shard file; ``done`` holds the keys already in it."""

    def __init__(self, path: str | os.PathLike, on_existing: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done = KeySet()
        if self.path.exists():
            _repair(self.path)
            for rec in read_records(self.path):
                self.done.add(record_key(rec))
                if on_existing is not None:
                    on_existing(rec)  # a resumed run counts what the killed one decided
        self._fh = open(self.path, "a", encoding="utf-8")
        self._synced, self.fsync_every = time.monotonic(), 5.0

    def write(self, records: Iterable[dict]) -> None:
        lines = []
        for rec in records:
            key = record_key(rec)
            if not self.done.add(key):
                continue
            lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        if lines:
            self._fh.write("".join(lines))
            self._fh.flush()  # in the OS after this: a killed process loses nothing
            if time.monotonic() - self._synced > self.fsync_every:
                self._sync()  # on disk too, against power loss, without paying a sync per batch

    def _sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        self._fh.flush()
        self._sync()
        self._fh.close()
        self.done.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_split_records(out_dir: str | os.PathLike, split: str) -> Iterator[dict]:
    """Every record of a split over all shard files, each key once (first occurrence wins)."""
    seen = KeySet()
    try:
        for path in sorted((Path(out_dir) / "shards" / split).glob("shard-*.jsonl")):
            for rec in read_records(path):
                if seen.add(record_key(rec)):
                    yield rec
    finally:
        seen.close()
