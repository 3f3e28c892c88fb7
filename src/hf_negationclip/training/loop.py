"""THE training loop (Accelerate): one loop for pre-training and fine-tuning, readable top to bottom.

``train_contrastive`` runs optimizer steps over deterministic batches (a
function of seed, epoch and position, so a resumed run sees the same ones),
saves a resumable state every ``save_steps``, evaluates every ``eval_steps``
(validation loss, plus an evaluator callable when given) and keeps the best
trainable weights. Loss terms live in :mod:`.losses`, batches in :mod:`.batch`,
data in :mod:`.data`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .losses import LossWeights, batch_spec, compute_loss

logger = logging.getLogger(__name__)

#: ``evaluate(model) -> {name: float or {"value": float, ...}}``, called on the main process only
ModelEvaluator = Callable[[torch.nn.Module], dict]


# --------------------------------------------------------------------------- checkpointing


def _latest_state(checkpoints: Path) -> tuple[Path, int] | None:
    """The newest complete training state (a ``done`` marker is written after each save)."""
    done = sorted((int(p.parent.name.split("_")[1]), p.parent) for p in checkpoints.glob("step_*/done"))
    return (done[-1][1], done[-1][0]) if done else None


def _save_state(accelerator, checkpoints: Path, step: int, keep: int = 2) -> None:
    # explicit folder names: with accelerate's automatic_checkpoint_naming, the first save_state after a resume
    # fails ("already exists"): the iteration counter restarts at 0 in the new process
    target = checkpoints / f"step_{step:08d}"
    accelerator.save_state(str(target))
    if accelerator.is_main_process:
        (target / "done").write_text(str(step))
        for old in sorted(checkpoints.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def _save_best(model, folder: Path, step: int, score: float) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(_trainable_state(model), str(folder / "trainable.safetensors"))
    (folder / "best.json").write_text(json.dumps({"step": step, "score": score}))


def _restore_best(model, folder: Path) -> int | None:
    """Load the best trainable weights back into ``model``; returns their step (None when there are none)."""
    if not (folder / "best.json").is_file():
        return None
    from safetensors.torch import load_file

    best = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in best.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    return json.loads((folder / "best.json").read_text())["step"]


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def validation_loss(model, data, batch_size: int, seed: int, weights: LossWeights) -> float:
    """Mean loss over the validation images (fixed order and captions: epoch 0), without gathering."""
    was_training = model.training
    model.eval()
    order, total, count = data.order(0, seed), 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(order) - 1, batch_size):
        idx = order[start : start + batch_size].tolist()
        if len(idx) < 2:
            break
        total += compute_loss(model, data.batch(idx, 0, seed).to(device), weights)[1]["loss"].item() * len(idx)
        count += len(idx)
    model.train(was_training)
    return total / max(count, 1)


def _metric_value(metrics: dict, name: str) -> float:
    if name not in metrics:
        raise KeyError(f"best_metric {name!r} is not among the evaluation metrics {sorted(metrics)}")
    value = metrics[name]
    return float(value["value"] if isinstance(value, dict) else value)


def _evaluate(model, val_data, evaluator, cfg, weights: LossWeights) -> dict:
    row = {}
    if val_data is not None and len(val_data) >= 2:
        row["val_loss"] = round(validation_loss(model, val_data, cfg.batch_size, cfg.seed, weights), 5)
    if evaluator is not None:
        row.update(
            {
                k: round(_metric_value({k: v}, k), 5)
                for k, v in evaluator(model).items()
                if isinstance(v, (int, float)) or (isinstance(v, dict) and "value" in v)
            }
        )
    return row


def _trackers() -> list[str] | None:
    return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else None


# --------------------------------------------------------------------------- the loop


def train_contrastive(
    model,
    data,
    cfg,
    weights: LossWeights | None = None,
    val_data=None,
    evaluator: ModelEvaluator | None = None,
    eval_steps: int = 0,
    best_metric: str = "",
) -> list[dict]:
    """Train ``model`` on ``data`` with the weighted losses; returns the logged rows (train and eval).

    ``cfg`` carries the loop options (``TrainingConfig``). ``batch_size`` is
    the global contrastive batch of one forward pass; an optimizer step takes
    ``gradient_accumulation_steps`` of them. With ``val_data`` or an
    ``evaluator``, the model is evaluated at the start, every ``eval_steps``
    (0: at the end only) and at the end; with ``best_metric`` set (names
    ending in "loss": lower is better), the best trainable weights are put
    back into ``model`` at the end.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    out = Path(cfg.output_dir)
    accum = cfg.gradient_accumulation_steps
    from accelerate.state import AcceleratorState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # one process: let runs in one session differ in precision
        AcceleratorState._reset_state()
    # step_scheduler_with_optimizer=False: the schedule counts global optimizer steps; accelerate's default
    # steps it once per process per step (it assumes per-process epochs), which ends a 2-process cosine early
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=_trackers(),
        project_dir=str(out),
        step_scheduler_with_optimizer=False,
    )
    set_seed(cfg.seed)
    weights = weights or LossWeights()
    for dataset in (data, val_data):  # build only what a weighted term reads (tokenising unused texts costs time)
        if dataset is not None:
            dataset.spec = batch_spec(weights, dataset.available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world or cfg.batch_size // world < 2:
        raise ValueError(f"batch_size {cfg.batch_size} must split into >= 2 images on each of {world} processes")
    per_process = cfg.batch_size // world
    group = cfg.batch_size if cfg.group_by_length else 0  # batches of similar text lengths
    micro_per_epoch = len(data) // cfg.batch_size
    if micro_per_epoch < accum:
        raise ValueError(f"{len(data)} images are fewer than one step of {accum} x {cfg.batch_size}")
    total = cfg.epochs * micro_per_epoch // accum if cfg.max_steps < 0 else cfg.max_steps
    unwrapped = model
    if cfg.gradient_checkpointing:
        unwrapped.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    # fused: one kernel per step instead of a dozen per tensor (a quarter of a small text-tower step on CPU)
    fused = accelerator.device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    out.mkdir(parents=True, exist_ok=True)
    checkpoints, log_path, best_dir = out / "checkpoints", out / "train_log.jsonl", out / "best"
    start, history = 0, []
    latest = _latest_state(checkpoints) if cfg.resume else None
    if latest is not None:
        accelerator.load_state(str(latest[0]))
        start = latest[1]
        rows = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
        history = [row for row in rows if row["step"] <= start]  # rows after the saved state are redone
        if accelerator.is_main_process:
            log_path.write_text("".join(json.dumps(row) + "\n" for row in history))
        logger.info("resumed from %s (step %d of %d)", latest[0], start, total)
    elif accelerator.is_main_process:
        log_path.unlink(missing_ok=True)
        shutil.rmtree(best_dir, ignore_errors=True)
    best_metric = best_metric if (val_data is not None or evaluator is not None) else ""
    lower_is_better = best_metric.endswith("loss")
    best_score = (
        json.loads((best_dir / "best.json").read_text())["score"] if (best_dir / "best.json").is_file() else None
    )
    if accelerator.trackers:
        accelerator.init_trackers(
            "train", config={k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str, bool))}
        )

    def log(row: dict) -> None:
        history.append(row)
        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        if accelerator.is_main_process:
            with log_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    evaluating = val_data is not None or evaluator is not None
    if evaluating and start == 0:  # the starting point, for the history and plot (never kept as "best")
        if accelerator.is_main_process:
            log({"step": 0, **_evaluate(accelerator.unwrap_model(model), val_data, evaluator, cfg, weights)})
        accelerator.wait_for_everyone()
    model.train()
    bar = tqdm(
        total=total,
        initial=start,
        desc="training",
        unit="step",
        disable=not (cfg.show_progress and accelerator.is_main_process),
    )
    t0 = time.time()
    for step in range(start, total):
        sums: dict[str, float] = {}
        for a in range(accum):
            epoch, k = divmod(step * accum + a, micro_per_epoch)
            global_batch = data.order(epoch, cfg.seed, group)[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            indices = global_batch[rank * per_process : (rank + 1) * per_process].tolist()
            batch = data.batch(indices, epoch, cfg.seed).to(accelerator.device)
            # DDP syncs gradients on the last micro-batch of the step only
            sync = accelerator.no_sync(model) if a < accum - 1 else contextlib.nullcontext()
            with sync, accelerator.autocast():
                loss, parts = compute_loss(model, batch, weights, accelerator)
                accelerator.backward(loss / accum)
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + accelerator.reduce(value, "mean").item() / accum
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        done = step + 1
        if done % max(cfg.log_steps, 1) == 0 or done == total:
            row = {
                "step": done,
                "epoch": round(done * accum / micro_per_epoch, 3),
                **{name: round(value, 4) for name, value in sums.items()},
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.time() - t0, 1),
            }
            log(row)
            bar.set_postfix(loss=row["loss"])
        if evaluating and (done == total or (eval_steps and done % eval_steps == 0)):
            if accelerator.is_main_process:
                row = {"step": done, **_evaluate(accelerator.unwrap_model(model), val_data, evaluator, cfg, weights)}
                log(row)
                if best_metric:
                    score = _metric_value(row, best_metric)
                    if best_score is None or (score < best_score if lower_is_better else score > best_score):
                        best_score = score
                        _save_best(accelerator.unwrap_model(model), best_dir, done, score)
            accelerator.wait_for_everyone()
        if cfg.save_steps and done % cfg.save_steps == 0 and done < total:
            _save_state(accelerator, checkpoints, done)
    bar.close()
    accelerator.wait_for_everyone()
    if best_metric:
        best_step = _restore_best(unwrapped, best_dir)
        logger.info("kept the weights of step %s (best %s %.4f)", best_step, best_metric, best_score)
    accelerator.end_training()
    return history


def plot_history(history: Sequence[dict], path: Path, title: str = "training") -> None:
    """Training loss against step, with validation loss and evaluation metrics when logged, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if "loss" in h]
    evals = [h for h in history if "loss" not in h]
    metrics = sorted({k for h in evals for k in h if k not in ("step", "val_loss")})
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot([h["step"] for h in train], [h["loss"] for h in train], label="train loss")
    if any("val_loss" in h for h in evals):
        ax.plot(
            [h["step"] for h in evals if "val_loss" in h],
            [h["val_loss"] for h in evals if "val_loss" in h],
            "o-",
            label="validation loss",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if metrics:
        ax2 = ax.twinx()
        for name in metrics:
            ax2.plot([h["step"] for h in evals if name in h], [h[name] for h in evals if name in h], "s--", label=name)
        ax2.set_ylabel("metric")
        ax2.legend(loc="upper right", fontsize=7)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
