"""Batched CLIP encoding, the one encoder of the package: evaluation, training anchors, the corpus, ``score()``.

- :func:`encode_texts`: texts -> features (N x D, float32, CPU, input order). Like
  sentence-transformers' ``encode``, texts are sorted by length (longest first)
  before batching, so each batch pads to nearly its own length, and the rows are
  put back in input order.
- :func:`encode_images`: PIL images (or arrays) or image paths -> features, paths
  opened lazily batch by batch (never all held in memory).
- :class:`EmbeddingCache`: each distinct text / image key encoded once per model.

Features are L2-normalised unless ``normalize=False`` (the projected features
``forward(image_embeds=...)`` and the retain term's anchors take). Encoding runs
under ``torch.no_grad`` in eval mode and puts the model's train/eval mode back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable, Iterable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from .model import feature_tensor


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on a GPU that supports it when asked; a no-op otherwise (CPU numbers stay float32)."""
    if bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _finish(features, normalize: bool) -> torch.Tensor:
    features = feature_tensor(features).float()
    return (torch.nn.functional.normalize(features, dim=-1) if normalize else features).cpu()


def _empty(model) -> torch.Tensor:
    return torch.empty(0, model.config.projection_dim)


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts``, longest first (stable), as sentence-transformers' ``encode`` batches them."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def encode_texts(
    model,
    processor,
    texts: Sequence[str],
    batch_size: int = 256,
    normalize: bool = True,
    sort_by_length: bool = True,
    bf16: bool = False,
    show_progress: bool = False,
) -> torch.Tensor:
    """Text features (``len(texts)`` x D, float32, on the CPU) in input order.

    ``processor`` is a ``CLIPProcessor`` or a tokenizer. Texts longer than the
    tokenizer's limit (77 tokens) are truncated. ``bf16``: autocast on a GPU.
    """
    texts = list(texts)
    if not texts:
        return _empty(model)
    tokenizer = getattr(processor, "tokenizer", processor)
    device = _device(model)
    order = length_order(texts) if sort_by_length else list(range(len(texts)))
    out = torch.empty(len(texts), model.config.projection_dim)
    starts = range(0, len(texts), batch_size)
    with torch.no_grad(), _eval_mode(model), _autocast(device, bf16):
        for start in tqdm(starts, desc="texts", disable=not show_progress, leave=False):
            index = order[start : start + batch_size]
            tok = tokenizer([texts[i] for i in index], padding=True, truncation=True, return_tensors="pt").to(device)
            out[index] = _finish(model.get_text_features(**tok), normalize)
    return out


def _open(image):
    """A path opened as RGB; anything else (a PIL image, an array) goes to the processor as it is."""
    if not isinstance(image, (str, os.PathLike)):
        return image
    with Image.open(image) as im:
        return im.convert("RGB")


def batched(items: Iterable, size: int):
    """Lists of ``size`` items (the last one shorter) from any iterable, read lazily."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_images(
    model,
    processor,
    images: Iterable[Image.Image | str | os.PathLike],
    batch_size: int = 64,
    normalize: bool = True,
    bf16: bool = False,
    show_progress: bool = False,
    total: int | None = None,
) -> torch.Tensor:
    """Image features (N x D, float32, on the CPU) in input order.

    ``images`` may be a generator (``total`` sizes the progress bar); paths
    are opened batch by batch.
    """
    device = _device(model)
    dtype = getattr(model, "dtype", torch.float32)
    chunks = []
    total = total if total is not None else (len(images) if isinstance(images, Sequence) else None)
    bar = tqdm(total=total, desc="images", unit="img", disable=not show_progress, leave=False)
    with torch.no_grad(), _eval_mode(model), _autocast(device, bf16):
        for batch in batched(images, batch_size):
            pixels = processor(images=[_open(im) for im in batch], return_tensors="pt")["pixel_values"]
            pixels = pixels.to(device=device, dtype=dtype if dtype.is_floating_point else None)
            chunks.append(_finish(model.get_image_features(pixel_values=pixels), normalize))
            bar.update(len(batch))
    bar.close()
    return torch.cat(chunks) if chunks else _empty(model)


class EmbeddingCache:
    """Encodes each distinct text and image key once per model (normalised features) and looks rows up by key.

    Image keys are anything hashable (a path, an ``ImageRef``); ``add_images``
    encodes the new ones in the order given, through ``render`` (keys -> an
    iterable of PIL images, in order; default: open each key as a path).
    """

    def __init__(
        self,
        model,
        processor,
        batch_size: int = 256,
        text_batch_size: int | None = None,
        bf16: bool = False,
        show_progress: bool = False,
    ):
        self.model, self.processor = model, processor
        self.batch_size, self.text_batch_size = batch_size, text_batch_size or batch_size
        self.bf16, self.show_progress = bf16, show_progress
        self.text_rows: dict[str, int] = {}
        self.image_rows: dict[Hashable, int] = {}
        self.text_emb = self.image_emb = _empty(model)

    def add_texts(self, texts: Iterable[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self.text_rows]
        if new:
            emb = encode_texts(self.model, self.processor, new, self.text_batch_size, bf16=self.bf16)
            base = len(self.text_rows)
            self.text_rows.update((t, base + i) for i, t in enumerate(new))
            self.text_emb = torch.cat([self.text_emb, emb])

    def add_images(self, keys: Iterable[Hashable], render: Callable[[list], Iterable[Image.Image]] | None = None):
        new = [k for k in dict.fromkeys(keys) if k not in self.image_rows]
        if new:
            images = render(new) if render is not None else new
            emb = encode_images(
                self.model,
                self.processor,
                images,
                self.batch_size,
                bf16=self.bf16,
                show_progress=self.show_progress,
                total=len(new),
            )
            if emb.shape[0] != len(new):
                raise ValueError(f"render gave {emb.shape[0]} images for {len(new)} keys")
            base = len(self.image_rows)
            self.image_rows.update((k, base + i) for i, k in enumerate(new))
            self.image_emb = torch.cat([self.image_emb, emb])

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Rows of ``texts`` (each must have been added)."""
        return self.text_emb[[self.text_rows[t] for t in texts]]

    def images(self, keys: Sequence[Hashable]) -> torch.Tensor:
        """Rows of image ``keys`` (each must have been added)."""
        return self.image_emb[[self.image_rows[k] for k in keys]]
