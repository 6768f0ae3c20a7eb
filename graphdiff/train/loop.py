"""Training a Diffuser model on a task (classification, retrieval or masked LM): AdamW with
warm-up and linear decay, gradient clipping, periodic validation, ``metrics.jsonl``, atomic
checkpoints and exact resumption.

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
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from graphdiff.checks import check_int, is_real
from graphdiff.io import atomic_write
from graphdiff.models import (
    MODEL_PRESETS,
    DiffuserConfig,
    init_config,
    initialize_encoder,
    preset_config,
)
from graphdiff.patterns import parse_pattern
from graphdiff.tasks import CLS, PAD, TASKS, TaskDataset, get_task
from graphdiff.train.checkpoint import RUN_KEYS, load_checkpoint, save_checkpoint, save_json
from graphdiff.train.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_sum,
    init_distributed,
    shutdown,
)
from graphdiff.train.memory import release_free_memory
from graphdiff.train.objectives import Objective, collate_of, loss_and_counts, objective_of
from graphdiff.train.pretrained_encoder import load_encoder

# Validation uses the split's first examples: five validations of a 50-step ListOps run on the
# whole 2,000-example split took 65 of its 87 seconds. A validation example costs about 0.35 to
# 0.47 of a training one (forward only), so five batches of 32 keep the five validations of
# such a run under a fifth of its time.
DEFAULT_EVAL_EXAMPLES = 160
# What a run writes in its ``out`` directory.
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")
PRECISIONS = ("fp32", "bf16")
# The arguments that define a run's trajectory: resuming it with other values is refused.
RUN_ARGS = (
    "precision",
    "task",
    "preset",
    "init",
    "pattern",
    "hops",
    "alpha",
    "model_args",
    "task_args",
    "max_steps",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup",
    "clip",
    "seed",
)


@dataclasses.dataclass
class TrainArgs:
    """A training run, as ``graphdiff train`` takes it.

    Args:
        task: a name of :data:`graphdiff.tasks.TASKS`.
        preset: a model preset (``tiny``, ``small``, ``paper_base``); not used with ``init``.
        out: the run directory: ``config.json``, ``metrics.jsonl``, ``last.pt``, ``best.pt``.
        init: start from this pretrained encoder (:func:`~graphdiff.train.load_encoder`: a
            checkpoint, a run folder's ``best.pt`` or a ``save_pretrained`` directory) under a
            fresh task head. Its configuration replaces the preset's
            (:func:`~graphdiff.models.init_config`: its architecture stays, the task sets
            ``max_len`` and the classes, learned positions grow by copying). A resumed run
            continues from its ``last.pt`` and does not read it.
        pattern: attention pattern expression; overrides the task's pattern, which overrides
            the preset's.
        hops, alpha: the diffusion's K and teleport probability (over the preset's).
        model_args: other :class:`~graphdiff.models.DiffuserConfig` fields; these win over
            ``pattern``, ``hops`` and ``alpha``.
        task_args: the task constructor's arguments.
        data_dir: the task's files, where it reads any.
        max_steps, epochs: the run's length; exactly one of them (``epochs`` may be
            fractional: ``ceil(epochs * steps per epoch)`` steps).
        batch_size: the global batch, divided evenly among the processes.
        lr, weight_decay: AdamW's (no decay on biases and LayerNorm weights).
        warmup: the fraction of the steps with a linear warm-up; then linear decay to 0.
        clip: gradient norm clipping; 0 turns it off.
        seed: the model's initialisation, the data order and dropout.
        eval_every: steps between validations; default: every epoch or every fifth of the
            run, whichever comes sooner (and always at the last step).
        log_every: steps between training-loss lines of ``metrics.jsonl``.
        stop_after: leave after this many steps of this call (continue with ``resume``).
        eval_examples: the validation examples each evaluation uses (the split's first);
            ``None``: the whole split.
        resume: continue the run in ``out`` from ``last.pt``, with the same arguments; a
            finished run is not extended.
        overwrite: replace the run in ``out``; without it an existing run is refused.
        grad_checkpoint: recompute each layer in the backward pass
            (``DiffuserConfig.gradient_checkpointing``): less memory, the same gradients.
        precision: ``"fp32"``, or ``"bf16"`` for the training forward pass under bfloat16
            autocast (the sparse kernels compute in float32 inside; evaluation stays fp32).
        workers: DataLoader worker processes.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar.
    """

    task: str = "multihop"
    preset: str = "tiny"
    out: str = "runs/train"
    init: Optional[str] = None
    pattern: Optional[str] = None
    hops: Optional[int] = None
    alpha: Optional[float] = None
    model_args: Dict[str, Any] = dataclasses.field(default_factory=dict)
    task_args: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data_dir: Optional[str] = None
    max_steps: Optional[int] = None
    epochs: Optional[float] = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip: float = 1.0
    seed: int = 0
    eval_every: Optional[int] = None
    log_every: int = 10
    stop_after: Optional[int] = None
    eval_examples: Optional[int] = DEFAULT_EVAL_EXAMPLES
    resume: bool = False
    overwrite: bool = False
    grad_checkpoint: bool = False
    precision: str = "fp32"
    workers: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of max_steps and epochs")
        for name in (
            "max_steps",
            "batch_size",
            "log_every",
            "eval_every",
            "stop_after",
            "eval_examples",
            "workers",
            "seed",
        ):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=0 if name in ("workers", "seed") else 1)
        for name, positive in (
            ("epochs", True),
            ("lr", True),
            ("weight_decay", False),
            ("clip", False),
        ):
            value = getattr(self, name)
            valid = is_real(value) and (value > 0 if positive else value >= 0)
            if value is not None and not valid:
                raise ValueError(
                    f"{name} must be a number {'>' if positive else '>='} 0, got {value!r}"
                )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.resume and self.overwrite:
            raise ValueError(
                "give at most one of resume (continue the run in out) and overwrite (replace it)"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        # Paths may come as pathlib.Path; config.json and the checkpoint store plain strings.
        self.out = os.fspath(self.out)
        self.data_dir = None if self.data_dir is None else os.fspath(self.data_dir)
        self.init = None if self.init is None else os.fspath(self.init)
        # Cheap name checks first, before any data is generated or read.
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(sorted(TASKS))}")
        if self.preset not in MODEL_PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}; valid presets: {', '.join(MODEL_PRESETS)}"
            )
        if self.pattern is not None:
            parse_pattern(self.pattern)


def build_task(
    task: str, split: str, task_args: Dict[str, Any], data_dir: Optional[str]
) -> TaskDataset:
    kwargs = dict(task_args)
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    return get_task(task, split, **kwargs)


def build_config(
    args: TrainArgs, train_set: TaskDataset, pretrained: Optional[DiffuserConfig] = None
) -> DiffuserConfig:
    """The preset's config with the task's sizes; then the pattern (``args.pattern`` over the
    task's), ``hops`` and ``alpha``, and last ``model_args``, each over what came before.

    With the ``pretrained`` encoder's config (``args.init``), that config takes the preset's
    place: :func:`~graphdiff.models.init_config` keeps its architecture and refuses
    ``model_args`` that change it."""
    overrides: Dict[str, Any] = dict(
        vocab_size=train_set.vocab_size,
        num_classes=train_set.num_classes,
        max_len=train_set.max_len,
    )
    suggested = getattr(train_set, "pattern", None)  # a task may know the pattern it is built for
    if args.pattern is not None or suggested is not None:
        overrides["pattern"] = args.pattern if args.pattern is not None else repr(suggested)
    overrides.update(
        {name: getattr(args, name) for name in ("hops", "alpha") if getattr(args, name) is not None}
    )
    # Always set: a run's flag decides, not the value a pretrained encoder was trained with.
    overrides["gradient_checkpointing"] = args.grad_checkpoint
    overrides.update(args.model_args)
    if pretrained is None:
        return preset_config(args.preset, **overrides)
    if pretrained.pad_token_id != PAD:
        raise ValueError(
            f"--init: the encoder pads with token id {pretrained.pad_token_id}, but graphdiff's "
            f"tasks pad with {PAD} and put CLS at {CLS} (a converted RoBERTa keeps its own "
            "vocabulary): start task runs from an encoder trained on graphdiff's tokens, such "
            "as an mlm run"
        )
    return init_config(pretrained, **overrides)


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    r"""The lr multiplier after ``step`` optimiser steps: linear warm-up to 1, then linear decay
    to 0 at ``total``.

    .. math::
        f(s) = \frac{s + 1}{w} \text{ for } s < w, \qquad
        f(s) = \max\left(0, \frac{T - s}{\max(1, T - w)}\right) \text{ otherwise}

    with :math:`w` = ``warmup_steps`` and :math:`T` = ``total``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def make_optimizer(model: nn.Module, args: TrainArgs) -> torch.optim.Optimizer:
    """AdamW in torch's fused form: one kernel per parameter group and step, where torch's
    default makes several passes over the parameters and their state (per parameter on the
    CPU, ``foreach`` on CUDA). A resumed run keeps the form its checkpoint was written with
    (``load_state_dict`` restores it), so that it continues exactly."""
    # As in BERT/RoBERTa: no weight decay on biases and LayerNorm weights.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, fused=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
    truncate: bool = False,
) -> Dict[str, float]:
    """The validation metrics of ``model`` on ``dataset`` under the dataset's objective
    (:mod:`graphdiff.train.objectives`): loss per prediction, accuracy and examples, and for
    masked LM ``bpc`` and ``masked_tokens``. ``truncate`` cuts sequences longer than the
    model's ``max_len`` instead of refusing them."""
    model.eval()
    objective = objective_of(dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_of(dataset),
        num_workers=workers,
        generator=torch.Generator(),
    )  # own generator: leave the global RNG alone
    loss_sum, correct, predictions, examples = 0.0, 0, 0, 0
    for batch in loader:
        batch = [part.to(device) for part in batch]
        batch_loss, batch_correct, batch_predictions = loss_and_counts(
            objective, model, batch, truncate
        )
        loss_sum += float(batch_loss)
        correct += batch_correct
        predictions += batch_predictions
        examples += batch[0].size(0)
    return objective.summarize(loss_sum, correct, predictions, examples)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, consistent with the checkpoint on resume."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (by a run that died after its last checkpoint)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as handle:
            lines = handle.readlines()
        kept = [line for line in lines if self._step_of(line) <= step]
        if len(kept) < len(lines):
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


def _batches(
    dataset: TaskDataset,
    sampler: DistributedSampler,
    epoch: int,
    first: int,
    per_process: int,
    steps: int,
    workers: int,
) -> Iterator:
    """This process's batches ``first .. steps - 1`` of ``epoch``, in the sampler's order."""
    sampler.set_epoch(epoch)
    indices = list(sampler)[first * per_process : steps * per_process]
    dataset.set_epoch(epoch)  # a task that draws per epoch (masked LM's masks) draws this one's
    # DataLoader draws a base seed from its generator: a private one keeps the global RNG (and so
    # dropout) identical whether or not a run was interrupted here.
    return iter(
        DataLoader(
            Subset(dataset, indices),
            batch_size=per_process,
            collate_fn=collate_of(dataset),
            num_workers=workers,
            generator=torch.Generator(),
        )
    )


def rng_states(context: DistributedContext) -> Dict[str, torch.Tensor]:
    """This process's random number generator states (CPU, and its GPU when it has one)."""
    states = {"cpu": torch.get_rng_state()}
    if context.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(context.device)
    return states


def restore_rng_states(saved: Any, context: DistributedContext) -> None:
    """Restore this process's states from a checkpoint's list (one entry per process). A run
    resumed on a different number of processes cannot be exact: each process takes the saved
    states of ``rank % saved processes``."""
    if len(saved) != context.world_size:
        warnings.warn(
            f"resuming on {context.world_size} processes a run saved on {len(saved)}: "
            "the data order and dropout will differ from an uninterrupted run",
            stacklevel=2,
        )
    states = saved[context.rank % len(saved)]
    torch.set_rng_state(states["cpu"])
    if context.device.type == "cuda":
        if "cuda" in states:
            torch.cuda.set_rng_state(states["cuda"], context.device)
        elif context.is_main:
            warnings.warn(
                "resuming on a GPU a run saved without one: GPU dropout will differ "
                "from an uninterrupted run",
                stacklevel=2,
            )


@dataclasses.dataclass
class TrainResult:
    """What a run ends with.

    Args:
        metrics: the evaluation at the last step (validation metrics on the main process only);
            a run left with ``stop_after`` between evaluations gives
            ``{"step", "epoch", "stopped": True}``.
        model: the trained model (not the best checkpoint).
        already_finished: ``resume`` found the run finished: nothing was trained, and
            ``metrics`` is its final evaluation.
    """

    metrics: Dict[str, Any]
    model: nn.Module
    already_finished: bool = False


@dataclasses.dataclass
class TrainingRun:
    """A run between two steps: what :func:`setup_run` builds and :func:`fit` advances."""

    args: TrainArgs
    context: DistributedContext
    config: DiffuserConfig
    objective: Objective
    model: nn.Module  # the objective's model class
    trained: nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_set: TaskDataset
    val_set: Dataset  # the validation examples every evaluation uses (capped by eval_examples)
    sampler: DistributedSampler
    metrics: MetricsLog
    per_process: int  # examples per process and step
    steps_per_epoch: int
    total: int  # steps of the whole run
    eval_every: int
    step: int = 0
    best: float = -math.inf  # best validation score so far (Objective.score: higher is better)
    window_loss: float = 0.0  # training loss summed since the last evaluation
    window_steps: int = 0
    tokens_seen: int = 0  # this process's training tokens since the last evaluation
    train_seconds: float = 0.0  # time in training steps since the last evaluation
    result: Dict[str, Any] = dataclasses.field(default_factory=dict)
    already_finished: bool = False

    @property
    def last_path(self) -> str:
        return os.path.join(self.args.out, "last.pt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.args.out, "best.pt")


def train(args: TrainArgs) -> TrainResult:
    """Run (or resume) a training job described by ``args``."""
    context = init_distributed(args.device)
    try:
        return fit(setup_run(args, context))
    finally:
        shutdown(context)


def check_out_dir(args: TrainArgs) -> None:
    """Refuse to start over a run without ``overwrite``, to resume where there is none, and to
    use a folder whose files are not a run's (``overwrite`` would delete them)."""
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file, not a run folder")
    config_path = os.path.join(args.out, "config.json")
    if os.path.exists(config_path) and not is_run_config(config_path):
        raise ValueError(
            f"{args.out} holds a config.json that is not a graphdiff run's; choose another --out"
        )
    present = [name for name in RUN_FILES if os.path.exists(os.path.join(args.out, name))]
    if args.resume and "last.pt" not in present:
        start = "--overwrite" if present else "no --resume"
        raise FileNotFoundError(
            f"--resume: nothing to resume in {args.out} (no last.pt); "
            f"start a new run there with {start}"
        )
    if present and not (args.resume or args.overwrite):
        raise ValueError(
            f"{args.out} holds a run ({', '.join(present)}); continue it with "
            "--resume, replace it with --overwrite, or choose another --out"
        )


def is_run_config(path: str) -> bool:
    """Whether ``path`` is the config.json of a training run (``{"model": ..., "train": ...}``)."""
    try:
        with open(path) as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"model", "train"} <= saved.keys()


def check_same_run(
    args: TrainArgs, saved: Dict[str, Any], step: int, total: int, steps_per_epoch: int
) -> None:
    """Refuse to resume a run with arguments that change its trajectory (one line, all fields).

    Args:
        args: the arguments given now, making a run of ``total`` steps.
        saved: the saved run's arguments; ``step`` is where it stopped.
        steps_per_epoch: the task's, the same for both when ``task_args`` are.
    """
    given = dataclasses.asdict(args)
    differences = [name for name in RUN_ARGS if saved.get(name) != given[name]]
    if not differences:
        return
    listed = "; ".join(
        f"{name}: {saved.get(name)!r} in the run, {given[name]!r} now" for name in differences
    )
    saved_total = (
        saved["max_steps"]
        if saved["max_steps"] is not None
        else math.ceil(saved["epochs"] * steps_per_epoch)
    )
    if step >= saved_total and total > saved_total and set(differences) <= {"max_steps", "epochs"}:
        raise ValueError(
            f"--resume: the run in {args.out} finished its {saved_total} steps ({listed}), and "
            "a finished run is not extended: its learning rate decayed to 0, and a longer "
            "schedule would restart the decay mid-run; train a new run with another --out or "
            "--overwrite"
        )
    raise ValueError(
        f"--resume: the run in {args.out} was trained with other arguments "
        f"({listed}); resume it with its own, or train a new run with another --out "
        "or --overwrite"
    )


@dataclasses.dataclass
class RunPlan:
    """A run whose arguments, data, ``out`` folder and saved state :func:`check_run` found
    valid, before anything is built or written."""

    args: TrainArgs
    context: DistributedContext
    train_set: TaskDataset
    val_set: Dataset
    config: DiffuserConfig
    steps_per_epoch: int
    total: int
    saved: Optional[Dict[str, Any]]  # the last.pt of a resumed run
    # The encoder of args.init (load_encoder's config and weights), unless the run is resumed.
    encoder: Optional[Tuple[DiffuserConfig, Dict[str, torch.Tensor]]] = None


def check_run(args: TrainArgs, context: DistributedContext) -> RunPlan:
    """Every check of a run's arguments, ``out`` folder, data and (for ``resume``) its
    checkpoint, before anything is built or written.

    Raises:
        ValueError, TypeError or FileNotFoundError: naming what is wrong (the errors that
            ``graphdiff train`` reports in one line).
    """
    if args.batch_size % context.world_size:
        raise ValueError(
            f"batch_size={args.batch_size} must be divisible by the {context.world_size} processes"
        )
    check_out_dir(args)
    # A resumed run's last.pt holds the weights (and its config the encoder's architecture).
    encoder = load_encoder(args.init) if args.init is not None and not args.resume else None
    train_set = build_task(args.task, "train", args.task_args, args.data_dir)
    val_set = build_task(args.task, "val", args.task_args, args.data_dir)
    if args.eval_examples is not None and args.eval_examples < len(val_set):
        val_set = Subset(val_set, range(args.eval_examples))
    steps_per_epoch = len(train_set) // args.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split has {len(train_set)} examples, fewer than one batch "
            f"of {args.batch_size}"
        )
    total = (
        args.max_steps if args.max_steps is not None else math.ceil(args.epochs * steps_per_epoch)
    )
    saved = None
    if args.resume:
        saved = load_checkpoint(os.path.join(args.out, "last.pt"), RUN_KEYS)
        check_same_run(args, saved["train"], saved["step"], total, steps_per_epoch)
    pretrained = None if encoder is None else encoder[0]
    if args.init is not None and saved is not None:
        # The run's own config has the encoder's architecture; init_config gives it back, with
        # what a resumed run may change (gradient checkpointing).
        pretrained = DiffuserConfig.from_dict(saved["config"])
    config = build_config(args, train_set, pretrained)
    return RunPlan(
        args, context, train_set, val_set, config, steps_per_epoch, total, saved, encoder
    )


