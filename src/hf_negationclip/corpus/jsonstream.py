"""Streaming reads of large JSON files (COCO instances, VQAv2): one array item at a time, memory flat in file size.

Built on ``ijson`` (its C backend when installed). A malformed file raises
:class:`~hf_negationclip.corpus.FormatError` naming the file, as
``read_json`` does for files read whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import ijson

from ..io import FormatError


def iter_array_items(path: str | os.PathLike, arrays: Sequence[str], what: str) -> Iterator[tuple[str, object]]:
    """``(array name, item)`` for every item of the top-level arrays ``arrays``: one array after the other, each
    in file order (one parsing pass per array, in C).

    Raises ``FormatError`` when the file is not JSON, not an object, or
    lacks one of ``arrays`` (``what`` names the expected format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    empty = []
    try:
        for name in arrays:
            count = 0
            with open(path, "rb") as fh:
                for item in ijson.items(fh, f"{name}.item", use_float=True):
                    count += 1
                    yield name, item
            if not count:
                empty.append(name)
        if empty:
            _check_arrays(path, arrays, empty, what)
    except ijson.JSONError as err:
        first_line = (str(err).strip().splitlines() or ["parse error"])[0]  # yajl adds a multi-line pointer
        raise FormatError(f"{path} is not valid JSON ({first_line.strip()})") from err


def _check_arrays(path: Path, arrays: Sequence[str], empty: Sequence[str], what: str) -> None:
    """An array that yielded nothing must still be there, empty (rare, so a slower event-by-event pass)."""
    with open(path, "rb") as fh:
        events = ijson.parse(fh)
        first = next(events, None)
        if first is None or first[1] != "start_map":
            raise FormatError(f"{path} is not {what}: expected an object with {' and '.join(map(repr, arrays))} lists")
        seen = {prefix for prefix, event, _ in events if event == "start_array" and prefix in empty}
    missing = [name for name in empty if name not in seen]
    if missing:
        raise FormatError(f"{path} is not {what}: no {' or '.join(map(repr, missing))} list")
