"""CLIP image embeddings of a split's images, for the nearest-neighbour fallback of retrieved distractors.

Computed once per split (in batches, on the GPU when there is one) into
``<output_dir>/clip_embeddings/<split>.npy`` (L2-normalised float32 rows, one
per image id of ``<split>.ids.npy``, ascending) and memory-mapped when read,
so neither computing nor reading them holds the whole matrix in memory. A
resumed run reuses them when the model and the image ids are the same.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class ImageEmbeddings:
    """Nearest images by CLIP image embedding among given candidates; embeddings computed on first use."""

    def __init__(
        self,
        model_name_or_path: str,
        src,
        cache_dir: str | os.PathLike,
        batch_size: int = 32,
        show_progress: bool = True,
    ):
        self.model_name, self.src, self.batch_size, self.show_progress = (
            str(model_name_or_path),
            src,
            batch_size,
            show_progress,
        )
        cache_dir = Path(cache_dir)
        self.path, self.ids_path, self.meta_path = (
            cache_dir / f"{src.name}{ext}" for ext in (".npy", ".ids.npy", ".json")
        )
        self._ids = self._emb = None

    def nearest(self, image_id: int, candidates: Sequence[int], k: int = 1) -> list[int]:
        """The ``k`` candidates (ascending ids) whose embedding is nearest (cosine) to ``image_id``'s; ties: lower id."""
        ids, emb = self._load()
        rows = np.searchsorted(ids, np.asarray(candidates, dtype=np.int64))
        sims = emb[rows] @ emb[int(np.searchsorted(ids, image_id))]
        order = np.argsort(-sims, kind="stable")[:k]
        return [int(candidates[i]) for i in order]

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._emb is None:
            ids = np.fromiter(self.src.image_ids(), dtype=np.int64)
            if not self._cached(ids):
                self._compute(ids)
            self._ids, self._emb = np.load(self.ids_path), np.load(self.path, mmap_mode="r")
        return self._ids, self._emb

    def _cached(self, ids: np.ndarray) -> bool:
        try:
            meta = json.loads(self.meta_path.read_text())
            return (
                meta["model"] == self.model_name
                and np.array_equal(np.load(self.ids_path), ids)
                and np.load(self.path, mmap_mode="r").shape[0] == len(ids)
            )
        except (OSError, ValueError, KeyError):
            return False

    def _compute(self, ids: np.ndarray) -> None:
        import torch
        from PIL import Image

        from ..modeling import encode_images, load_checkpoint

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, processor = load_checkpoint(self.model_name)
        model = model.to(device).eval()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npy")
        out = None
        bar = tqdm(total=len(ids), desc=f"clip embeddings {self.src.name}", unit="img", disable=not self.show_progress)
        for start in range(0, len(ids), self.batch_size):
            batch = [int(i) for i in ids[start : start + self.batch_size]]
            images, ok = [], []
            for image_id in batch:
                path = self.src.image_dir / self.src.image(image_id)["file_name"]
                try:
                    with Image.open(path) as im:
                        images.append(im.convert("RGB"))
                    ok.append(True)
                except OSError as err:
                    logger.warning("clip embeddings: cannot read %s (%s); it is nobody's neighbour", path, err)
                    images.append(Image.new("RGB", (8, 8)))
                    ok.append(False)
            feats = encode_images(model, processor, images, batch_size=len(images))
            feats[~torch.tensor(ok)] = 0.0
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ids), feats.shape[1]))
            out[start : start + len(batch)] = feats.cpu().numpy()
            bar.update(len(batch))
        bar.close()
        if out is None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(0, 1))
        out.flush()
        del out
        ids_tmp = self.ids_path.with_name(f"{self.ids_path.name}.{os.getpid()}.tmp.npy")
        np.save(ids_tmp, ids)
        os.replace(tmp, self.path)
        os.replace(ids_tmp, self.ids_path)
        self.meta_path.write_text(json.dumps({"model": self.model_name, "images": len(ids)}))
        logger.info("clip embeddings of %d images (%s) in %s", len(ids), self.model_name, self.path)
