"""The training loop: the seed's recipe (SGD + cross-entropy at 224x224, 10 epochs, a test table every 2nd
epoch, a checkpoint every 2nd epoch) with its mistakes fixed.

Read top to bottom: ``train`` is the whole run (data, ``build``, then per epoch ``train_one_epoch``,
``evaluate_split`` on validation and test, the epoch's files), followed by the pieces of the recipe. What a
run writes, and where, is ``runs.RunFolder``. Under torchrun every process runs the same code on its shard
of the images (``distributed.Group``); only the main process writes.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .checkpoint import CheckpointInfo, save_checkpoint
from .config import TrainConfig
from .console import GraspcheckError, describe_error, log, progress
from .data import (DecodedImages, Sample, available_cores, decode_images, default_batch_workers, scan_dataset, split_by_episode,
                   torch_seed, training_batches)
from .distributed import Group, cuda_device_of_this_process, join, leave
from .evaluation import Evaluation, calibrated, evaluate_decoded
from .models import create_model, head_parameters, load_pretrained, model_entry, pretrained_config
from .predict import GraspModel, resolve_device
from .runs import RunFolder
from .transforms import Preprocess


@dataclass
class TrainResult:
    run_dir: Path
    best: Path
    last: Path
    history: list[dict] = field(default_factory=list)
    evaluation: Evaluation | None = None  # of the best checkpoint on the test split (else validation), in test_evaluation/


EpochCallback = Callable[[int, dict], None]


def train(
    data: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    callbacks: list[EpochCallback] | None = None,
    **options,
) -> TrainResult:
    """Train a grasp-success classifier, or resume an interrupted run (``resume=RUN_DIR``).

    options are the fields of TrainConfig (recipe, model, epochs, batch_size, lr, ...): recipe="seed" trains
    the seed notebook's way, other options override the recipe's settings. callbacks are called as
    ``callback(epoch, metrics_row)`` after each epoch's files are written. overwrite allows --out to
    name an existing run folder, which is then replaced.
    """
    if resume is not None:
        folder = RunFolder(Path(resume))
        config, class_names, preprocess, splits, state = folder.read()
    elif data is None:
        raise GraspcheckError("pass a dataset folder to train on, or resume=RUN to continue a run")
    else:
        config = TrainConfig.from_recipe(str(data), **options)
        config.validate()
        class_names, splits = _make_splits(config)
        preprocess, state = preprocess_for(config), None

    with _process_group(config) as (group, device):
        images = decode_splits(splits, preprocess)
        setup = build(config, class_names, preprocess, images["train"].labels, device, group, resuming=state is not None)
        if state is None:
            # Made only once data and model are known to be usable: a failed start leaves nothing.
            folder = _new_folder(setup, images, overwrite)
            history = []
        else:
            history = restore(setup, folder, state)
            log(f"resuming {folder.final} after epoch {len(history)} of {config.epochs}")
        try:
            for epoch in progress(range(len(history) + 1, config.epochs + 1), desc="epochs", unit="epoch"):
                started = time.perf_counter()
                train_loss, running = train_one_epoch(setup, images["train"], epoch)
                row = {"epoch": epoch, "train_loss": train_loss, **_accuracies("train", running)}
                if "val" in images:
                    val = evaluate_split(setup, images["val"])
                    row.update(val_loss=loss_of(setup, val), **_accuracies("val", val), val_balanced_acc=val.balanced_accuracy)
                test = None
                if "test" in images and (epoch % config.test_every == 0 or epoch == config.epochs):
                    test = evaluate_split(setup, images["test"])
                    row.update(**_accuracies("test", test), test_balanced_acc=test.balanced_accuracy)
                row["lr"] = setup.optimizer.param_groups[0]["lr"]  # at the end of the epoch
                row["seconds"] = time.perf_counter() - started
                history.append(row)
                log(_epoch_line(row, config.epochs, class_names))
                if test is not None:
                    log(f"Test after epoch {epoch}:\n  " + test.class_table().replace("\n", "\n  "))
                if group.is_main:
                    keep = epoch % config.save_every == 0 or epoch == config.epochs
                    folder.save_epoch(setup.network, setup.checkpoint_info(epoch, row), history, keep, setup.state())
                for callback in callbacks or []:
                    callback(epoch, row)
            evaluation = None
            if group.is_main:
                evaluation = _finish(setup, images, folder)
                folder.finish()
        except BaseException:
            if group.is_main:
                folder.discard()
            raise
    weights = folder.final / "weights"
    return TrainResult(folder.final, weights / "best.safetensors", weights / "last.safetensors", history, evaluation)


@dataclass
class Setup:
    """What one process trains with: the run's options and data format, its place in the process group, the
    model and everything that updates it."""

    config: TrainConfig
    class_names: tuple[str, str]
    preprocess: Preprocess
    device: torch.device
    group: Group
    network: nn.Module  # the model that is evaluated and saved
    trainer: nn.Module  # the same parameters, wrapped for training: DistributedDataParallel under torchrun, torch.compile if asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    speed: SpeedOptions
    scaler: torch.amp.GradScaler | None
    workers: int  # batch worker processes

    def checkpoint_info(self, epoch: int = 0, row: dict | None = None) -> CheckpointInfo:
        # Timing stays in metrics.csv: in the weights file it would make identical training give different files.
        metrics = {k: v for k, v in (row or {}).items() if v is not None and k != "seconds"}
        return CheckpointInfo(self.config.model, self.preprocess, self.class_names, self.config.threshold, epoch, metrics)

    def model(self) -> GraspModel:
        return GraspModel(self.network, self.checkpoint_info(), self.device)

    def state(self) -> dict:
        """What --resume needs besides the history to continue exactly: model, optimizer, schedule, loss scale."""
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }


def build(config: TrainConfig, class_names: tuple[str, str], preprocess: Preprocess, train_labels: torch.Tensor,
          device: torch.device, group: Group, resuming: bool = False) -> Setup:
    """The model, its training wrappers, optimizer, learning-rate schedule and loss. A new run starts from the
    pretrained (or --weights) weights; a resumed one gets its weights from its saved state (restore)."""
    torch.manual_seed(config.seed)
    network = create_model(config.model, 2, preprocess.size, pretrained=config.pretrained and not resuming).to(device)
    if config.weights and not resuming:
        loaded, total = load_pretrained(network, config.weights)
        log(f"loaded {loaded}/{total} tensors from {config.weights}")
    speed = SpeedOptions.resolve(config.fast, device)
    if speed.channels_last:
        network = network.to(memory_format=torch.channels_last)
    # Trained through DDP when torchrun started several processes, and compiled if asked;
    # evaluated and saved unwrapped (the wrappers share its parameters).
    trainer = network
    if group.size > 1:
        trainer = nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        trainer = torch.compile(trainer)
    optimizer = build_optimizer(network, config)
    steps = config.epochs * _batches_per_epoch(len(group.shard(torch.arange(len(train_labels)))), config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config.schedule, steps, round(config.warmup * steps)))
    weight = class_weights(train_labels).to(device) if config.balance == "loss" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    return Setup(config, class_names, preprocess, device, group, network, trainer, optimizer, scheduler, loss_fn, speed,
                 speed.grad_scaler(device), _batch_workers(config))


# The random streams of an epoch, as keys of data.seed_sequence(seed, epoch, stream, ...).
_ORDER, _DROPOUT, _AUGMENT = 0, 1, 2


def train_one_epoch(setup: Setup, images: DecodedImages, epoch: int) -> tuple[float, Evaluation]:
    """One pass over the training images, this process's shard of them; returns the mean loss and the running
    per-class accuracy, both over the images of all processes."""
    config, group = setup.config, setup.group
    # Seeded per epoch (not once per run), so a resumed run repeats exactly what an uninterrupted one does.
    # The image order is the same in every process (each takes its shard); dropout and augmentation differ.
    torch.manual_seed(torch_seed(config.seed, epoch, _DROPOUT, group.rank))
    order = group.shard(epoch_order(images.labels, config.balance, torch_seed(config.seed, epoch, _ORDER)))
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    batches = batches[: _batches_per_epoch(len(order), config.batch_size)]
    prepared = training_batches(images.pixels, batches, config.augment, torch_seed(config.seed, epoch, _AUGMENT, group.rank),
                                setup.workers, pin_memory=setup.device.type == "cuda")
    train_mode(setup.network, config)
    total_loss, probabilities = 0.0, []
    with cores_left_by(setup.workers, setup.device):
        for batch, pixels in progress(zip(batches, prepared), total=len(batches), desc=f"epoch {epoch}", unit="batch", leave=False):
            x = setup.preprocess.normalize(pixels.to(setup.device, non_blocking=True))
            y = images.labels[batch].to(setup.device)
            logits, loss = train_step(setup.trainer, setup.optimizer, setup.loss_fn, x, y, setup.speed, setup.scaler)
            setup.scheduler.step()
            total_loss += loss.item() * len(batch)
            probabilities.append(torch.softmax(logits, 1)[:, 1].cpu())
    group.sync_buffers(setup.network)
    parts = group.gather((total_loss, torch.cat(batches), torch.cat(probabilities)))
    used = torch.cat([part[1] for part in parts])
    samples = [images.samples[i] for i in used.tolist()]
    running = Evaluation(setup.class_names, samples, torch.cat([part[2] for part in parts]), config.threshold)
    return sum(part[0] for part in parts) / len(used), running


def evaluate_split(setup: Setup, images: DecodedImages) -> Evaluation:
    """The model on the images of a split: each process classifies every size-th image, and the probabilities
    of all processes are put back in order."""
    group = setup.group
    mine = torch.arange(group.rank, len(images), group.size)
    probabilities = torch.empty(len(images))
    for indices, values in group.gather((mine, setup.model().success_probabilities(images.pixels[mine]))):
        probabilities[indices] = values
    return Evaluation(setup.class_names, images.samples, probabilities, setup.config.threshold, len(images.skipped))


def loss_of(setup: Setup, evaluation: Evaluation) -> float:
    """The training loss (class weights, label smoothing) on evaluated images: two-class logits (0, log-odds)
    give back the probabilities under softmax, so the loss needs no second forward pass."""
    p = evaluation.probabilities.clamp(1e-7, 1 - 1e-7)
    logits = torch.stack([torch.zeros_like(p), (p / (1 - p)).log()], dim=1).to(setup.device)
    return float(setup.loss_fn(logits, evaluation.labels.to(setup.device)))


def _finish(setup: Setup, images: dict[str, DecodedImages], folder: RunFolder) -> Evaluation | None:
    """After the last epoch: calibrate the best checkpoint if asked, evaluate it on the test split (else
    the validation split) into test_evaluation/, and write the run's report.html."""
    model = GraspModel.load(folder.best, str(setup.device))
    if setup.config.calibrate:
        model = _calibrate(model, folder.best, images.get("val"))
    split = next((name for name in ("test", "val") if name in images), None)
    if split is None:
        log(f"no validation or test split to evaluate on, so no test_evaluation/ or report.html; evaluate on held-out "
            f"images with 'graspcheck evaluate {folder.final} DATA', which writes its own report")
        return None
    evaluation = replace(evaluate_decoded(model, images[split]), checkpoint=str(folder.final / "weights" / "best.safetensors"))
    log(f"best checkpoint (epoch {model.info.epoch}) on the {split} split:\n  " + evaluation.report(list_mistakes=False).replace("\n", "\n  "))
    folder.write_evaluation(evaluation, model)
    return evaluation


