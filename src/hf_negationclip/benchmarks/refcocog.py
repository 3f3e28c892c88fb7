"""RefCOCOg as the ``refer`` API reads it, through a restricted unpickler (plain data only)."""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from ..io import FormatError, read_json


class RestrictedUnpickler(pickle.Unpickler):
    """Reads pickles of plain containers only: any class or function reference is refused.

    RefCOCOg's ``refs(umd).p`` is a list of dicts of strings and numbers, which
    needs no class look-up; a pickle that asks for one could run code, so it
    is rejected instead of loaded.
    """

    #: protocol-2 pickles written by Python 3 encode ``bytes`` through ``_codecs.encode``: data, not code
    ALLOWED = frozenset({("_codecs", "encode")})

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data pickles are allowed")


def safe_pickle_load(path: str | os.PathLike) -> object:
    """Load a pickle of plain Python data (no classes, no callables). Python 2 byte strings come back as str."""
    data = Path(path).read_bytes()
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


@dataclass
class RefCOCOg:
    """RefCOCOg as the ``refer`` API sees it: refs, and COCO images/annotations/categories by id."""

    refs: list[dict]
    images: dict[int, dict]
    annotations: dict[int, dict]
    categories: dict[int, dict]

    def split(self, name: str) -> list[dict]:
        return [ref for ref in self.refs if ref["split"] == name]

    def image_path(self, ref: dict, image_root: str | os.PathLike) -> Path:
        """Image file of a ref; names come from instances.json (``ref['file_name']`` is a crop name)."""
        return Path(image_root) / self.images[ref["image_id"]]["file_name"]


def load_refcocog(root: str | os.PathLike, split_by: str = "umd") -> RefCOCOg:
    """Read ``<root>/refcocog/refs(<split_by>).p`` (restricted unpickler) and ``instances.json``."""
    folder = Path(root) / "refcocog"
    if not folder.is_dir():
        folder = Path(root)  # accept the refcocog folder itself
    refs_path, inst_path = folder / f"refs({split_by}).p", folder / "instances.json"
    for path in (refs_path, inst_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"RefCOCOg file missing: {path} (expected the layout <root>/refcocog/refs({split_by}).p)"
            )
    try:
        refs = safe_pickle_load(refs_path)
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise FormatError(f"{refs_path} is not a RefCOCOg refs pickle: {err}") from err
    if not isinstance(refs, list) or not all(isinstance(r, dict) and "ann_id" in r and "sentences" in r for r in refs):
        raise FormatError(f"{refs_path}: expected a list of ref dicts with 'ann_id' and 'sentences'")
    inst = read_json(inst_path)
    if not isinstance(inst, dict) or not all(
        isinstance(inst.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise FormatError(f"{inst_path} is not COCO instances JSON")
    return RefCOCOg(
        refs,
        {i["id"]: i for i in inst["images"]},
        {a["id"]: a for a in inst["annotations"]},
        {c["id"]: c for c in inst["categories"]},
    )
