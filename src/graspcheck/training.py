"""The training loop: the seed's recipe (SGD + cross-entropy at 224x224, 10 epochs, a test table every 2nd
epoch, a checkpoint every 2nd epoch) with its mistakes fixed and a run folder that holds everything.

Run folder::

    config.json        the options of the run (enough to resume it)
    split.csv          every image with its label, episode and split
    metrics.csv        one row per epoch
    results.png        loss and per-class accuracy per epoch
    weights/           epoch_002.safetensors ..., best.safetensors, last.safetensors
    train_state.pt     optimizer and history after the last finished epoch, for --resume
    test_evaluation/   the best checkpoint on the test split (else validation): predictions, metrics, mistakes
    report.html        everything above for a person to read (graspcheck.report)
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .checkpoint import CheckpointInfo, DamagedFile, load_train_state, save_checkpoint, save_train_state
from .config import TrainConfig
from .console import GraspcheckError, describe_error, log, progress
from .data import (DecodedImages, Sample, available_cores, decode_images, default_batch_workers, read_split_csv, scan_dataset, split_by_episode,
                   training_batches, write_split_csv)
from .distributed import cuda_device_of_this_process, join, leave
from .evaluation import Evaluation, evaluate_decoded
from .files import atomic_replace, atomic_write, claim_folder, discard_folder, swap_into_place, writing, write_marker
from .models import create_model, head_parameters, load_pretrained, model_entry, pretrained_config
from .predict import GraspModel, resolve_device
from .metrics import fit_temperature
from .plots import plot_history
from .report import EVALUATION_FOLDER, write_report
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
        run = _Run.resume(Path(resume))
    elif data is None:
        raise GraspcheckError("pass a dataset folder to train on, or resume=RUN to continue a run")
    else:
        config = TrainConfig.from_recipe(str(data), **options)
        config.validate()
        run = _Run.start(config, overwrite)
    try:
        return run.fit(callbacks or [])
    except BaseException:
        run.discard_unfinished()
        raise
    finally:
        leave(run.group)


RUN_KIND = "training run"
# What graspcheck writes into a run folder (train, and evaluate or export into it): all that --overwrite may replace.
RUN_FILES = ("config.json", "split.csv", "metrics.csv", "results.png", "train_state.pt", "report.html", "weights/*.safetensors",
             "weights/*.onnx", "weights/*.torchscript.pt", "test_evaluation/*")


def is_run_file(relative: Path) -> bool:
    return any(relative.match(pattern) and len(relative.parts) == len(Path(pattern).parts) for pattern in RUN_FILES)


def new_run_dir(out: str | None, base: Path = Path("runs/train")) -> Path:
    """A fresh, empty folder: out as given (refused if it holds anything), else the next base/expN."""
    if out is None:
        n = 1
        while (base / f"exp{n if n > 1 else ''}").exists():
            n += 1
        out = str(base / f"exp{n if n > 1 else ''}")
    return claim_folder(Path(out), False, RUN_KIND, is_run_file)


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


def train_mode(network: nn.Module, config: TrainConfig) -> None:
    """Training mode, except that a frozen backbone stays in evaluation mode: its BatchNorm layers keep the
    pretrained statistics instead of drifting with the small batches of a grasp dataset."""
    if config.freeze_backbone:
        network.eval()
        getattr(network, model_entry(config.model).head).train()
    else:
        network.train()


def _batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one epoch; a last batch of one image is dropped, since BatchNorm cannot train on it."""
    full, rest = divmod(n, batch_size)
    return full + (rest > 1) if full else 1


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


_OPTIONS_BEFORE_THEY_EXISTED = dict(pretrained=False, freeze_backbone=False, backbone_lr=None, warmup=0.0, label_smoothing=0.0)


