"""The scene-world model: a tiny text-conditioned pixel-space UNet on a frozen CLIP text tower, trained and sampled."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .text_encoders import load_text_tower
from .threads import _restores_torch_threads

logger = logging.getLogger(__name__)


@dataclass
class T2ITrainConfig:
    """Train a tiny text-conditioned pixel-space diffusion model on a scene world (frozen CLIP text tower)."""

    world_dir: str = field(default="runs/demo/world", metadata={"help": "scene world folder (its train split)"})
    text_encoder: str = field(default="runs/demo/baseline", metadata={"help": "frozen text tower (CLIP checkpoint)"})
    output_dir: str = field(default="runs/t2i", metadata={"help": "unet/, scheduler/, t2i_config.json, log"})
    resolution: int = field(default=32, metadata={"help": "native pixel resolution the UNet works at"})
    channels: str = field(default="32,64,64", metadata={"help": "UNet block_out_channels (comma-separated)"})
    batch_size: int = field(default=16, metadata={"help": "images per step"})
    learning_rate: float = field(default=6e-4, metadata={"help": "AdamW peak learning rate (warm-up + cosine)"})
    max_steps: int = field(default=2000, metadata={"help": "training steps (the cosine schedule's length)"})
    max_minutes: float = field(
        default=0.0, metadata={"help": "stop after this many minutes (0: no limit); the schedule follows time"}
    )
    cond_dropout: float = field(default=0.1, metadata={"help": "share of empty prompts (classifier-free guidance)"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA of the weights that is saved (0: no EMA)"})
    max_images: int = field(default=0, metadata={"help": "use only the first N train images (0: all)"})
    save_minutes: float = field(default=3.0, metadata={"help": "save the (EMA) UNet every N minutes"})
    threads: int = field(default=0, metadata={"help": "torch.set_num_threads (0: leave as is)"})
    seed: int = field(default=0, metadata={"help": "seed of init, batches and noise"})


class PromptEncoder:
    """A frozen CLIP text tower that gives ``(last_hidden_state, attention_mask)`` for prompts."""

    def __init__(self, text_model, tokenizer, max_length: int = 77):
        self.text = text_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def width(self) -> int:
        return self.text.config.hidden_size

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        hidden = self.text(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return hidden, enc["attention_mask"]


def build_unet(cross_attention_dim: int, resolution: int = 32, channels: Sequence[int] = (32, 64, 64)):
    """A native-resolution pixel-space ``UNet2DConditionModel`` with cross-attention below the top level."""
    from diffusers import UNet2DConditionModel

    channels = tuple(int(c) for c in channels)
    if len(channels) < 2 or any(c % 16 for c in channels):
        raise ValueError(f"--channels needs >= 2 multiples of 16, got {channels}")
    if resolution % 2 ** (len(channels) - 1):
        raise ValueError(f"resolution {resolution} must be divisible by {2 ** (len(channels) - 1)}")
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1)
    up = ("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=16,
        norm_num_groups=16,
    )


def _noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)


def load_world_pairs(world_dir: str | os.PathLike, split: str, resolution: int, max_images: int = 0):
    """``(images uint8 [N,3,R,R], captions list[list[str]])`` of a world split, images box-resized to R."""
    from PIL import Image

    from ...io import read_json

    root = Path(world_dir)
    inst = read_json(root / "annotations" / f"instances_{split}.json")
    caps = read_json(root / "annotations" / f"captions_{split}.json")
    by_image: dict[int, list[str]] = {}
    for ann in caps["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"])
    images, captions = [], []
    for img in inst["images"][: max_images or None]:
        if img["id"] not in by_image:
            continue
        path = root / "images" / split / img["file_name"]
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB").resize((resolution, resolution), Image.BOX)))
        captions.append(by_image[img["id"]])
    if not images:
        raise ValueError(f"no captioned images in the {split} split of {root}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), captions


@_restores_torch_threads
def train_t2i(cfg: T2ITrainConfig) -> dict:
    """Train the tiny UNet (epsilon prediction, EMA, warm-up + cosine, time-limited); returns the loss log."""
    from diffusers.training_utils import EMAModel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.max_steps < 1 or cfg.batch_size < 1:
        raise ValueError("--max_steps and --batch_size must be >= 1")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    text, tokenizer = load_text_tower(cfg.text_encoder)
    encoder = PromptEncoder(text, tokenizer)
    images, captions = load_world_pairs(cfg.world_dir, "train", cfg.resolution, cfg.max_images)
    unet = build_unet(encoder.width, cfg.resolution, [int(c) for c in cfg.channels.split(",")])
    noise_scheduler = _noise_scheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=2 / 3) if cfg.ema_decay else None
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "t2i_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    log = (out / "train_log.jsonl").open("w")
    start = last_save = time.time()
    limit = cfg.max_minutes * 60
    warmup = max(1, min(100, cfg.max_steps // 10))
    losses: list[float] = []
    unet.train()
    step = 0
    for step in range(1, cfg.max_steps + 1):
        elapsed = time.time() - start
        progress = max(step / cfg.max_steps, elapsed / limit if limit else 0.0)
        if progress > 1.0:
            break
        lr = cfg.learning_rate * min(step / warmup, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = rng.integers(len(images), size=cfg.batch_size)
        prompts = [captions[i][int(rng.integers(len(captions[i])))] for i in idx]
        prompts = ["" if rng.random() < cfg.cond_dropout else p for p in prompts]
        hidden, mask = encoder(prompts)
        x0 = images[idx].float() / 127.5 - 1.0
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),))
        xt = noise_scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            ema.step(unet.parameters())
        losses.append(loss.item())
        log.write(json.dumps({"step": step, "loss": round(losses[-1], 5), "lr": lr, "s": round(elapsed, 1)}) + "\n")
        if step % 50 == 0:
            log.flush()
            logger.info("step %d loss %.4f (mean of last 50: %.4f) %.0f s", step, loss, np.mean(losses[-50:]), elapsed)
        if cfg.save_minutes and time.time() - last_save > cfg.save_minutes * 60:
            _save_unet(unet, ema, noise_scheduler, out)
            last_save = time.time()
    log.close()
    _save_unet(unet, ema, noise_scheduler, out)
    result = {"steps": len(losses), "seconds": round(time.time() - start, 1), "losses": losses, "output_dir": str(out)}
    (out / "train_summary.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "losses"} | {"final_loss_50": _tail_mean(losses)}) + "\n"
    )
    return result


def _tail_mean(losses: list[float], n: int = 50) -> float:
    return round(float(np.mean(losses[-n:])), 5) if losses else float("nan")


def _save_unet(unet, ema, noise_scheduler, out: Path) -> None:
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    unet.save_pretrained(out / "unet", safe_serialization=True)
    if ema is not None:
        ema.restore(unet.parameters())
    noise_scheduler.save_pretrained(out / "scheduler")


@torch.no_grad()
def sample_images(
    unet,
    encoder: PromptEncoder,
    prompts: Sequence[str],
    seeds: Sequence[int],
    guidance: float = 4.0,
    steps: int = 20,
    scheduler_config: dict | None = None,
    batch_size: int = 50,
) -> np.ndarray:
    """DDIM samples with classifier-free guidance (the empty prompt as the unconditional one); uint8 [N,R,R,3].

    Each image starts from the noise of its own seed, so two encoders get the same starting noise per prompt.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(scheduler_config or _noise_scheduler().config)
    res = unet.config.sample_size
    unet.eval()
    out = []
    for lo in range(0, len(prompts), batch_size):
        batch, batch_seeds = list(prompts[lo : lo + batch_size]), seeds[lo : lo + batch_size]
        hidden, mask = encoder(batch + [""] * len(batch))
        x = torch.stack(
            [torch.randn(3, res, res, generator=torch.Generator().manual_seed(int(s))) for s in batch_seeds]
        )
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
            cond, uncond = eps.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)