def _calibrate(model: GraspModel, best: Path, val: DecodedImages | None) -> GraspModel:
    """Temperature scaling fitted on the validation split, stored in best.safetensors."""
    if val is None:
        log("--calibrate needs a validation split; best.safetensors stays uncalibrated")
        return model
    model = calibrated(model, val)
    save_checkpoint(best, model.backend.pipeline.network, model.info)
    log(f"calibrated on {len(val)} validation images: temperature {model.info.temperature:.3f}")
    return model


# Starting and resuming.

def _make_splits(config: TrainConfig) -> tuple[tuple[str, str], dict[str, list[Sample]]]:
    scanned = scan_dataset(config.data, config.positive)
    class_names = scanned.class_names
    test_dir = Path(config.test) if config.test else None
    if scanned.pinned:
        splits = {name: list(members) for name, members in scanned.splits.items()}
        if "val" not in splits and config.val_fraction > 0:
            splits.update(split_by_episode(splits["train"], {"val": config.val_fraction}, config.seed))
    else:
        fractions = {"val": config.val_fraction}
        if test_dir is None:
            fractions["test"] = config.test_fraction
        splits = split_by_episode(scanned.splits["all"], fractions, config.seed)
    if test_dir is not None:
        test = scan_dataset(test_dir, class_names=class_names)
        if test.pinned:
            raise GraspcheckError(f"--test {test_dir} has split folders; pass the folder that holds the class folders")
        splits["test"] = test.splits["all"]
    return class_names, {name: members for name, members in splits.items() if members}


