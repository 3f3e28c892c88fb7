"""Referring segmentation with a NegationCLIP text encoder: a ``transformers`` CLIPSeg whose towers are ours.

The paper's downstream protocol (section 5): CLIPSeg's decoder is trained with
a frozen CLIP, then the text tower is swapped for a negation-aware one and the
decoder is *not* retrained; negated referring expressions should gain mIoU.

- :func:`clipseg_from_clip` builds a ``CLIPSegForImageSegmentation`` whose CLIP
  towers are a given CLIP checkpoint (exact: same 110 tensors under ``clip.``),
  with ``extract_layers`` spread over the tower's depth (:func:`extract_layers_for`).
- :func:`swap_text_tower` puts another checkpoint's text tower into a segmenter
  (a real CLIPSeg too), checking that its features fit the decoder.
- :func:`load_referring_samples` reads RefCOCOg-format refs (``refs(umd).p``
  through the restricted unpickler) and their ``instances.json`` masks
  (pycocotools ``annToMask``): the scene world's files or the real RefCOCOg + COCO.
- :func:`train_decoder` trains the decoder only (CLIP frozen, BCE + Dice, text and
  visual prompts mixed as CLIPSeg trains), :func:`score_segmenter` gives each
  expression's IoU and whether the decoder points at its target rather than a
  same-category rival, :func:`summarize` the mIoU (bootstrap interval), precision
  at IoU 0.5 and pointing accuracy (Wilson intervals, chance) on affirmative and
  negated expressions, :func:`text_blind_ious` the reference of a decoder that
  ignores its text.
- :func:`run_segment` (``hf-negationclip segment``) and
  :func:`run_segment_stage` (a cached, resumable stage for the demo) tie it together.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..benchmarks import load_refcocog
from ..corpus import has_negation
from ..evaluation.stats import wilson_interval
from ..io import FormatError

logger = logging.getLogger(__name__)

RESULTS_VERSION = 2
#: what is scored per expression and cached per text tower (``ious/<label>.<kind>.<part>.npy``)
SCORES = ("iou", "pointing", "rivals")


# --------------------------------------------------------------------------- building and swapping


def extract_layers_for(depth: int, count: int = 3) -> list[int]:
    """``count`` vision layers spread evenly over a tower of ``depth`` layers (CLIPSeg's [3, 6, 9] for 12).

    CLIPSeg's default [3, 6, 9] needs at least 10 layers: a shallower tower loads
    silently with it and fails at the first forward.
    """
    if depth < 1:
        raise ValueError(f"a vision tower needs at least one layer, got {depth}")
    count = min(count, depth)
    return [depth * (i + 1) // (count + 1) for i in range(count)]


def _clip_model(clip):
    """A ``CLIPModel`` from a model or a checkpoint (folder, preset, Hub id); LoRA adapter folders are merged."""
    from transformers import CLIPModel

    if isinstance(clip, CLIPModel):
        return clip
    from ..modeling import build_model

    path = Path(str(clip))
    if path.exists() and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: not a CLIP checkpoint folder")
    return build_model(str(clip))


def clipseg_from_clip(
    clip,
    extract_layers: Sequence[int] | None = None,
    reduce_dim: int = 64,
    decoder_num_attention_heads: int = 4,
    decoder_intermediate_size: int = 2048,
    complex_upsampling: bool | None = None,
    conditional_layer: int | None = None,
    seed: int = 0,
):
    """A ``CLIPSegForImageSegmentation`` whose CLIP towers are exactly ``clip``'s; the decoder starts random.

    ``clip`` is a ``CLIPModel`` (our ``NegationCLIPModel`` included) or a
    checkpoint. ``extract_layers`` defaults to :func:`extract_layers_for` the
    vision depth. ``complex_upsampling`` (CLIPSeg's "refined" decoder head) is
    on by default only for patch 16, the one patch size it upsamples correctly.

    ``conditional_layer`` is the decoder block whose input the text modulates
    (FiLM; CLIPSeg's config field). It defaults to the last block: at CLIPSeg's
    0, every later block adds a raw vision reduction (RMS 11-15 on the scene
    world's tower against 1 for the layer-normed text-modulated stream), the
    text's share of the signal shrinks tenfold per block, and the trained
    decoder ignores its text (masks for two objects of one image overlap at IoU
    0.996-0.999, affirmative mIoU 0.33, about 1/#objects); at the last block it
    reads it (IoU 0.06 between two objects' masks, affirmative mIoU 0.85).
    """
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    clip = _clip_model(clip)
    cfg = clip.config
    depth = cfg.vision_config.num_hidden_layers
    layers = list(extract_layers) if extract_layers is not None else extract_layers_for(depth)
    bad = [i for i in layers if not 0 <= i < depth]
    if bad or not layers:
        raise ValueError(f"extract_layers {layers} do not fit a {depth}-layer vision tower (valid: 0..{depth - 1})")
    conditional_layer = len(layers) - 1 if conditional_layer is None else conditional_layer
    if not 0 <= conditional_layer < len(layers):
        raise ValueError(
            f"conditional_layer {conditional_layer} does not fit a {len(layers)}-block decoder "
            f"(valid: 0..{len(layers) - 1})"
        )
    patch = cfg.vision_config.patch_size
    text = {**cfg.text_config.to_dict(), "projection_dim": cfg.projection_dim}
    vision = {**cfg.vision_config.to_dict(), "projection_dim": cfg.projection_dim}
    for sub in (text, vision):
        sub.pop("model_type", None)
    seg_cfg = CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=cfg.projection_dim,
        logit_scale_init_value=float(cfg.logit_scale_init_value),
        extract_layers=layers,
        conditional_layer=conditional_layer,
        reduce_dim=reduce_dim,
        decoder_num_attention_heads=decoder_num_attention_heads,
        decoder_intermediate_size=decoder_intermediate_size,
        use_complex_transposed_convolution=(patch == 16) if complex_upsampling is None else complex_upsampling,
    )
    torch.manual_seed(seed)
    seg = CLIPSegForImageSegmentation(seg_cfg)
    state = {f"clip.{k}": v for k, v in clip.state_dict().items()}
    missing, unexpected = seg.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("decoder.")]
    if missing or unexpected:
        raise ValueError(
            f"the CLIP checkpoint does not map onto CLIPSeg: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return freeze_clip(seg)


def freeze_clip(seg):
    """Freeze the segmenter's CLIP towers (as CLIPSeg trains): only ``seg.decoder`` keeps gradients."""
    seg.clip.requires_grad_(False)
    seg.decoder.requires_grad_(True)
    return seg


def load_clipseg(name_or_path: str):
    """A real CLIPSeg (``CIDAS/clipseg-rd64-refined`` or a saved folder) with its processor; towers frozen."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    path = Path(name_or_path).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: not a CLIPSeg folder")
    try:
        seg = CLIPSegForImageSegmentation.from_pretrained(str(name_or_path))
        processor = CLIPSegProcessor.from_pretrained(str(name_or_path))
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(f"cannot load the CLIPSeg {name_or_path!r}: {first}") from err
    if seg.config.model_type != "clipseg":
        raise ValueError(f"{name_or_path} is a {seg.config.model_type!r} checkpoint, not CLIPSeg")
    return freeze_clip(seg), processor


def _projection_width(module) -> int:
    return int(module.text_projection.weight.shape[0])


def _donor_width(name) -> int:
    """Width of a checkpoint's text features, read from its config.json when it has one (no weights loaded)."""
    config = Path(str(name)) / "config.json"
    if config.is_file():
        try:
            return int(json.loads(config.read_text())["projection_dim"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
    return _projection_width(_clip_model(name))


def swap_text_tower(seg, donor, name: str | None = None):
    """Put ``donor``'s text tower (a ``CLIPModel`` or checkpoint) into ``seg`` in place; the decoder is untouched.

    The donor's text features must have the decoder's input width
    (``seg.config.projection_dim``), else a one-line ``ValueError``. A donor
    tower of another depth or hidden width is rebuilt from its own config.
    """
    from transformers.models.clipseg.configuration_clipseg import CLIPSegTextConfig
    from transformers.models.clipseg.modeling_clipseg import CLIPSegTextModel

    donor_model = _clip_model(donor)
    name = name or str(getattr(donor, "name_or_path", donor) if not isinstance(donor, str) else donor)
    width, want = _projection_width(donor_model), int(seg.config.projection_dim)
    if width != want:
        raise ValueError(
            f"text tower of {name} gives {width}-wide features but the segmenter's decoder takes {want} "
            f"(projection_dim): they do not fit"
        )
    tcfg = donor_model.config.text_config
    dims = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    dims += ("max_position_embeddings", "hidden_act", "eos_token_id")
    if any(getattr(tcfg, d) != getattr(seg.config.text_config, d) for d in dims):
        new_cfg = CLIPSegTextConfig(**{k: v for k, v in tcfg.to_dict().items() if k != "model_type"})
        new_cfg.projection_dim = want
        seg.clip.text_model = CLIPSegTextModel(new_cfg).to(seg.dtype)
        seg.clip.text_projection = torch.nn.Linear(tcfg.hidden_size, want, bias=False).to(seg.dtype)
        seg.config.text_config = new_cfg
        seg.clip.config.text_config = new_cfg
    state = {f"text_model.{k}": v for k, v in donor_model.text_model.state_dict().items()}
    state.update({f"text_projection.{k}": v for k, v in donor_model.text_projection.state_dict().items()})
    target = {k for k in seg.clip.state_dict() if k.startswith(("text_model.", "text_projection."))}
    if set(state) != target:
        raise ValueError(
            f"text tower of {name} does not map onto CLIPSeg's: keys differ ({sorted(set(state) ^ target)[:3]})"
        )
    seg.clip.load_state_dict(state, strict=False)
    seg.clip.text_model.requires_grad_(False)
    seg.clip.text_projection.requires_grad_(False)
    return seg


def segmentation_processor(name_or_path, image_size: int | None = None):
    """A ``CLIPSegProcessor`` for a CLIP checkpoint: its tokenizer + a square resize to the tower's size.

    CLIPSeg resizes the whole image (no crop), so a mask predicted at the model's
    resolution maps back onto any aspect ratio by resizing.
    """
    from transformers import CLIPSegProcessor, ViTImageProcessor

    from ..modeling import CLIP_MEAN, CLIP_STD, load_processor

    base = load_processor(name_or_path) if name_or_path is not None else load_processor()
    if image_size is None:
        crop = getattr(base.image_processor, "crop_size", None) or {}
        image_size = int(crop.get("height") or 224)
    image_processor = ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3
    )
    return CLIPSegProcessor(image_processor=image_processor, tokenizer=base.tokenizer)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ReferringSample:
    """One referring expression with its target object (``ann_id``) and image."""

    ref_id: int
    ann_id: int
    image_id: int
    image_path: str
    sentence: str
    negated: bool


class MaskReader:
    """Binary masks of COCO annotations through pycocotools ``annToMask`` (polygons and RLE alike)."""

    def __init__(
        self,
        images: Mapping[int, dict],
        annotations: Mapping[int, dict],
        categories: Mapping[int, dict],
        max_bytes: int = 512 << 20,
    ):
        from pycocotools.coco import COCO

        self.cache: dict[int, np.ndarray] = {}
        self.bytes, self.max_bytes = 0, max_bytes

        self.coco = COCO()
        self.coco.dataset = {
            "images": list(images.values()),
            "annotations": list(annotations.values()),
            "categories": list(categories.values()),
        }
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            self.coco.createIndex()

    def rivals(self, ann_id: int) -> list[int]:
        """The other annotations of the same image and category (RefCOCOg's same-category distractors)."""
        ann = self.coco.anns[ann_id]
        return [
            a
            for a in self.coco.getAnnIds(imgIds=[ann["image_id"]], catIds=[ann["category_id"]])
            if a != ann_id and not self.coco.anns[a].get("iscrowd")
        ]

    def mask(self, ann_id: int) -> np.ndarray:
        """The annotation's mask (bool, image height x width); kept in memory up to ``max_bytes``."""
        if ann_id in self.cache:
            return self.cache[ann_id]
        mask = self.coco.annToMask(self.coco.anns[ann_id]).astype(bool)
        if self.bytes + mask.nbytes <= self.max_bytes:
            self.cache[ann_id], self.bytes = mask, self.bytes + mask.nbytes
        return mask


def load_referring_samples(
    refcocog_root: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str,
    negated: bool | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    split_by: str = "umd",
) -> tuple[list[ReferringSample], MaskReader, dict]:
    """Referring expressions of a RefCOCOg-format split, their masks, and counts of what was skipped.

    Works on the real RefCOCOg (``image_root`` = COCO train2014) and on the scene
    world (``refcocog_root`` = the world, ``image_root`` = ``world/images``).
    ``negated`` keeps only negated (True) or affirmative (False) expressions
    (``corpus.has_negation``). A ref whose image is missing is skipped and
    counted; an annotation without a ``segmentation`` is an error.
    """
    ref = load_refcocog(refcocog_root, split_by)
    refs = ref.split(split)
    if not refs:
        splits = sorted({r["split"] for r in ref.refs})
        raise ValueError(f"RefCOCOg at {refcocog_root} has no refs in split {split!r} (splits: {splits})")
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"image folder {image_root} does not exist")
    counts = {"refs": len(refs), "missing_image": 0, "expressions": 0, "negated": 0, "affirmative": 0}
    samples, exists = [], {}
    for r in refs:
        ann = ref.annotations.get(r["ann_id"])
        if ann is None:
            raise FormatError(f"ref {r.get('ref_id')} points at annotation {r['ann_id']}, which instances.json lacks")
        if not ann.get("segmentation"):
            raise FormatError(f"annotation {ann['id']} in instances.json has no segmentation mask")
        path = ref.image_path(r, image_root)
        if path not in exists:
            exists[path] = path.is_file()
        if not exists[path]:
            counts["missing_image"] += 1
            continue
        for sent in r["sentences"]:
            text = str(sent.get("sent") or sent.get("raw") or "").strip()
            if not text:
                continue
            neg = has_negation(text)
            counts["negated" if neg else "affirmative"] += 1
            if negated is None or neg == negated:
                samples.append(
                    ReferringSample(int(r["ref_id"]), int(r["ann_id"]), int(r["image_id"]), str(path), text, neg)
                )
    counts["expressions"] = counts["negated"] + counts["affirmative"]
    if counts["missing_image"]:
        logger.warning(
            "skipped %d of %d refs: image file missing under %s", counts["missing_image"], len(refs), image_root
        )
    if not samples:
        raise ValueError(f"no usable referring expressions in split {split!r} of {refcocog_root} (counts: {counts})")
    if max_samples is not None and len(samples) > max_samples:
        samples = random.Random(seed).sample(samples, max_samples)
    return samples, MaskReader(ref.images, ref.annotations, ref.categories), counts


# --------------------------------------------------------------------------- features


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
        from PIL import Image

        images = []
        for p in paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
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
        from PIL import Image

        todo = list(dict.fromkeys(s for s in samples if ("prompt", s.ann_id) not in self.text))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            images = []
            for sample in chunk:
                with Image.open(sample.image_path) as im:
                    images.append(visual_prompt(im.convert("RGB"), masks.mask(sample.ann_id)))
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.seg.dtype)
            feats = self.seg.clip.get_image_features(pixel_values=pixels)
            feats = getattr(feats, "pooler_output", feats)
            for sample, f in zip(chunk, feats):
                self.text[("prompt", sample.ann_id)] = f.float()
        return torch.stack([self.text[("prompt", s.ann_id)] for s in samples]).to(self.seg.dtype)


def visual_prompt(image, mask: np.ndarray, darken: float = 0.1, blur: float = 2.0):
    """CLIPSeg's visual prompt: the image with everything but the target blurred and darkened (no crop: it keeps
    the object where the query image has it, which a tower with one patch per scene cell needs)."""
    from PIL import Image, ImageFilter

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask of shape {mask.shape} does not fit an image of {rgb.shape[1]}x{rgb.shape[0]}")
    background = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) * darken
    out = np.where(mask[..., None], rgb, background)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


@torch.no_grad()
def vision_activations(seg, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """The frozen vision tower's hidden states at ``seg.extract_layers`` (what CLIPSeg's decoder reads)."""
    out = seg.clip.get_image_features(pixel_values=pixel_values, output_hidden_states=True)
    return [out.hidden_states[i + 1] for i in seg.extract_layers]


def _target_masks(masks: MaskReader, samples: Sequence[ReferringSample], size: tuple[int, int]) -> torch.Tensor:
    """Masks resized to the decoder's output (area average: soft labels at the edges)."""
    out = []
    for s in samples:
        m = torch.from_numpy(masks.mask(s.ann_id)).float()[None, None]
        out.append(torch.nn.functional.interpolate(m, size=size, mode="area")[0, 0])
    return torch.stack(out)


# --------------------------------------------------------------------------- training and evaluation


def train_decoder(
    seg,
    cache: FeatureCache,
    samples: Sequence[ReferringSample],
    masks: MaskReader,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    tag: str = "trained-with",
    show_progress: bool = True,
    log_every: int = 50,
    dice_weight: float = 1.0,
    visual_prompts: float = 0.0,
) -> list[dict]:
    """Train ``seg.decoder`` only (CLIP frozen): CLIPSeg's BCE + ``dice_weight`` x soft Dice; AdamW, cosine.

    The Dice term keeps small targets from collapsing into "all background",
    the BCE optimum when an object covers a few per cent of the image.
    ``visual_prompts`` is the share of samples whose condition is, as in
    CLIPSeg's training, a random interpolation between the expression's text
    features and the image features of the target's :func:`visual_prompt`
    (rescaled to the text's norm, so a plain CLIPSeg forward on text stays in
    distribution): the decoder learns to read CLIP's joint space rather than
    one text tower's quirks, which is what a swapped-in text tower relies on.
    Returns the training log (mean loss every ``log_every`` steps).
    """
    if not 0.0 <= visual_prompts <= 1.0:
        raise ValueError(f"visual_prompts is a share in [0, 1], got {visual_prompts}")
    if not samples:
        raise ValueError("no training samples")
    freeze_clip(seg)
    params = [p for p in seg.decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    log, running = [], []
    seg.decoder.train()
    bar = tqdm(range(steps), desc="training the CLIPSeg decoder", unit="step", disable=not show_progress)
    for step in bar:
        if len(order) < batch_size:
            more = list(range(len(samples)))
            rng.shuffle(more)
            order += more
        batch = [samples[i] for i in order[:batch_size]]
        del order[:batch_size]
        acts = cache.activations([s.image_path for s in batch])
        cond = cache.text_features([s.sentence for s in batch], tag)
        if visual_prompts:
            mix = torch.rand(len(batch), 1, generator=generator) * (
                torch.rand(len(batch), 1, generator=generator) < visual_prompts
            )
            image = cache.prompt_features(batch, masks)
            image = image / image.norm(dim=-1, keepdim=True).clamp_min(1e-6) * cond.norm(dim=-1, keepdim=True)
            mix = mix.to(cond.device, cond.dtype)
            cond = (1 - mix) * cond + mix * image
        logits = seg.decoder(acts, cond).logits
        labels = _target_masks(masks, batch, tuple(logits.shape[-2:])).to(logits.device, logits.dtype)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        if dice_weight:
            probs = logits.sigmoid().flatten(1)
            flat = labels.flatten(1)
            dice = 1 - (2 * (probs * flat).sum(1) + 1) / (probs.sum(1) + flat.sum(1) + 1)
            loss = loss + dice_weight * dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.append({"step": step + 1, "loss": float(np.mean(running)), "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{log[-1]['loss']:.4f}")
            running = []
    seg.decoder.eval()
    return log


@torch.no_grad()
def score_segmenter(
    seg,
    cache: FeatureCache,
    samples: Sequence[ReferringSample],
    masks: MaskReader,
    tag: str,
    batch_size: int = 64,
    show_progress: bool = True,
) -> dict[str, np.ndarray]:
    """Each expression's IoU and whether the decoder points at its target rather than a same-category rival.

    ``iou``: the predicted mask (sigmoid > 0.5, resized to the image) against
    the target's. ``pointing``: 1 when the mean logit over the target beats the
    mean logit over every other object of its category in the image (RefCOCOg's
    distractors by design; for a negated expression, the object the negation
    excludes), else 0 (a tie is wrong); NaN without a rival. ``rivals``: how
    many, so chance is the mean of ``1 / (1 + rivals)``. Pointing reads the
    ranking even where every logit is below the threshold.
    """
    seg.eval()
    ious = np.zeros(len(samples), dtype=np.float64)
    pointing = np.full(len(samples), np.nan)
    rivals = np.zeros(len(samples), dtype=np.int64)
    for start in tqdm(
        range(0, len(samples), batch_size), desc=f"segmenting ({tag})", unit="batch", disable=not show_progress
    ):
        batch = samples[start : start + batch_size]
        logits = seg.decoder(
            cache.activations([s.image_path for s in batch]), cache.text_features([s.sentence for s in batch], tag)
        ).logits
        for k, s in enumerate(batch):
            target = torch.from_numpy(masks.mask(s.ann_id))
            scores = torch.nn.functional.interpolate(
                logits[k][None, None].float(), size=tuple(target.shape), mode="bilinear", align_corners=False
            )[0, 0].cpu()
            pred = scores > 0
            union = (pred | target).sum().item()
            ious[start + k] = (pred & target).sum().item() / union if union else 1.0
            others = [torch.from_numpy(masks.mask(a)) for a in masks.rivals(s.ann_id)]
            others = [m for m in others if m.any()]
            rivals[start + k] = len(others)
            if others and target.any():
                mine = scores[target].mean().item()
                pointing[start + k] = float(all(mine > scores[m].mean().item() for m in others))
    return {"iou": ious, "pointing": pointing, "rivals": rivals}


def evaluate_segmenter(
    seg,
    cache: FeatureCache,
    samples: Sequence[ReferringSample],
    masks: MaskReader,
    tag: str,
    batch_size: int = 64,
    show_progress: bool = True,
) -> np.ndarray:
    """IoU of each expression's predicted mask (sigmoid > 0.5, resized to the image) with its target mask."""
    return score_segmenter(seg, cache, samples, masks, tag, batch_size, show_progress)["iou"]


def text_blind_ious(samples: Sequence[ReferringSample], masks: MaskReader) -> np.ndarray:
    """IoU of "mark every object of the image" with each expression's target: what a decoder blind to text scores.

    The reference beside every mIoU (the segmentation analogue of chance): a
    decoder that ignores its text can do no better than this on average.
    """
    ious = np.zeros(len(samples), dtype=np.float64)
    union_area: dict[int, int] = {}
    for k, s in enumerate(samples):
        if s.image_id not in union_area:
            union = None
            for ann_id in masks.coco.getAnnIds(imgIds=[s.image_id]):
                m = masks.mask(ann_id)
                union = m.copy() if union is None else union | m
            union_area[s.image_id] = int(union.sum()) if union is not None else 0
        target = int(masks.mask(s.ann_id).sum())
        ious[k] = target / union_area[s.image_id] if union_area[s.image_id] else 0.0
    return ious


def _mean_interval(values: np.ndarray, resamples: int, seed: int) -> list[float]:
    from scipy import stats

    if len(values) < 2:
        return [float("nan"), float("nan")]
    if np.ptp(values) == 0:
        return [float(values[0]), float(values[0])]
    if resamples <= 0:
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
        return [float(lo), float(hi)]
    res = stats.bootstrap(
        (values,), np.mean, n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed)
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def summarize(
    ious: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    pointing: np.ndarray | None = None,
    rivals: np.ndarray | None = None,
) -> dict:
    """mIoU with its 95% bootstrap interval, precision at IoU 0.5 and (given) pointing accuracy, Wilson intervals.

    ``pointing`` / ``rivals`` are :func:`score_segmenter`'s; items without a
    rival (NaN) are left out of the pointing accuracy, whose chance is the mean
    of ``1 / (1 + rivals)`` over the items it counts.
    """
    ious = np.asarray(ious, dtype=np.float64)
    hits = int((ious >= 0.5).sum())
    out = {
        "n": len(ious),
        "miou": float(ious.mean()) if len(ious) else float("nan"),
        "miou_ci95": _mean_interval(ious, resamples, seed),
        "precision@0.5": hits / len(ious) if len(ious) else float("nan"),
        "precision@0.5_ci95": wilson_interval(hits, len(ious)),
    }
    if pointing is not None:
        pointing = np.asarray(pointing, dtype=np.float64)
        counted = ~np.isnan(pointing)
        n, right = int(counted.sum()), int(pointing[counted].sum())
        chance = 1.0 / (1.0 + np.asarray(rivals)[counted]) if rivals is not None else np.full(n, np.nan)
        out["pointing"] = {
            "value": right / n if n else float("nan"),
            "ci95": wilson_interval(right, n),
            "n": n,
            "chance": float(chance.mean()) if n else float("nan"),
        }
    return out


def paired_delta(ious: np.ndarray, reference: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """mIoU difference against the reference encoder on the same expressions, with a paired bootstrap interval."""
    diff = np.asarray(ious, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return {"delta_miou": float(diff.mean()), "delta_miou_ci95": _mean_interval(diff, resamples, seed)}


# --------------------------------------------------------------------------- the command


@dataclass
class SegmentConfig:
    """Train a CLIPSeg decoder on a CLIP's frozen towers; score it with text towers swapped in (no retraining)."""

    model: str | None = field(
        default=None,
        metadata={"help": "CLIP checkpoint whose towers the segmenter is built on and its decoder trained with"},
    )
    clipseg: str | None = field(
        default=None,
        metadata={
            "help": "start from a real CLIPSeg instead (CIDAS/clipseg-rd64-refined or a folder); --train_steps 0 "
            "keeps its decoder"
        },
    )
    swap: list[str] = field(
        default_factory=list,
        metadata={
            "help": "text towers to swap in: checkpoints or LABEL=CHECKPOINT (repeat the flag); label = folder name"
        },
    )
    world_dir: str | None = field(default=None, metadata={"help": "scene world: its refcocog/ files and images/"})
    refcocog_root: str | None = field(
        default=None, metadata={"help": "real RefCOCOg: folder holding refcocog/refs(umd).p + instances.json"}
    )
    coco_images: str | None = field(default=None, metadata={"help": "COCO train2014 image folder (real RefCOCOg)"})
    output_dir: str = field(
        default="runs/segment", metadata={"help": "segmenter/, results.json and results.md go here"}
    )
    train_split: str = field(default="train", metadata={"help": "RefCOCOg split to train the decoder on"})
    eval_split: str = field(default="val", metadata={"help": "RefCOCOg split to evaluate on"})
    max_train: int | None = field(default=None, metadata={"help": "at most this many training expressions"})
    max_eval: int | None = field(default=None, metadata={"help": "at most this many expressions of each kind"})
    train_steps: int = field(default=1500, metadata={"help": "decoder training steps (0: use the decoder as it is)"})
    batch_size: int = field(default=64, metadata={"help": "expressions per step / per evaluation batch"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the decoder"})
    dice_weight: float = field(default=1.0, metadata={"help": "weight of the soft Dice term added to the BCE loss"})
    visual_prompts: float = field(
        default=0.5,
        metadata={
            "help": "share of training samples conditioned on a text / visual-prompt interpolation (CLIPSeg's "
            "training; 0: text only)"
        },
    )
    reduce_dim: int = field(default=64, metadata={"help": "decoder width (CLIPSeg rd64)"})
    decoder_intermediate_size: int = field(default=2048, metadata={"help": "decoder MLP width (CLIPSeg: 2048)"})
    extract_layers: str | None = field(
        default=None, metadata={"help": "comma-separated vision layers the decoder reads (default: spread over depth)"}
    )
    conditional_layer: int | None = field(
        default=None,
        metadata={
            "help": "decoder block the text modulates (FiLM; default: the last, where a tiny tower's decoder reads "
            "its text; CLIPSeg's own is 0)"
        },
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the mIoU intervals (0: t-interval)"})
    seed: int = field(default=0, metadata={"help": "seed of the decoder init, batch order and bootstrap"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)"})
    fresh: bool = field(default=False, metadata={"help": "retrain and rescore even when cached results exist"})
    show_progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        if bool(self.model) == bool(self.clipseg):
            raise ValueError("segment needs exactly one of --model (a CLIP checkpoint) or --clipseg")
        if bool(self.world_dir) == bool(self.refcocog_root):
            raise ValueError("segment needs exactly one of --world_dir or --refcocog_root (with --coco_images)")
        if self.refcocog_root and not self.coco_images:
            raise ValueError("--refcocog_root needs --coco_images (the COCO train2014 image folder)")
        if self.train_steps < 0 or self.batch_size < 1:
            raise ValueError("--train_steps must be >= 0 and --batch_size >= 1")
        if self.train_steps == 0 and not self.clipseg:
            raise ValueError(
                "--train_steps 0 only makes sense with --clipseg: a segmenter built on --model starts random"
            )

    def layers(self) -> list[int] | None:
        if not self.extract_layers:
            return None
        try:
            return [int(x) for x in self.extract_layers.split(",") if x.strip()]
        except ValueError as err:
            raise ValueError(f"--extract_layers must be comma-separated integers, got {self.extract_layers!r}") from err

    def data_roots(self) -> tuple[Path, Path]:
        if self.world_dir:
            return Path(self.world_dir), Path(self.world_dir) / "images"
        return Path(self.refcocog_root), Path(self.coco_images)

    def training_key(self) -> dict:
        """What the trained decoder depends on (a cached segmenter is reused only when this matches)."""
        keys = ("model", "clipseg", "world_dir", "refcocog_root", "train_split", "max_train", "train_steps")
        keys += (
            "batch_size",
            "learning_rate",
            "dice_weight",
            "visual_prompts",
            "reduce_dim",
            "decoder_intermediate_size",
            "extract_layers",
            "conditional_layer",
            "seed",
        )
        return {k: getattr(self, k) for k in keys}


def _label(name: str, taken: Mapping) -> str:
    label = Path(str(name).rstrip("/")).name or str(name)
    while label in taken:
        label += "'"
    return label


def segmentation_table(results: dict) -> str:
    """The results as a markdown table (``results.md`` and the demo's report): one row per text tower + the text-blind reference."""

    def ci(r: dict) -> str:
        return f"{r['miou']:.3f} [{r['miou_ci95'][0]:.3f}, {r['miou_ci95'][1]:.3f}]"

    lines = [
        f"Referring segmentation ({results['data']}, split {results['eval_split']}): decoder trained with "
        f"`{results['trained_with']}`, text towers swapped in without retraining.",
        "",
        "| text encoder | affirmative mIoU [95% CI] | negated mIoU [95% CI] | negated vs trained-with | "
        "affirmative P@0.5 | negated P@0.5 | points at the target, affirmative | points at the target, negated | "
        "n (aff / neg) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def point(r: dict) -> str:
        p = r.get("pointing")
        if not p or not p["n"]:
            return "-"
        return f"{p['value']:.3f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] (chance {p['chance']:.2f}, n {p['n']})"

    for label, r in results["encoders"].items():
        a, n = r["affirmative"], r["negated"]
        delta = r.get("negated_delta")
        dtext = (
            f"{delta['delta_miou']:+.3f} [{delta['delta_miou_ci95'][0]:+.3f}, {delta['delta_miou_ci95'][1]:+.3f}]"
            if delta
            else "-"
        )
        lines.append(
            f"| {label}{' (trained with)' if r.get('trained_with') else ''} | {ci(a)} | {ci(n)} | {dtext} | "
            f"{a['precision@0.5']:.3f} | {n['precision@0.5']:.3f} | {point(a)} | {point(n)} | {a['n']} / {n['n']} |"
        )
    blind = results.get("text_blind")
    if blind:
        a, n = blind["affirmative"], blind["negated"]
        lines.append(
            f"| *text-blind reference: every object marked* | {ci(a)} | {ci(n)} | | {a['precision@0.5']:.3f} | "
            f"{n['precision@0.5']:.3f} | | | {a['n']} / {n['n']} |"
        )
    lines += [
        "",
        "*Points at the target*: the mean logit over the target beats the mean over every other object of its "
        "category in the image (for a negated expression, the object the negation excludes); it reads the "
        "decoder's ranking even where no pixel passes the threshold. The text-blind row marks every object: "
        "a decoder that ignores its text scores about that mIoU.",
    ]
    return "\n".join(lines) + "\n"


def run_segment(cfg: SegmentConfig) -> dict:
    """Build (or load) the segmenter, train its decoder, score every text tower; write results.json + results.md.

    Cached in ``output_dir``: the trained segmenter (``segmenter/``, safetensors,
    reused when its training settings match) and each encoder's IoUs
    (``ious/<label>.npy``), so a rerun after a kill resumes where it stopped.
    """
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_segment(cfg)
    finally:
        torch.set_num_threads(threads)


def _checkpoint_stamp(name: str, evals: Mapping[str, Sequence[ReferringSample]]) -> dict:
    """What a cached IoU file depends on: the text tower's weights file (size, mtime) and the expressions scored."""
    stamp: dict = {"name": str(name), "expressions": {kind: len(v) for kind, v in evals.items()}}
    for weights in ("model.safetensors", "adapter_model.safetensors"):
        path = Path(str(name)) / weights
        if path.is_file():
            st = path.stat()
            stamp[weights] = [st.st_size, st.st_mtime_ns]
    return stamp


def _run_segment(cfg: SegmentConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    root, image_root = cfg.data_roots()
    started = time.perf_counter()
    evals = {}
    for kind, neg in (("affirmative", False), ("negated", True)):
        evals[kind], masks, eval_counts = load_referring_samples(
            root, image_root, cfg.eval_split, negated=neg, max_samples=cfg.max_eval, seed=cfg.seed
        )
    # the encoders to score, checked before any training
    donors: dict[str, str] = {}
    trained_with = cfg.model or cfg.clipseg
    own_label = _label(trained_with, donors)
    for entry in cfg.swap:
        label, sep, name = entry.partition("=")
        if not sep or "/" in label or not label:
            label, name = _label(entry, {own_label: 1, **donors}), entry
        if label in donors or label == own_label:
            raise ValueError(f"--swap label {label!r} given twice")
        donors[label] = name
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    seg_dir, key_file = out / "segmenter", out / "segmenter" / "training_key.json"
    cached = (
        not cfg.fresh
        and (seg_dir / "model.safetensors").is_file()
        and key_file.is_file()
        and json.loads(key_file.read_text()) == cfg.training_key()
    )
    train_log: list[dict] = []
    if cached:
        logger.info("reusing the trained segmenter in %s", seg_dir)
        seg = freeze_clip(CLIPSegForImageSegmentation.from_pretrained(seg_dir))
        processor = CLIPSegProcessor.from_pretrained(seg_dir)
        if (seg_dir / "train_log.json").is_file():
            train_log = json.loads((seg_dir / "train_log.json").read_text())
    else:
        if cfg.clipseg:
            seg, processor = load_clipseg(cfg.clipseg)
        else:
            seg = clipseg_from_clip(
                cfg.model,
                cfg.layers(),
                reduce_dim=cfg.reduce_dim,
                decoder_intermediate_size=cfg.decoder_intermediate_size,
                conditional_layer=cfg.conditional_layer,
                seed=cfg.seed,
            )
            processor = segmentation_processor(cfg.model, seg.config.vision_config.image_size)
    for name in donors.values():  # fail fast on a donor that does not fit, before minutes of training
        width = _donor_width(name)
        if width != seg.config.projection_dim:
            raise ValueError(
                f"text tower of {name} gives {width}-wide features but the segmenter's decoder takes "
                f"{seg.config.projection_dim} (projection_dim): they do not fit"
            )
    cache = FeatureCache(seg, processor, cfg.batch_size)
    train: list[ReferringSample] = []
    train_counts: dict = {}
    if not cached:
        if cfg.train_steps:
            train, masks, train_counts = load_referring_samples(
                root, image_root, cfg.train_split, negated=False, max_samples=cfg.max_train, seed=cfg.seed
            )
            train_log = train_decoder(
                seg,
                cache,
                train,
                masks,
                cfg.train_steps,
                cfg.batch_size,
                cfg.learning_rate,
                seed=cfg.seed,
                dice_weight=cfg.dice_weight,
                visual_prompts=cfg.visual_prompts,
                log_every=max(1, min(50, cfg.train_steps // 10)),
                tag=own_label,
                show_progress=cfg.show_progress,
            )
        seg.save_pretrained(seg_dir, safe_serialization=True)
        processor.save_pretrained(seg_dir)
        (seg_dir / "train_log.json").write_text(json.dumps(train_log, indent=2))
        key_file.write_text(json.dumps(cfg.training_key(), indent=2))
        for stale in (out / "ious").glob("*.npy") if (out / "ious").is_dir() else []:
            stale.unlink()
    train_seconds = time.perf_counter() - started
    (out / "ious").mkdir(exist_ok=True)
    per_encoder: dict[str, dict[str, np.ndarray]] = {}
    for label, name in [(own_label, None), *donors.items()]:
        files = {(kind, part): out / "ious" / f"{label}.{kind}.{part}.npy" for kind in evals for part in SCORES}
        stamp_file, stamp = out / "ious" / f"{label}.json", _checkpoint_stamp(name or trained_with, evals)
        if (
            not cfg.fresh
            and all(f.is_file() for f in files.values())
            and stamp_file.is_file()
            and json.loads(stamp_file.read_text()) == stamp
        ):
            per_encoder[label] = {kind: {part: np.load(files[kind, part]) for part in SCORES} for kind in evals}
            continue
        if name is not None:
            swap_text_tower(seg, name, name)
        per_encoder[label] = {}
        for kind, samples in evals.items():
            scores = score_segmenter(seg, cache, samples, masks, label, cfg.batch_size, cfg.show_progress)
            for part in SCORES:
                np.save(files[kind, part], scores[part])
            per_encoder[label][kind] = scores
        stamp_file.write_text(json.dumps(stamp))
    encoders = {}
    for label, scores in per_encoder.items():
        entry = {
            kind: summarize(v["iou"], cfg.bootstrap, cfg.seed, v["pointing"], v["rivals"]) for kind, v in scores.items()
        }
        entry["path"] = donors.get(label, trained_with)
        entry["trained_with"] = label == own_label
        if label != own_label:
            ref = per_encoder[own_label]
            for kind in ("negated", "affirmative"):
                entry[f"{kind}_delta"] = paired_delta(scores[kind]["iou"], ref[kind]["iou"], cfg.bootstrap, cfg.seed)
            entry["affirmative_ratio"] = entry["affirmative"]["miou"] / max(ref["affirmative"]["iou"].mean(), 1e-12)
        encoders[label] = entry
    blind = {kind: summarize(text_blind_ious(v, masks), cfg.bootstrap, cfg.seed) for kind, v in evals.items()}
    results = {
        "version": RESULTS_VERSION,
        "data": "scene world" if cfg.world_dir else "RefCOCOg",
        "text_blind": blind,
        "trained_with": trained_with,
        "eval_split": cfg.eval_split,
        "train_expressions": len(train),
        "train_counts": train_counts,
        "eval_counts": eval_counts,
        "train_log": train_log,
        "seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(train_seconds, 1),
        "config": asdict(cfg),
        "encoders": encoders,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(segmentation_table(results))
    return results


def run_segment_stage(
    out_dir: str | os.PathLike,
    world_dir: str | os.PathLike,
    trained_with: str | os.PathLike,
    encoders: Mapping[str, str | os.PathLike],
    train_steps: int = 1500,
    threads: int | None = None,
    show_progress: bool = True,
    **options,
) -> dict:
    """The demo's stage: decoder trained on ``trained_with``'s towers, then every ``encoders`` text tower swapped in.

    Cached in ``out_dir`` (segmenter + per-encoder IoUs; a rerun returns the
    saved results, a killed run resumes). ``encoders`` maps labels to
    checkpoints (an entry equal to ``trained_with`` is skipped: it is scored anyway). Returns the
    ``results.json`` content.
    """
    cfg = SegmentConfig(
        model=str(trained_with),
        swap=[f"{label}={path}" for label, path in encoders.items() if str(path) != str(trained_with)],
        world_dir=str(world_dir),
        output_dir=str(out_dir),
        train_steps=train_steps,
        threads=threads,
        show_progress=show_progress,
        **options,
    )
    return run_segment(cfg)
