"""What the frozen towers compute, cached: vision activations per image, text and visual-prompt features."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...io import FormatError
from .data import MaskReader, ReferringSample, visual_prompt


def read_rgb(path: str):
    """The image at ``path`` as RGB; an unreadable or corrupt file is a one-line ``FormatError`` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise FormatError(f"cannot read image {path}: {err}") from err


class FeatureCache:
    """Vision activations per image (the frozen tower runs once per image) and text features per sentence.

    Activations are kept in memory up to ``max_bytes``; past that they are
    recomputed. Text features are keyed by the current text tower (``tag``).
    """

    def __init__(self, seg, processor, batch_size: int = 64, max_bytes: int = 2 << 30):
        self.seg, self.processor, self.batch_size, self.max_bytes = seg, processor, batch_size, max_bytes
        self.vision: dict[str, list[torch.Tensor]] = {}
        self.text: dict[tuple[str, str], torch.Tensor] = {}
        self.bytes = 0
        self.device = next(seg.parameters()).device

    @torch.no_grad()
    def _encode_images(self, paths: Sequence[str]) -> list[list[torch.Tensor]]:
        images = [read_rgb(p) for p in paths]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.seg.dtype)
        layers = vision_activations(self.seg, pixels)
        return [[a[i] for a in layers] for i in range(len(paths))]

    def activations(self, paths: Sequence[str]) -> list[torch.Tensor]:
        """Stacked per-layer activations for ``paths`` (``[layers] x (batch, tokens, width)``)."""
        todo = list(dict.fromkeys(p for p in paths if p not in self.vision))
        fresh = {}
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            for p, acts in zip(chunk, self._encode_images(chunk)):
                size = sum(a.numel() * a.element_size() for a in acts)
                if self.bytes + size <= self.max_bytes:
                    self.vision[p], self.bytes = [a.clone() for a in acts], self.bytes + size
                else:
                    fresh[p] = acts
        per = [self.vision.get(p) or fresh[p] for p in paths]
        return [torch.stack([acts[k] for acts in per]) for k in range(len(per[0]))]

    @torch.no_grad()
    def text_features(self, sentences: Sequence[str], tag: str) -> torch.Tensor:
        todo = list(dict.fromkeys(s for s in sentences if (tag, s) not in self.text))
        tok = self.processor.tokenizer
        for start in range(0, len(todo), 4 * self.batch_size):
            chunk = todo[start : start + 4 * self.batch_size]
            enc = tok(chunk, padding=True, truncation=True, return_tensors="pt").to(self.device)
            feats = self.seg.clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            feats = getattr(feats, "pooler_output", feats)
            for s, f in zip(chunk, feats):
                self.text[(tag, s)] = f.float()
        return torch.stack([self.text[(tag, s)] for s in sentences]).to(self.seg.dtype)

    @torch.no_grad()
    def prompt_features(self, samples: Sequence[ReferringSample], masks: MaskReader) -> torch.Tensor:
        """CLIP image features of each sample's visual prompt (:func:`visual_prompt`), cached per target object."""

        todo = list(dict.fromkeys(s for s in samples if ("prompt", s.ann_id) not in self.text))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            images = []
            for sample in chunk:
                images.append(visual_prompt(read_rgb(sample.image_path), masks.mask(sample.ann_id)))
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.seg.dtype)
            feats = self.seg.clip.get_image_features(pixel_values=pixels)
            feats = getattr(feats, "pooler_output", feats)
            for sample, f in zip(chunk, feats):
                self.text[("prompt", sample.ann_id)] = f.float()
        return torch.stack([self.text[("prompt", s.ann_id)] for s in samples]).to(self.seg.dtype)


@torch.no_grad()
def vision_activations(seg, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """The frozen vision tower's hidden states at ``seg.extract_layers`` (what CLIPSeg's decoder reads)."""
    out = seg.clip.get_image_features(pixel_values=pixel_values, output_hidden_states=True)
    return [out.hidden_states[i + 1] for i in seg.extract_layers]