@contextmanager
def _process_group(config: TrainConfig) -> Iterator[tuple[Group, torch.device]]:
    """This process's group (under torchrun, the job's; else a group of one) and device, for the block."""
    device = resolve_device(config.device)
    group = join(device.type)
    try:
        if group.size > 1 and device.type == "cuda":
            device = torch.device(cuda_device_of_this_process())
            torch.cuda.set_device(device)
        yield group, device
        # The ranks take the group down together: one that tore it down while rank 0 was still writing the
        # evaluation and report sometimes aborted at exit ("terminate called without an active exception").
        group.barrier()
    finally:
        leave(group)


def decode_splits(splits: dict[str, list[Sample]], preprocess: Preprocess) -> dict[str, DecodedImages]:
    """Every image of every split, decoded once at the model's input size; unreadable ones are skipped."""
    images = {name: decode_images(splits[name], preprocess, f"decode {name}") for name in ("train", "val", "test") if name in splits}
    skipped = sum(len(decoded.skipped) for decoded in images.values())
    if skipped:
        log(f"skipped {skipped} unreadable image(s); see the lines above")
    if len(images["train"].labels.unique()) < 2:
        raise GraspcheckError("the training split lacks readable images of one class; add images of both classes")
    return images


def _new_folder(setup: Setup, images: dict[str, DecodedImages], overwrite: bool) -> RunFolder:
    """A new run's folder with its config.json and split.csv, made by the main process; the others learn its
    name, or the error that stopped it, from there."""
    config, group = setup.config, setup.group
    outcome = None
    if group.is_main:
        try:
            folder = RunFolder.claim(config.out, overwrite)
            config.out = config.out if config.out is not None else str(folder.final)
            # The images that were read: an unreadable file is in no split (it was named when it was skipped).
            splits = {name: decoded.samples for name, decoded in images.items()}
            folder.write_start(config, setup.class_names, setup.preprocess, splits)
            counts = ", ".join(f"{name} {len(members)}" for name, members in splits.items())
            processes = f" ({group.size} processes, {config.batch_size} images a step each)" if group.size > 1 else ""
            log(f"run folder {config.out}; images per split: {counts}{processes}")
            outcome = folder
        except GraspcheckError as error:
            outcome = error
    return group.raise_together(outcome)