class _Run:
    """The state of one training run: data, model, optimizer and history, and the files of its folder."""

    def __init__(self, config: TrainConfig, class_names: tuple[str, str], splits: dict[str, list[Sample]], run_dir: Path | None = None,
                 preprocess: Preprocess | None = None):
        """A new run, or (with run_dir and the run's own preprocess) one to resume, whose weights come from its state."""
        self.config = config
        self.run_dir = run_dir  # where files are written: final_dir, or the folder that will replace it
        self.final_dir = run_dir
        self.created_folder = False  # whether this run made run_dir (and may remove it again)
        self.class_names = class_names
        self.device = resolve_device(config.device)
        self.group = join(self.device.type)
        if self.group.size > 1 and self.device.type == "cuda":
            self.device = torch.device(cuda_device_of_this_process())
            torch.cuda.set_device(self.device)
        self.preprocess = preprocess or preprocess_for(config)
        self.images: dict[str, DecodedImages] = {}
        for name in ("train", "val", "test"):
            if name in splits:
                self.images[name] = decode_images(splits[name], self.preprocess, f"decode {name}")
        skipped = sum(len(d.skipped) for d in self.images.values())
        if skipped:
            log(f"skipped {skipped} unreadable image(s); see the lines above")
        train_labels = self.images["train"].labels
        if len(train_labels.unique()) < 2:
            raise GraspcheckError("the training split lacks readable images of one class; add images of both classes")

        torch.manual_seed(config.seed)
        resuming = run_dir is not None
        self.network = create_model(config.model, 2, self.preprocess.size, pretrained=config.pretrained and not resuming).to(self.device)
        if config.weights and not resuming:
            loaded, total = load_pretrained(self.network, config.weights)
            log(f"loaded {loaded}/{total} tensors from {config.weights}")
        self.speed = SpeedOptions.resolve(config.fast, self.device)
        self.scaler = self.speed.grad_scaler(self.device)
        self.workers = default_batch_workers(config.augment) if config.workers is None else config.workers
        if self.workers > available_cores():
            # More processes than cores only add memory (each holds a copy of the process) and switching.
            log(f"--workers {self.workers} is more than the {available_cores()} cores available; using {available_cores()}")
            self.workers = available_cores()
        if self.speed.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        # Trained through DDP when torchrun started several processes, and compiled if asked;
        # evaluated and saved unwrapped (the wrappers share its parameters).
        self.trainer = self.network
        if self.group.size > 1:
            self.trainer = nn.parallel.DistributedDataParallel(self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if config.compile:
            self.trainer = torch.compile(self.trainer)
        self.optimizer = build_optimizer(self.network, config)
        steps = config.epochs * _batches_per_epoch(len(self.group.shard(torch.arange(len(train_labels)))), config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(config.schedule, steps, round(config.warmup * steps)))
        weight = class_weights(train_labels).to(self.device) if config.balance == "loss" else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
        self.history: list[dict] = []
        self.best_key: tuple[float, float] | None = None

    @classmethod
    def start(cls, config: TrainConfig, overwrite: bool = False) -> "_Run":
        class_names, splits = _make_splits(config)
        run = cls(config, class_names, splits)
        # The folder is made only once data and model are known to be usable: a failed start leaves nothing.
        outcome = None
        if run.group.is_main:
            try:
                outcome = run._make_folder(overwrite), Path(config.out)
            except GraspcheckError as error:
                outcome = error
        run.run_dir, run.final_dir = run.group.raise_together(outcome)
        return run

    def _make_folder(self, overwrite: bool) -> Path:
        """The folder the run writes to: a new one, or with overwrite a hidden sibling of the run it replaces,
        swapped into place when training ends (finish), so a failed or interrupted overwrite keeps the old run.
        Until the first epoch is saved, a failure removes a new folder again (discard_unfinished)."""
        existed = self.config.out is not None and Path(self.config.out).exists()
        if self.config.out is not None and overwrite:
            run_dir = claim_folder(Path(self.config.out), True, RUN_KIND, is_run_file)
        else:
            run_dir = new_run_dir(self.config.out)
        self.created_folder = not existed or run_dir != Path(self.config.out)  # a new folder, or the hidden replacement
        self.config.out = self.config.out if self.config.out is not None else str(run_dir)
        self.run_dir = run_dir
        # The images that were read: an unreadable file is in no split (it was named when it was skipped).
        splits = {name: images.samples for name, images in self.images.items()}
        try:
            with writing(run_dir / "weights"):
                (run_dir / "weights").mkdir()
            write_marker(run_dir, RUN_KIND)
            with atomic_write(run_dir / "config.json") as f:
                json.dump({**asdict(self.config), "class_names": list(self.class_names), "preprocess": self.preprocess.to_dict()}, f, indent=2)
            write_split_csv(run_dir / "split.csv", splits, self.class_names)
        except BaseException:
            self.discard_unfinished()
            raise
        counts = ", ".join(f"{name} {len(members)}" for name, members in splits.items())
        processes = f" ({self.group.size} processes, {self.config.batch_size} images a step each)" if self.group.size > 1 else ""
        log(f"run folder {self.config.out}; images per split: {counts}{processes}")
        return run_dir

    @classmethod
    def resume(cls, run_dir: Path) -> "_Run":
        config_path, state_path, split_path = run_dir / "config.json", run_dir / "train_state.pt", run_dir / "split.csv"
        if not config_path.is_file():
            raise GraspcheckError(f"{run_dir} is not a graspcheck run folder (no config.json); pass the folder of the run to resume")
        if not state_path.is_file():
            raise GraspcheckError(f"{run_dir} has not finished an epoch yet (no train_state.pt); start it again instead")
        start_again = "the run cannot be resumed; restore the file from a backup or start the run again in a new folder"
        if not split_path.is_file():
            raise GraspcheckError(f"{split_path} is missing; {start_again}")
        config, class_names, preprocess = _saved_config(config_path, start_again)
        try:
            state = load_train_state(state_path)  # before decoding the images: a damaged state fails in a second
        except DamagedFile as error:
            raise GraspcheckError(f"{state_path} is damaged: {error}; {start_again}") from None
        run = cls(config, class_names, read_split_csv(split_path, class_names), run_dir, preprocess)
        try:
            run.network.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
            if run.scaler is not None and state.get("scaler"):
                run.scaler.load_state_dict(state["scaler"])
            run.history = list(state["history"])
            run.best_key = tuple(state["best_key"]) if state["best_key"] is not None else None
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise GraspcheckError(f"{state_path} is damaged: it does not fit the run's model and options "
                                  f"({describe_error(error)}); {start_again}") from None
        log(f"resuming {run_dir} after epoch {len(run.history)} of {config.epochs}")
        return run

    def fit(self, callbacks: list[EpochCallback]) -> TrainResult:
        config = self.config
        bar = progress(range(len(self.history) + 1, config.epochs + 1), desc="epochs", unit="epoch")
        for epoch in bar:
            started = time.perf_counter()
            train_loss, train_eval = self._train_one_epoch(epoch)
            row = {"epoch": epoch, "train_loss": train_loss}
            row.update(self._accuracies("train", train_eval))
            if "val" in self.images:
                val_eval = self._evaluate("val")
                row["val_loss"] = self._loss_of(val_eval)
                row.update(self._accuracies("val", val_eval))
                row["val_balanced_acc"] = val_eval.balanced_accuracy
            if "test" in self.images and (epoch % config.test_every == 0 or epoch == config.epochs):
                test_eval = self._evaluate("test")
                row.update(self._accuracies("test", test_eval))
                row["test_balanced_acc"] = test_eval.balanced_accuracy
            row["lr"] = self.optimizer.param_groups[0]["lr"]  # at the end of the epoch
            row["seconds"] = time.perf_counter() - started
            self.history.append(row)
            log(self._epoch_line(row))
            if "test_balanced_acc" in row:
                log(f"Test after epoch {epoch}:\n  " + test_eval.class_table().replace("\n", "\n  "))
            if self.group.is_main:
                try:
                    self._save(epoch, row)
                except GraspcheckError as error:
                    if self.run_dir == self.final_dir and (self.run_dir / "train_state.pt").exists():
                        raise GraspcheckError(f"{error}; the run folder keeps its last saved epoch, and once that is fixed "
                                              f"'graspcheck train --resume {self.final_dir}' continues from it") from error
                    raise
            for callback in callbacks:
                callback(epoch, row)
        evaluation = self._finish() if self.group.is_main else None
        if self.group.is_main and self.run_dir != self.final_dir:
            swap_into_place(self.run_dir, self.final_dir)
        weights = self.final_dir / "weights"
        return TrainResult(self.final_dir, weights / "best.safetensors", weights / "last.safetensors", self.history, evaluation)

    def _finish(self) -> Evaluation | None:
        """After the last epoch: calibrate the best checkpoint if asked, evaluate it on the test split (else
        the validation split) into test_evaluation/, and write the run's report.html."""
        best = self.run_dir / "weights" / "best.safetensors"
        model = GraspModel.load(best, str(self.device))
        if self.config.calibrate:
            model = self._calibrate(model, best)
        split = next((name for name in ("test", "val") if name in self.images), None)
        if split is None:
            return None
        evaluation = replace(evaluate_decoded(model, self.images[split]),
                             checkpoint=str(self.final_dir / "weights" / "best.safetensors"))
        log(f"best checkpoint (epoch {model.info.epoch}) on the {split} split:\n  " + evaluation.report().split("\nWrongly")[0].replace("\n", "\n  "))
        evaluation.write(self.run_dir / EVALUATION_FOLDER, model, report=False)
        write_report(self.run_dir, evaluation, model)
        return evaluation

    def _calibrate(self, model: GraspModel, best: Path) -> GraspModel:
        """Temperature scaling fitted on the validation split, stored in best.safetensors."""
        if "val" not in self.images:
            log("--calibrate needs a validation split; best.safetensors stays uncalibrated")
            return model
        images = self.images["val"]
        temperature = fit_temperature(model.success_probabilities(images.pixels).numpy(), images.labels.numpy())
        info = replace(model.info, temperature=temperature)
        save_checkpoint(best, model.backend.pipeline.network, info)
        log(f"calibrated on {len(images)} validation images: temperature {temperature:.3f}")
        return GraspModel.load(best, str(self.device))

    def discard_unfinished(self) -> None:
        """After a failure or interrupt: remove a half-made replacement (the old run stays), and a new folder
        that has no finished epoch yet, which could not be resumed; a folder with one is kept for --resume."""
        if not self.group.is_main or self.run_dir is None:
            return
        if self.final_dir is not None and self.run_dir != self.final_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        elif not (self.run_dir / "train_state.pt").exists():
            discard_folder(self.run_dir, self.created_folder)

    def _train_one_epoch(self, epoch: int) -> tuple[float, Evaluation]:
        """One pass over the training split; returns the mean loss and the running per-class accuracy."""
        # Seeding per epoch (not once per run) makes a resumed run repeat exactly what an uninterrupted one does.
        # The image order is the same on every rank (each takes its shard); augmentation and dropout differ per rank.
        epoch_seed = self.config.seed * 100003 + epoch
        torch.manual_seed(epoch_seed + 7919 * self.group.rank)
        images = self.images["train"]
        labels = images.labels
        order = self.group.shard(epoch_order(labels, self.config.balance, epoch_seed))
        n = len(order)
        train_mode(self.network, self.config)
        total_loss, seen = 0.0, 0
        used, probabilities = [], []
        batches = [order[i : i + self.config.batch_size] for i in range(0, n, self.config.batch_size)]
        batches = batches[: _batches_per_epoch(n, self.config.batch_size)]
        prepared = training_batches(images.pixels, batches, self.config.augment, epoch_seed + 7919 * self.group.rank,
                                    self.workers, pin_memory=self.device.type == "cuda")
        with cores_left_by(self.workers, self.device):
            for batch, pixels in progress(zip(batches, prepared), total=len(batches), desc=f"epoch {epoch}", unit="batch", leave=False):
                x = self.preprocess.normalize(pixels.to(self.device, non_blocking=True))
                y = labels[batch].to(self.device)
                logits, loss = train_step(self.trainer, self.optimizer, self.loss_fn, x, y, self.speed, self.scaler)
                self.scheduler.step()
                total_loss += loss.item() * len(batch)
                seen += len(batch)
                used.append(batch)
                probabilities.append(torch.softmax(logits, 1)[:, 1].cpu())
        self.group.sync_buffers(self.network)
        # Loss and running accuracy over the images of all ranks.
        parts = self.group.gather((total_loss, seen, torch.cat(used), torch.cat(probabilities)))
        used = torch.cat([part[2] for part in parts])
        samples = [images.samples[i] for i in used.tolist()]
        running = Evaluation(self.class_names, samples, torch.cat([part[3] for part in parts]), self.config.threshold)
        return sum(part[0] for part in parts) / sum(part[1] for part in parts), running

    def _model(self) -> GraspModel:
        return GraspModel(self.network, self._info(0, {}), self.device)

    def _evaluate(self, split: str) -> Evaluation:
        """Each rank classifies every size-th image; the probabilities of all ranks are put back in order."""
        images = self.images[split]
        mine = torch.arange(self.group.rank, len(images), self.group.size)
        probabilities = torch.empty(len(images))
        for indices, values in self.group.gather((mine, self._model().success_probabilities(images.pixels[mine]))):
            probabilities[indices] = values
        return Evaluation(self.class_names, images.samples, probabilities, self.config.threshold, len(images.skipped))

    def _loss_of(self, evaluation: Evaluation) -> float:
        """The training loss (class weights, label smoothing) on evaluated images: two-class logits (0, log-odds)
        give back the probabilities under softmax, so the loss needs no second forward pass."""
        p = evaluation.probabilities.clamp(1e-7, 1 - 1e-7)
        logits = torch.stack([torch.zeros_like(p), (p / (1 - p)).log()], dim=1).to(self.device)
        return float(self.loss_fn(logits, evaluation.labels.to(self.device)))

    def _accuracies(self, split: str, evaluation: Evaluation) -> dict:
        return {f"{split}_acc_{name}": (c / t if t else None) for name, c, t in evaluation.per_class()}

    def _epoch_line(self, row: dict) -> str:
        parts = [f"epoch {row['epoch']}/{self.config.epochs}", f"loss {row['train_loss']:.4f}"]
        if "val_loss" in row:
            parts.append(f"val_loss {row['val_loss']:.4f}")
        for split in ("train", "val"):
            accs = [f"{name} {row[f'{split}_acc_{name}']:.3f}" for name in self.class_names if row.get(f"{split}_acc_{name}") is not None]
            if accs:
                parts.append(f"{split} acc: " + " ".join(accs))
        parts.append(f"{row['seconds']:.1f}s")
        return "  ".join(parts)

    def _info(self, epoch: int, metrics: dict) -> CheckpointInfo:
        return CheckpointInfo(self.config.model, self.preprocess, self.class_names, self.config.threshold, epoch, metrics)

    def _save(self, epoch: int, row: dict) -> None:
        weights = self.run_dir / "weights"
        # Timing stays in metrics.csv: in the weights file it would make identical training give different files.
        info = self._info(epoch, {k: v for k, v in row.items() if v is not None and k != "seconds"})
        save_checkpoint(weights / "last.safetensors", self.network, info)
        if epoch % self.config.save_every == 0 or epoch == self.config.epochs:
            _copy(weights / "last.safetensors", weights / f"epoch_{epoch:03d}.safetensors")
        key = best_checkpoint_key(row, epoch)
        if self.best_key is None or key > tuple(self.best_key):
            self.best_key = key
            _copy(weights / "last.safetensors", weights / "best.safetensors")
        self._write_metrics()
        plot_history(self.history, self.class_names, self.run_dir / "results.png")
        save_train_state(
            self.run_dir / "train_state.pt",
            {
                "model": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "history": self.history,
                "best_key": list(self.best_key),
            },
        )

    def _write_metrics(self) -> None:
        columns = ["epoch", "train_loss", "val_loss"]
        for split in ("train", "val", "test"):
            columns += [f"{split}_acc_{name}" for name in self.class_names]
        columns += ["val_balanced_acc", "test_balanced_acc", "lr", "seconds"]
        with atomic_write(self.run_dir / "metrics.csv") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in self.history)


