"""Building a CLIPSeg on a CLIP's towers, swapping another checkpoint's text tower in, and the processor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch


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
    from ...modeling import build_model

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
    import transformers
    from transformers import CLIPSegProcessor

    from ...modeling import CLIP_MEAN, CLIP_STD, load_processor

    # the PIL backend by name where transformers has it (what ViTImageProcessor falls back to, with a warning,
    # when torchvision is not installed), else ViTImageProcessor itself
    vit_processor = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor

    base = load_processor(name_or_path) if name_or_path is not None else load_processor()
    if image_size is None:
        crop = getattr(base.image_processor, "crop_size", None) or {}
        image_size = int(crop.get("height") or 224)
    image_processor = vit_processor(
        size={"height": image_size, "width": image_size}, image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3
    )
    return CLIPSegProcessor(image_processor=image_processor, tokenizer=base.tokenizer)