def build_run(plan: RunPlan) -> TrainingRun:
    """The model, optimiser and schedule of a checked run, its saved state restored (or its
    ``out`` folder started): what :func:`fit` advances."""
    args, context, total = plan.args, plan.context, plan.total
    torch.manual_seed(args.seed)
    objective = objective_of(plan.train_set)
    model = objective.model_class(plan.config).to(context.device)
    if plan.encoder is not None:  # after the seed: the head is the run's fresh one
        initialize_encoder(model, *plan.encoder)
    optimizer = make_optimizer(model, args)
    warmup_steps = int(args.warmup * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup_steps)
    )
    run = TrainingRun(
        args=args,
        context=context,
        config=plan.config,
        objective=objective,
        model=model,
        trained=DistributedDataParallel(model) if context.enabled else model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_set=plan.train_set,
        val_set=plan.val_set,
        sampler=DistributedSampler(
            plan.train_set,
            num_replicas=context.world_size,
            rank=context.rank,
            shuffle=True,
            seed=args.seed,
            drop_last=True,
        ),
        metrics=MetricsLog(os.path.join(args.out, "metrics.jsonl"), context.is_main),
        per_process=args.batch_size // context.world_size,
        steps_per_epoch=plan.steps_per_epoch,
        total=total,
        eval_every=args.eval_every or max(1, min(plan.steps_per_epoch, total // 5)),
    )
    if plan.saved is not None:
        restore(run, plan.saved)
    # Every process has checked the directory before the main one writes to it.
    if context.enabled:
        torch.distributed.barrier()
    if context.is_main:
        if args.resume:
            run.metrics.truncate_after(run.step)
        else:
            start_out_dir(run)
    return run


def setup_run(args: TrainArgs, context: DistributedContext) -> TrainingRun:
    """Everything before the first step: :func:`check_run`, then :func:`build_run`."""
    return build_run(check_run(args, context))


def restore(run: TrainingRun, state: Dict[str, Any]) -> None:
    """Load a checked ``last.pt`` into ``run``."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    restore_rng_states(state["rng"], run.context)
    run.step, run.best, run.result = state["step"], state["best"], state["result"]
    run.window_loss, run.window_steps = state["window"]
    run.already_finished = run.step >= run.total


def start_out_dir(run: TrainingRun) -> None:
    """A fresh ``out``: the files of a run it held (``overwrite``) removed, the config written."""
    os.makedirs(run.args.out, exist_ok=True)
    for name in RUN_FILES:
        path = os.path.join(run.args.out, name)
        if os.path.exists(path):
            os.remove(path)
    save_json(
        os.path.join(run.args.out, "config.json"),
        {"model": run.config.to_dict(), "train": dataclasses.asdict(run.args)},
    )


def train_step(run: TrainingRun, batch: Any) -> float:
    """One optimiser step on this process's batch (the task's ``collate`` layout); the loss
    averaged over the processes."""
    batch = [part.to(run.context.device) for part in batch]
    run.trained.train()
    with torch.autocast(
        run.context.device.type, dtype=torch.bfloat16, enabled=run.args.precision == "bf16"
    ):
        logits, targets = run.objective.predict(run.trained, batch)
        loss = F.cross_entropy(logits, targets)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.args.clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.args.clip)
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    return float(all_reduce_sum(loss.detach().clone(), run.context)) / run.context.world_size


def evaluate_and_checkpoint(run: TrainingRun, evaluating: bool) -> None:
    """Validate (when ``evaluating``), log, and save ``last.pt`` (and ``best.pt`` on a new best).

    A step that saves without evaluating is where a ``stop_after`` run leaves; its result says
    so. Every process's RNG state goes into the checkpoint, for exact resumption.
    """
    rng = all_gather_objects(rng_states(run.context), run.context)
    epoch = run.step / run.steps_per_epoch
    if not evaluating:
        run.result = {"step": run.step, "epoch": epoch, "stopped": True}
    else:
        run.result = {
            "step": run.step,
            "epoch": epoch,
            "train_loss": run.window_loss / run.window_steps,
            # Every process's tokens; each process's step time (they wait for each other).
            "tokens_per_second": float(
                all_reduce_sum(torch.tensor(float(run.tokens_seen)), run.context)
            )
            / run.train_seconds,
        }
        run.window_loss, run.window_steps, run.tokens_seen, run.train_seconds = 0.0, 0, 0, 0.0
        if run.context.is_main:
            validation = evaluate(
                run.model, run.val_set, run.per_process, run.context.device, run.args.workers
            )
            run.result.update({f"val_{key}": value for key, value in validation.items()})
            run.metrics.write(run.result)
            score = run.objective.score(run.result)
            if score > run.best:
                run.best = score
                save_checkpoint(run.best_path, checkpoint_state(run, rng))
    if run.context.is_main:
        save_checkpoint(run.last_path, checkpoint_state(run, rng))
    if run.context.enabled:
        torch.distributed.barrier()


def checkpoint_state(run: TrainingRun, rng: List[Dict[str, torch.Tensor]]) -> Dict[str, Any]:
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng,
        "step": run.step,
        "best": run.best,
        "window": (run.window_loss, run.window_steps),
        "result": run.result,
        "config": run.config.to_dict(),
        "model_class": type(run.model).__name__,
        "train": dataclasses.asdict(run.args),
    }


def fit(run: TrainingRun) -> TrainResult:
    """Train from ``run.step`` to the end (or ``stop_after`` steps on), validating every
    ``eval_every`` steps and at the end. ``tokens_per_second`` counts the time of training
    steps only (data loading included; validation and checkpoints not)."""
    if run.already_finished:
        return TrainResult(metrics=run.result, model=run.model, already_finished=True)
    args, context = run.args, run.context
    stop_at = run.total if args.stop_after is None else min(run.total, run.step + args.stop_after)
    bar = tqdm(
        total=run.total,
        initial=run.step,
        desc=f"train {args.task}",
        disable=not (args.progress and context.is_main),
    )
    batches: Optional[Iterator] = None
    while run.step < stop_at:
        started = time.perf_counter()
        if batches is None:
            batches = _batches(
                run.train_set,
                run.sampler,
                run.step // run.steps_per_epoch,
                run.step % run.steps_per_epoch,
                run.per_process,
                run.steps_per_epoch,
                args.workers,
            )
        batch = next(batches)
        loss = train_step(run, batch)  # float(): waits for the device, so the timing is whole
        run.train_seconds += time.perf_counter() - started
        if run.step % run.steps_per_epoch == 0:
            batches = None  # next epoch, next order
        bar.update(1)
        run.window_loss, run.window_steps = run.window_loss + loss, run.window_steps + 1
        run.tokens_seen += run.objective.tokens(batch)
        if run.step % args.log_every == 0:
            run.metrics.write(
                {"step": run.step, "loss": loss, "lr": run.scheduler.get_last_lr()[0]}
            )
            release_free_memory()  # glibc keeps what batches of new lengths free
        evaluating = run.step % run.eval_every == 0 or run.step == run.total
        if evaluating or run.step == stop_at:  # an interrupted run saves where it stopped
            evaluate_and_checkpoint(run, evaluating)
            if evaluating and context.is_main:
                metric = run.objective.selection_metric
                bar.set_postfix(
                    {
                        "loss": f"{run.result['train_loss']:.3f}",
                        f"val_{metric}": f"{run.result[f'val_{metric}']:.3f}",
                    }
                )
    bar.close()
    return TrainResult(metrics=run.result, model=run.model)
