"""Streaming reads of large JSON files (COCO instances, VQAv2): one array item at a time, memory flat in file size.

Built on ``ijson`` (its C backend when installed). A malformed file raises
:class:`~hf_negationclip.corpus.CorpusFormatError` naming the file, as
``read_json`` does for files read whole.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import ijson

from .captions import CorpusFormatError

_STARTS, _ENDS = ("start_map", "start_array"), ("end_map", "end_array")


def iter_array_items(path: str | os.PathLike, arrays: Sequence[str], what: str,
                     drop: Sequence[str] = ()) -> Iterator[tuple[str, object]]:
    """``(array name, item)`` for every item of the top-level arrays ``arrays``, in file order.

    ``drop`` names item fields never built (COCO's segmentation polygons).
    Raises ``CorpusFormatError`` when the file is not JSON, not an object, or
    lacks one of ``arrays`` (``what`` names the expected format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    items = {f"{name}.item": name for name in arrays}
    dropped = tuple(f"{name}.item.{field}" for name in arrays for field in drop)
    seen: set[str] = set()
    try:
        with open(path, "rb") as fh:
            events = ijson.parse(fh, use_float=True)
            first = next(events, None)
            if first is None or first[1] != "start_map":
                raise CorpusFormatError(f"{path} is not {what}: expected an object with {' and '.join(map(repr, arrays))} lists")
            builder, depth = None, 0
            for prefix, event, value in events:
                if builder is not None:
                    if dropped and prefix.startswith(dropped):
                        continue
                    builder.event(event, value)
                    depth += (event in _STARTS) - (event in _ENDS)
                    if depth == 0:
                        yield name, builder.value
                        builder = None
                elif prefix in items:
                    name = items[prefix]
                    if event in _STARTS:
                        builder, depth = ijson.ObjectBuilder(), 1
                        builder.event(event, value)
                    else:
                        yield name, value
                elif event == "start_array" and prefix in arrays:
                    seen.add(prefix)
    except ijson.JSONError as err:
        first_line = (str(err).strip().splitlines() or ["parse error"])[0]  # yajl adds a multi-line pointer
        raise CorpusFormatError(f"{path} is not valid JSON ({first_line.strip()})") from err
    missing = [name for name in arrays if name not in seen]
    if missing:
        raise CorpusFormatError(f"{path} is not {what}: no {' or '.join(map(repr, missing))} list")