def restore(setup: Setup, folder: RunFolder, state: dict) -> list[dict]:
    """Put a resumed run where its last finished epoch left it (model, optimizer, schedule, loss scale, best
    checkpoint); returns the history up to that epoch."""
    try:
        setup.network.load_state_dict(state["model"])
        setup.optimizer.load_state_dict(state["optimizer"])
        setup.scheduler.load_state_dict(state["scheduler"])
        if setup.scaler is not None and state.get("scaler"):
            setup.scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        folder.best_key = tuple(state["best_key"]) if state["best_key"] is not None else None
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise folder.damaged_state(f"it does not fit the run's model and options ({describe_error(error)})") from None
    return history


# The recipe's pieces.

def preprocess_for(config: TrainConfig) -> Preprocess:
    """The input a new run's model is fed: its size, and the normalisation its pretrained weights expect."""
    size = (config.img_size, config.img_size)
    if not config.pretrained:
        return Preprocess(size=size)
    pretrained = pretrained_config(config.model)
    return Preprocess(size=size, mean=pretrained.mean, std=pretrained.std, interpolation=pretrained.interpolation)


def build_optimizer(network: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over two parameter groups: the new classifier at lr, a pretrained backbone at backbone_lr
    (smaller, so fine-tuning adapts its features instead of overwriting them) or not at all when frozen."""
    head = head_parameters(network, config.model)
    head_ids = {id(p) for p in head}
    backbone = [p for p in network.parameters() if id(p) not in head_ids]
    backbone_lr = config.backbone_lr if config.pretrained and config.backbone_lr is not None else config.lr
    groups = [{"params": head, "lr": config.lr}]
    if config.freeze_backbone:
        for parameter in backbone:
            parameter.requires_grad_(False)
    else:
        groups.append({"params": backbone, "lr": backbone_lr})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(schedule: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Multiplier of the learning rate at each optimizer step: a linear rise over warmup_steps (a new
    classifier's first, large gradients would otherwise wreck the pretrained features), then the schedule."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(step - warmup_steps, total_steps - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Loss weights that make each class count as much as the other: n / (2 * n_class)."""
    counts = torch.bincount(labels, minlength=2).float()
    return counts.sum() / (2 * counts)


def epoch_order(labels: torch.Tensor, balance: str, seed: int) -> torch.Tensor:
    """The training images of one epoch, in order: a shuffle, or with balance="sampler" a draw with
    replacement in which each class is equally likely."""
    generator = torch.Generator().manual_seed(seed)
    if balance == "sampler":
        per_sample = (1.0 / torch.bincount(labels, minlength=2).float())[labels]
        return torch.multinomial(per_sample, len(labels), replacement=True, generator=generator)
    return torch.randperm(len(labels), generator=generator)


def _batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one epoch; a last batch of one image is dropped, since BatchNorm cannot train on it."""
    full, rest = divmod(n, batch_size)
    return full + (rest > 1) if full else 1


def train_mode(network: nn.Module, config: TrainConfig) -> None:
    """Training mode, except that a frozen backbone stays in evaluation mode: its BatchNorm layers keep the
    pretrained statistics instead of drifting with the small batches of a grasp dataset."""
    if config.freeze_backbone:
        network.eval()
        getattr(network, model_entry(config.model).head).train()
    else:
        network.train()


# How a step runs: precision, memory layout, cores.

@dataclass(frozen=True)
class SpeedOptions:
    """How a training step runs: channels-last tensors and mixed precision (weights stay float32)."""

    channels_last: bool = False
    autocast: torch.dtype | None = None  # the dtype of autocast regions, or None for float32 throughout

    @classmethod
    def resolve(cls, fast: bool, device: torch.device) -> "SpeedOptions":
        if not fast:
            return cls()
        if bfloat16_supported(device):
            return cls(channels_last=True, autocast=torch.bfloat16)
        # GPUs before bfloat16 (T4, V100) have float16 tensor cores; a CPU without bfloat16 gains nothing from either.
        return cls(channels_last=True, autocast=torch.float16 if device.type == "cuda" else None)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """float16's narrow range flushes small gradients to zero; scaling the loss up keeps them. bfloat16 has
        float32's range and needs none."""
        return torch.amp.GradScaler(device.type) if self.autocast == torch.float16 else None


def bfloat16_supported(device: torch.device) -> bool:
    """bfloat16 autocast pays off only with hardware support: CUDA GPUs that have it, CPUs with AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private, hence the fallback
    return bool(check and check())


def train_step(network: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor,
               y: torch.Tensor, speed: SpeedOptions, scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (with float16, through the loss scaler); returns the logits (float32) and the loss."""
    if speed.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=x.device.type, dtype=speed.autocast or torch.bfloat16, enabled=speed.autocast is not None):
        logits = network(x)
    loss = loss_fn(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed; the scale then shrinks
        scaler.update()
    return logits.detach().float(), loss


def _batch_workers(config: TrainConfig) -> int:
    workers = default_batch_workers(config.augment) if config.workers is None else config.workers
    if workers > available_cores():
        # More processes than cores only add memory (each holds a copy of the process) and switching.
        log(f"--workers {workers} is more than the {available_cores()} cores available; using {available_cores()}")
        return available_cores()
    return workers


@contextmanager
def cores_left_by(workers: int, device: torch.device) -> Iterator[None]:
    """While batch workers run, a training step on the CPU gets the cores they leave. PyTorch's threads wait
    for each other at every operation, so one of them sharing a core with a worker stalls all of them: on 2
    cores an epoch with 2 threads plus 1 worker ran at 0.83x the speed of no worker, with 1 thread plus 1 worker
    at 1.20-1.25x (benchmarks/README.md, "Batch workers")."""
    before = torch.get_num_threads()
    if workers > 0 and device.type == "cpu":
        torch.set_num_threads(min(before, max(1, available_cores() - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# What an epoch prints.

def _accuracies(split: str, evaluation: Evaluation) -> dict:
    return {f"{split}_acc_{name}": (c / t if t else None) for name, c, t in evaluation.per_class()}


def _epoch_line(row: dict, epochs: int, class_names: tuple[str, str]) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if "val_loss" in row:
        parts.append(f"val_loss {row['val_loss']:.4f}")
    for split in ("train", "val"):
        accs = [f"{name} {row[f'{split}_acc_{name}']:.3f}" for name in class_names if row.get(f"{split}_acc_{name}") is not None]
        if accs:
            parts.append(f"{split} acc: " + " ".join(accs))
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)
