"""The run folder: everything a training run writes, enough to understand, resume and reproduce it.

Run folder::

    config.json        the options of the run (enough to resume it), its class names and preprocessing
    split.csv          every image with its label, episode and split
    metrics.csv        one row per epoch
    results.png        loss and per-class accuracy per epoch
    weights/           epoch_002.safetensors ..., best.safetensors, last.safetensors
    train_state.pt     optimizer and history after the last finished epoch, for --resume
    test_evaluation/   the best checkpoint on the test split (else validation): predictions, metrics, mistakes
    report.html        everything above for a person to read (graspcheck.report)

A new run is written where it will stay; with --overwrite it is written into a hidden sibling that replaces
the old run only when training ends, so a failed or interrupted overwrite keeps the old run.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

from torch import nn

from .checkpoint import CheckpointInfo, DamagedFile, load_train_state, save_checkpoint, save_train_state
from .config import TrainConfig
from .console import GraspcheckError, describe_error
from .data import Sample, read_split_csv, write_split_csv
from .evaluation import Evaluation
from .files import atomic_replace, atomic_write, claim_folder, discard_folder, swap_into_place, write_marker, writing
from .plots import plot_history
from .predict import GraspModel
from .report import write_run_evaluation
from .transforms import Preprocess

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


def best_checkpoint_key(row: dict, epoch: int) -> tuple[float, float]:
    """The larger key marks the better epoch: the lower validation loss, ties broken by balanced accuracy.

    The loss, a proper scoring rule, moves smoothly; balanced accuracy on a validation split of a few hundred
    images moves in steps of one image and picked an epoch by noise (on the demo: 0.990 against 0.987, one
    image, for the epoch whose held-out accuracy was lower). Without a validation split the last epoch is the
    best one can tell."""
    return (-row["val_loss"], row["val_balanced_acc"]) if "val_loss" in row else (float(epoch), 0.0)


class SavedRun(NamedTuple):
    """What a run folder holds to resume its run."""

    config: TrainConfig
    class_names: tuple[str, str]
    preprocess: Preprocess
    splits: dict[str, list[Sample]]
    state: dict  # train_state.pt: model, optimizer, scheduler, scaler, history, best_key


_START_AGAIN = "the run cannot be resumed; restore the file from a backup or start the run again in a new folder"
_OPTIONS_BEFORE_THEY_EXISTED = dict(pretrained=False, freeze_backbone=False, backbone_lr=None, warmup=0.0, label_smoothing=0.0)


class RunFolder:
    """The folder of one training run: its name, the files written into it, and which epoch is the best."""

    def __init__(self, final: Path, path: Path | None = None, created: bool = False):
        self.final = final  # where the run is found once training ends
        self.path = path or final  # where its files are written until then: final, or the replacement of an overwritten run
        self.created = created  # whether this run made path, and so may remove it again
        self.best_key: tuple[float, float] | None = None  # best_checkpoint_key of weights/best.safetensors

    @classmethod
    def claim(cls, out: str | None, overwrite: bool) -> "RunFolder":
        """A new run's folder: out, or the next runs/train/expN; with overwrite, an existing run at out is
        replaced by a hidden sibling when training ends (finish)."""
        existed = out is not None and Path(out).exists()
        if out is not None and overwrite:
            path = claim_folder(Path(out), True, RUN_KIND, is_run_file)
        else:
            path = new_run_dir(out)
        final = Path(out) if out is not None else path
        return cls(final, path, created=not existed or path != final)

    @property
    def best(self) -> Path:
        return self.path / "weights" / "best.safetensors"

    def write_start(self, config: TrainConfig, class_names: tuple[str, str], preprocess: Preprocess,
                    splits: dict[str, list[Sample]]) -> None:
        """What a run records before its first epoch: weights/, graspcheck's marker, config.json and split.csv."""
        try:
            with writing(self.path / "weights"):
                (self.path / "weights").mkdir()
            write_marker(self.path, RUN_KIND)
            with atomic_write(self.path / "config.json") as f:
                json.dump({**asdict(config), "class_names": list(class_names), "preprocess": preprocess.to_dict()}, f, indent=2)
            write_split_csv(self.path / "split.csv", splits, class_names)
        except BaseException:
            self.discard()
            raise

    def read(self) -> SavedRun:
        """An existing run's options, split and last state, to resume it; a missing or damaged file is one line
        naming it. train_state.pt is read here, before any image is decoded: a damaged state fails in a second."""
        config_path, state_path, split_path = self.path / "config.json", self.path / "train_state.pt", self.path / "split.csv"
        if not config_path.is_file():
            raise GraspcheckError(f"{self.path} is not a graspcheck run folder (no config.json); pass the folder of the run to resume")
        if not state_path.is_file():
            raise GraspcheckError(f"{self.path} has not finished an epoch yet (no train_state.pt); start it again instead")
        if not split_path.is_file():
            raise GraspcheckError(f"{split_path} is missing; {_START_AGAIN}")
        config, class_names, preprocess = _saved_config(config_path)
        try:
            state = load_train_state(state_path)
        except DamagedFile as error:
            raise self.damaged_state(str(error)) from None
        return SavedRun(config, class_names, preprocess, read_split_csv(split_path, class_names), state)

    def damaged_state(self, reason: str) -> GraspcheckError:
        return GraspcheckError(f"{self.path / 'train_state.pt'} is damaged: {reason}; {_START_AGAIN}")

    def save_epoch(self, network: nn.Module, info: CheckpointInfo, history: list[dict], keep: bool, state: dict) -> None:
        """The files of a finished epoch (info.epoch, the last row of history): last.safetensors, kept as
        epoch_NNN.safetensors when keep, copied to best.safetensors when it beats the best so far; metrics.csv,
        results.png, and last train_state.pt (state plus history and best key), from which --resume continues."""
        try:
            self._save_epoch(network, info, history, keep, state)
        except GraspcheckError as error:
            if self.path == self.final and (self.path / "train_state.pt").exists():
                raise GraspcheckError(f"{error}; the run folder keeps its last saved epoch, and once that is fixed "
                                      f"'graspcheck train --resume {self.final}' continues from it") from error
            raise

    def _save_epoch(self, network: nn.Module, info: CheckpointInfo, history: list[dict], keep: bool, state: dict) -> None:
        weights = self.path / "weights"
        save_checkpoint(weights / "last.safetensors", network, info)
        if keep:
            _copy(weights / "last.safetensors", weights / f"epoch_{info.epoch:03d}.safetensors")
        key = best_checkpoint_key(history[-1], info.epoch)
        if self.best_key is None or key > tuple(self.best_key):
            self.best_key = key
            _copy(weights / "last.safetensors", self.best)
        self._write_metrics(history, info.class_names)
        plot_history(history, info.class_names, self.path / "results.png")
        save_train_state(self.path / "train_state.pt", {**state, "history": history, "best_key": list(self.best_key)})

    def _write_metrics(self, history: list[dict], class_names: tuple[str, str]) -> None:
        columns = ["epoch", "train_loss", "val_loss"]
        for split in ("train", "val", "test"):
            columns += [f"{split}_acc_{name}" for name in class_names]
        columns += ["val_balanced_acc", "test_balanced_acc", "lr", "seconds"]
        with atomic_write(self.path / "metrics.csv") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in history)

    def write_evaluation(self, evaluation: Evaluation, model: GraspModel) -> None:
        """The best checkpoint's evaluation (test_evaluation/) and the run's report.html."""
        write_run_evaluation(self.path, evaluation, model)

    def finish(self) -> None:
        """Training has ended: a replacement takes the place of the run it overwrites."""
        if self.path != self.final:
            swap_into_place(self.path, self.final)
            self.path = self.final

    def discard(self) -> None:
        """After a failure or interrupt: remove a half-made replacement (the old run stays), and a new folder
        that has no finished epoch yet, which could not be resumed; a folder with one is kept for --resume."""
        if self.path != self.final:
            shutil.rmtree(self.path, ignore_errors=True)
        elif not (self.path / "train_state.pt").exists():
            discard_folder(self.path, self.created)


def _saved_config(path: Path) -> tuple[TrainConfig, tuple[str, str], Preprocess]:
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
        raise GraspcheckError(f"{path} is damaged ({reason}); {_START_AGAIN}") from None
    return config, class_names, preprocess


def _copy(source: Path, destination: Path) -> None:
    atomic_replace(destination, lambda tmp: shutil.copyfile(source, tmp))