def _saved_config(path: Path, what_to_do: str) -> tuple[TrainConfig, tuple[str, str], Preprocess]:
    """The options, class names and preprocessing a run folder's config.json records, or one line saying it is damaged."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError(f"it holds a JSON {type(saved).__name__}, not the options of a run")
        # A run folder from before an option existed trained as if it were off.
        saved = {**_OPTIONS_BEFORE_THEY_EXISTED, **saved}
        config = TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})
        config.validate()
        class_names = tuple(saved["class_names"])
        if len(class_names) != 2 or not all(isinstance(name, str) for name in class_names):
            raise ValueError(f"class_names must be two names, got {saved['class_names']!r}")
        preprocess = Preprocess.from_dict(saved["preprocess"]) if "preprocess" in saved else Preprocess(size=(config.img_size, config.img_size))
    except (OSError, ValueError, KeyError, TypeError, GraspcheckError) as error:
        reason = f"no {error}" if isinstance(error, KeyError) else describe_error(error)
        raise GraspcheckError(f"{path} is damaged ({reason}); {what_to_do}") from None
    return config, class_names, preprocess


def best_checkpoint_key(row: dict, epoch: int) -> tuple[float, float]:
    """The larger key marks the better epoch: the lower validation loss, ties broken by balanced accuracy.

    The loss, a proper scoring rule, moves smoothly; balanced accuracy on a validation split of a few hundred
    images moves in steps of one image and picked an epoch by noise (on the demo: 0.990 against 0.987, one
    image, for the epoch whose held-out accuracy was lower). Without a validation split the last epoch is the
    best one can tell."""
    return (-row["val_loss"], row["val_balanced_acc"]) if "val_loss" in row else (float(epoch), 0.0)


def _copy(source: Path, destination: Path) -> None:
    atomic_replace(destination, lambda tmp: shutil.copyfile(source, tmp))
