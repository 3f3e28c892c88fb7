"""Reading the package's input files: JSON with clear errors, and the error every format reader raises."""

from __future__ import annotations

import json
import os
from pathlib import Path


class FormatError(ValueError):
    """An input file that is not in the format its reader expects (COCO, RefCOCOg, a benchmark file, ...)."""


def read_json(path: str | os.PathLike) -> object:
    """Parse a JSON file, turning a missing or malformed file into a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise FormatError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
