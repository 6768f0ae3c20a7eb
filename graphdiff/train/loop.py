"""Training a Diffuser classifier on a task: AdamW with warm-up and linear decay, gradient
clipping, periodic validation, ``metrics.jsonl``, atomic checkpoints and exact resumption.

Exact resumption: the data order of every epoch is a function of ``(seed, epoch)`` (a
``DistributedSampler``), the position inside the epoch follows from the step counter, and the
checkpoint holds the model, optimiser, scheduler, every process's torch RNG states and the
running training-loss window. A run interrupted after a checkpoint and resumed on as many
processes therefore produces the same ``metrics.jsonl`` as an uninterrupted run (timings aside).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from graphdiff.checks import check_int, is_real
from graphdiff.tasks import TASKS, TaskDataset, collate, get_task
from graphdiff.io import atomic_write
from graphdiff.models import PRESETS, DiffuserConfig, DiffuserForSequenceClassification, preset_config
from graphdiff.patterns import parse_pattern
from graphdiff.train.checkpoint import load_checkpoint, save_checkpoint, save_json
from graphdiff.train.distributed import (
    DistributedContext, all_gather_objects, all_reduce_sum, init_distributed, shutdown,
)


@dataclasses.dataclass
class TrainArgs:
    task: str = "multihop"
    preset: str = "tiny"
    out: str = "runs/train"
    pattern: Optional[str] = None  # overrides the preset's (and the task's suggested) pattern
    hops: Optional[int] = None
    alpha: Optional[float] = None
    model_args: Dict[str, Any] = dataclasses.field(default_factory=dict)  # other DiffuserConfig fields
    task_args: Dict[str, Any] = dataclasses.field(default_factory=dict)  # task constructor arguments
    data_dir: Optional[str] = None
    max_steps: Optional[int] = None  # exactly one of max_steps and epochs
    epochs: Optional[float] = None
    batch_size: int = 32  # global batch, split over the processes
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps with a linear warm-up
    clip: float = 1.0  # gradient norm clipping; 0 turns it off
    seed: int = 0
    eval_every: Optional[int] = None  # steps; default: 5 evaluations per run, at least one per epoch
    log_every: int = 10
    stop_after: Optional[int] = None  # leave cleanly after this many steps of this run (resume later)
    resume: bool = False
    workers: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of max_steps and epochs")
        for name in ("max_steps", "batch_size", "log_every", "eval_every", "stop_after", "workers", "seed"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=0 if name in ("workers", "seed") else 1)
        for name, positive in (("epochs", True), ("lr", True), ("weight_decay", False), ("clip", False)):
            value = getattr(self, name)
            if value is not None and (not is_real(value) or not (value > 0 if positive else value >= 0)):
                raise ValueError(f"{name} must be a number {'>' if positive else '>='} 0, got {value!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        # Paths may come as pathlib.Path; config.json and the checkpoint store plain strings.
        self.out = os.fspath(self.out)
        self.data_dir = None if self.data_dir is None else os.fspath(self.data_dir)
        # Cheap name checks first, before any data is generated or read.
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(sorted(TASKS))}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; valid presets: {', '.join(PRESETS)}")
        if self.pattern is not None:
            parse_pattern(self.pattern)


def build_task(task: str, split: str, task_args: Dict[str, Any], data_dir: Optional[str]) -> TaskDataset:
    kwargs = dict(task_args)
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    return get_task(task, split, **kwargs)


def build_config(args: TrainArgs, train_set: TaskDataset) -> DiffuserConfig:
    overrides: Dict[str, Any] = dict(vocab_size=train_set.vocab_size, num_classes=train_set.num_classes,
                                     max_len=train_set.max_len)
    suggested = getattr(train_set, "pattern", None)  # a task may know the pattern it is built for
    if args.pattern is not None or suggested is not None:
        overrides["pattern"] = args.pattern if args.pattern is not None else repr(suggested)
    overrides.update({name: getattr(args, name) for name in ("hops", "alpha") if getattr(args, name) is not None})
    overrides.update(args.model_args)
    return preset_config(args.preset, **overrides)


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then linear decay to 0 at ``total``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def make_optimizer(model: nn.Module, args: TrainArgs) -> torch.optim.Optimizer:
    # As in BERT/RoBERTa: no weight decay on biases and LayerNorm weights.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TaskDataset, batch_size: int, device: torch.device,
             workers: int = 0, truncate: bool = False) -> Dict[str, float]:
    """Loss, accuracy and number of examples of ``model`` on ``dataset`` (``truncate`` cuts
    sequences longer than the model's ``max_len`` instead of refusing them)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                        generator=torch.Generator())  # own generator: leave the global RNG alone
    loss_sum, correct, count = 0.0, 0, 0
    for tokens, mask, labels in loader:
        tokens, mask, labels = tokens.to(device), mask.to(device), labels.to(device)
        logits = model(tokens, mask, truncate=truncate)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == labels).sum())
        count += labels.numel()
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "examples": count}


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, kept consistent with the checkpoint on resume."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (by a run that died after its last checkpoint)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as handle:
            kept = [line for line in handle if self._step_of(line) <= step]
        atomic_write(self.path, lambda handle: handle.writelines(kept), text=True)

    @staticmethod
    def _step_of(line: str) -> float:
        """The line's step; infinite (dropped) for a line cut short when the run died."""
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            return math.inf

    def write(self, record: Dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def _batches(dataset: TaskDataset, sampler: DistributedSampler, epoch: int, first: int,
             per_process: int, steps: int, workers: int) -> Iterator:
    """This process's batches ``first .. steps - 1`` of ``epoch``, in the sampler's order."""
    sampler.set_epoch(epoch)
    indices = list(sampler)[first * per_process: steps * per_process]
    # DataLoader draws a base seed from its generator: a private one keeps the global RNG (and so
    # dropout) identical whether or not a run was interrupted here.
    return iter(DataLoader(Subset(dataset, indices), batch_size=per_process, collate_fn=collate,
                           num_workers=workers, generator=torch.Generator()))


def rng_states(context: DistributedContext) -> Dict[str, torch.Tensor]:
    """This process's random number generator states (CPU, and its GPU when it has one)."""
    states = {"cpu": torch.get_rng_state()}
    if context.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(context.device)
    return states


def restore_rng_states(saved: Any, context: DistributedContext) -> None:
    """Restore this process's states from a checkpoint's list (one entry per process).

    Checkpoints of earlier versions hold one CPU state for all processes, which is exact only
    for a single process; a run resumed on a different number of processes cannot be exact, and
    each process takes the saved states of ``rank % saved processes``.
    """
    if isinstance(saved, torch.Tensor):  # the first process's state only
        if context.world_size > 1:
            warnings.warn("this checkpoint holds only the first process's RNG state: dropout on "
                          "the others will differ from an uninterrupted run", stacklevel=2)
        saved = [{"cpu": saved}] * context.world_size
    if len(saved) != context.world_size:
        warnings.warn(f"resuming on {context.world_size} processes a run saved on {len(saved)}: "
                      "the data order and dropout will differ from an uninterrupted run", stacklevel=2)
    states = saved[context.rank % len(saved)]
    torch.set_rng_state(states["cpu"])
    if context.device.type == "cuda":
        if "cuda" in states:
            torch.cuda.set_rng_state(states["cuda"], context.device)
        elif context.is_main:
            warnings.warn("resuming on a GPU a run saved without one: GPU dropout will differ "
                          "from an uninterrupted run", stacklevel=2)


@dataclasses.dataclass
class TrainResult:
    # The evaluation at the last step (validation metrics on the main process only); a run
    # left with stop_after between evaluations gives {"step", "epoch", "stopped": True}.
    metrics: Dict[str, Any]
    model: DiffuserForSequenceClassification  # the trained model (not the best checkpoint)


def train(args: TrainArgs) -> TrainResult:
    """Run (or resume) a training job described by ``args``."""
    context = init_distributed(args.device)
    try:
        return _train(args, context)
    finally:
        shutdown(context)


def _train(args: TrainArgs, context: DistributedContext) -> TrainResult:
    if args.batch_size % context.world_size:
        raise ValueError(f"batch_size={args.batch_size} must be divisible by the {context.world_size} processes")
    per_process = args.batch_size // context.world_size
    train_set = build_task(args.task, "train", args.task_args, args.data_dir)
    val_set = build_task(args.task, "val", args.task_args, args.data_dir)
    steps_per_epoch = len(train_set) // args.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_set)} examples, fewer than one batch of {args.batch_size}")
    total = args.max_steps if args.max_steps is not None else math.ceil(args.epochs * steps_per_epoch)
    eval_every = args.eval_every or max(1, min(steps_per_epoch, total // 5))
    config = build_config(args, train_set)

    torch.manual_seed(args.seed)
    model = DiffuserForSequenceClassification(config).to(context.device)
    optimizer = make_optimizer(model, args)
    warmup_steps = int(args.warmup * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup_steps))
    step, best = 0, -1.0
    window_loss, window_steps = 0.0, 0  # training loss since the last evaluation
    last_path, best_path = os.path.join(args.out, "last.pt"), os.path.join(args.out, "best.pt")
    metrics = MetricsLog(os.path.join(args.out, "metrics.jsonl"), context.is_main)
    if args.resume and os.path.exists(last_path):
        state = load_checkpoint(last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"], context)
        step, best = state["step"], state["best"]
        window_loss, window_steps = state.get("window", (0.0, 0))
        metrics.truncate_after(step)
    elif context.is_main:
        os.makedirs(args.out, exist_ok=True)
        if os.path.exists(metrics.path):
            os.remove(metrics.path)
    if context.is_main:
        save_json(os.path.join(args.out, "config.json"), {"model": config.to_dict(), "train": dataclasses.asdict(args)})
    trained = DistributedDataParallel(model) if context.enabled else model
    sampler = DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank,
                                 shuffle=True, seed=args.seed, drop_last=True)

    def checkpoint(path: str, rng: List[Dict[str, torch.Tensor]]) -> None:
        save_checkpoint(path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng, "step": step, "best": best,
            "window": (window_loss, window_steps), "config": config.to_dict(), "train": dataclasses.asdict(args),
        })

    stop_at = total if args.stop_after is None else min(total, step + args.stop_after)
    bar = tqdm(total=total, initial=step, desc=f"train {args.task}", disable=not (args.progress and context.is_main))
    result: Dict[str, Any] = {}
    batches: Optional[Iterator] = None
    tokens_seen, started = 0, time.perf_counter()
    while step < stop_at:
        if batches is None:
            batches = _batches(train_set, sampler, step // steps_per_epoch, step % steps_per_epoch,
                               per_process, steps_per_epoch, args.workers)
        tokens, mask, labels = next(batches)
        trained.train()
        logits = trained(tokens.to(context.device), mask.to(context.device))
        loss = F.cross_entropy(logits, labels.to(context.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        scheduler.step()
        step += 1
        if step % steps_per_epoch == 0:
            batches = None  # next epoch, next order
        bar.update(1)
        global_loss = all_reduce_sum(loss.detach().clone(), context) / context.world_size
        window_loss, window_steps = window_loss + float(global_loss), window_steps + 1
        tokens_seen += int(mask.sum()) * context.world_size
        if step % args.log_every == 0:
            metrics.write({"step": step, "loss": float(global_loss), "lr": scheduler.get_last_lr()[0]})
        evaluating = step % eval_every == 0 or step == total
        saving = evaluating or step == stop_at  # an interrupted run saves where it stopped, unevaluated
        if saving:
            rng = all_gather_objects(rng_states(context), context)  # every process's, for exact resumption
        if saving and not evaluating:
            result = {"step": step, "epoch": step / steps_per_epoch, "stopped": True}
        if evaluating:
            result = {"step": step, "epoch": step / steps_per_epoch, "train_loss": window_loss / window_steps,
                      "tokens_per_second": tokens_seen / (time.perf_counter() - started)}
            window_loss, window_steps, tokens_seen, started = 0.0, 0, 0, time.perf_counter()
            if context.is_main:
                result.update({f"val_{k}": v for k, v in evaluate(model, val_set, per_process, context.device, args.workers).items()})
                metrics.write(result)
                bar.set_postfix(loss=f"{result['train_loss']:.3f}", val_acc=f"{result['val_accuracy']:.3f}")
                if result["val_accuracy"] > best:
                    best = result["val_accuracy"]
                    checkpoint(best_path, rng)
        if saving and context.is_main:
            checkpoint(last_path, rng)
        if saving and context.enabled:
            torch.distributed.barrier()
    bar.close()
    return TrainResult(metrics=result, model=model)
