"""Metrics of a model on labelled images: per-class accuracy with counts, balanced accuracy, precision / recall /
F1 / specificity of success, ROC and precision-recall AUC, calibration error, 95% confidence intervals by a
bootstrap over episodes, the confusion matrix and every wrongly classified image; and tuning a checkpoint on
validation images (a threshold for a target precision, a calibration temperature)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .files import atomic_write, read_csv, writing
from .console import GraspcheckError, describe_error
from .data import DecodedImages, Sample, decode_images, labelled_samples
from .metrics import (DEFAULT_RESAMPLES, DEFAULT_SEED, METRIC_NAMES, BootstrapIntervals, ReliabilityBins, average_precision,
                      bootstrap_intervals, bootstrap_score_intervals, confusion_counts, expected_calibration_error, rates,
                      TEMPERATURE_BOUNDS, ThresholdChoice, fit_temperature, reliability_bins, roc_auc, threshold_for_precision)
from .checkpoint import save_checkpoint
from .predict import GraspModel, find_checkpoint, load
from .plots import plot_mistakes


CONFIDENCE = 0.95  # of the intervals in reports and metrics.json, whose keys say "ci95"


def display_name(class_name: str) -> str:
    """Folder name -> the seed's table style: not_success -> 'Not success'."""
    words = class_name.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


@dataclass(frozen=True)
class Evaluation:
    """Predictions on labelled samples and the metrics derived from them.

    Frozen, with samples stored as a tuple: the metrics are computed once and cached, so nothing they depend
    on may change afterwards. For another threshold make a new one: ``dataclasses.replace(ev, threshold=0.7)``.
    """

    class_names: tuple[str, str]
    samples: Sequence[Sample]
    probabilities: torch.Tensor  # of success, (N,)
    threshold: float
    skipped: int = 0  # unreadable files left out
    checkpoint: str | None = None  # the file evaluated, where known: the report finds the model there for saliency maps
    temperature: float = 1.0  # the model's calibration temperature, already applied to probabilities

    def __post_init__(self) -> None:
        if len(self.samples) != len(self.probabilities):
            raise ValueError(f"{len(self.samples)} samples but {len(self.probabilities)} probabilities")
        object.__setattr__(self, "samples", tuple(self.samples))
        # On the CPU, where the metrics are counted: a no-op for the CPU tensors that models return.
        object.__setattr__(self, "probabilities", torch.as_tensor(self.probabilities).cpu())

    @cached_property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)

    @cached_property
    def predicted(self) -> torch.Tensor:
        return (self.probabilities >= self.threshold).long()

    @cached_property
    def confusion(self) -> list[list[int]]:
        """confusion[true][predicted], classes in the order (negative, positive)."""
        return confusion_counts(self.labels.numpy(), self.predicted.numpy()).tolist()

    @cached_property
    def _rates(self) -> dict[str, float]:
        # An undefined metric (no sample of a class, no positive verdict) reads 0.0, as it always has here.
        return {name: float(np.nan_to_num(value, nan=0.0)) for name, value in rates(np.array(self.confusion)).items()}

    def per_class(self) -> list[tuple[str, int, int]]:
        """(class name, correct, total) for each class, counting every sample."""
        m = self.confusion
        return [(self.class_names[c], m[c][c], m[c][0] + m[c][1]) for c in (0, 1)]

    @property
    def accuracy(self) -> float:
        return self._rates["accuracy"]

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present."""
        return self._rates["balanced_accuracy"]

    @property
    def precision(self) -> float:
        return self._rates["precision"]

    @property
    def recall(self) -> float:
        return self._rates["recall"]

    @property
    def specificity(self) -> float:
        """Recall of the negative class: the share of failed grasps called failed."""
        return self._rates["specificity"]

    @property
    def f1(self) -> float:
        return self._rates["f1"]

    @cached_property
    def roc_auc(self) -> float:
        """Area under the ROC curve of p(success): the chance that a random success scores above a random failure."""
        return roc_auc(self.labels.numpy(), self.probabilities.numpy())

    @cached_property
    def average_precision(self) -> float:
        """Area under the precision-recall curve (step-wise average precision)."""
        return average_precision(self.labels.numpy(), self.probabilities.numpy())

    @cached_property
    def score_intervals(self) -> dict[str, tuple[float, float] | None]:
        """95% intervals of roc_auc and average_precision by the same bootstrap over episodes as ``intervals``."""
        episodes = [s.episode for s in self.samples]
        return bootstrap_score_intervals(self.labels.numpy(), self.probabilities.numpy(), episodes)

    @cached_property
    def reliability(self) -> ReliabilityBins:
        """Observed success rate against predicted p(success) in 10 equal-width bins."""
        return reliability_bins(self.labels.numpy(), self.probabilities.numpy())

    @cached_property
    def expected_calibration_error(self) -> float:
        return expected_calibration_error(self.labels.numpy(), self.probabilities.numpy())

    def bootstrap(self, resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE, seed: int = DEFAULT_SEED) -> BootstrapIntervals:
        """Confidence intervals of the thresholded metrics (metrics.METRIC_NAMES) by resampling episodes
        (see graspcheck.metrics.bootstrap_intervals); ``intervals`` holds the default ones, computed once."""
        episodes = [s.episode for s in self.samples]
        return bootstrap_intervals(self.labels.numpy(), self.predicted.numpy(), episodes, resamples, confidence, seed)

    @cached_property
    def intervals(self) -> BootstrapIntervals:
        """95% intervals from 2000 resamples of the episodes, seed 0: the ones in report() and metrics.json."""
        return self.bootstrap()

    def mistakes(self) -> list[tuple[Sample, str, float]]:
        """(sample, predicted class, probability of success) of each wrongly classified image, worst first."""
        wrong = [
            (s, self.class_names[p], prob)
            for s, p, prob in zip(self.samples, self.predicted.tolist(), self.probabilities.tolist())
            if p != s.label
        ]
        return sorted(wrong, key=lambda w: -abs(w[2] - self.threshold))

    def summary(self) -> dict:
        return {
            "images": len(self.samples),
            "skipped": self.skipped,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "specificity": self.specificity,
            "roc_auc": _finite_or_none(self.roc_auc),
            "average_precision": _finite_or_none(self.average_precision),
            "expected_calibration_error": self.expected_calibration_error,
            "threshold": self.threshold,
            "temperature": self.temperature,
            "checkpoint": self.checkpoint,
            "per_class": {name: {"correct": c, "total": t} for name, c, t in self.per_class()},
            "confusion": {"classes": list(self.class_names), "rows_true_columns_predicted": self.confusion},
            **{f"{name}_ci95": _as_list(self.intervals.intervals[name]) for name in METRIC_NAMES},
            **{f"{name}_ci95": _as_list(interval) for name, interval in self.score_intervals.items()},
            "episodes": self.intervals.episodes,
            "bootstrap_resamples": self.intervals.resamples,
            "bootstrap_seed": self.intervals.seed,
            "ci95_method": "percentile bootstrap over episodes (all frames of each drawn episode)",
        }

    def class_table(self) -> str:
        """Per-class accuracy in the seed's style: 'Not success: 12/13 = 0.92'."""
        return "\n".join(f"{display_name(n)}: {c}/{t} = {_ratio(c, t):.2f}" for n, c, t in self.per_class())

    def report(self, list_mistakes: bool = True) -> str:
        """The metrics as text, the confusion matrix, and (with list_mistakes) every wrongly classified image."""
        neg, pos = self.class_names
        m = self.confusion
        corner = "true \\ predicted"
        width = max(len(neg), len(pos), len(corner))
        lines = [
            self.class_table(),
            f"Accuracy: {self.accuracy:.4f} ({len(self.samples)} images; {self._interval_text('accuracy')})",
            f"Balanced accuracy: {self.balanced_accuracy:.4f} ({self._interval_text('balanced_accuracy')})",
            f"{display_name(pos)}: precision {self.precision:.4f}  recall {self.recall:.4f}  F1 {self.f1:.4f}  (threshold {self.threshold:g})",
            f"Precision of {pos}: {self.precision:.4f} ({self._interval_text('precision')})",
            f"Recall of {pos}: {self.recall:.4f} ({self._interval_text('recall')})",
            f"Specificity (recall of {neg}): {self.specificity:.4f} ({self._interval_text('specificity')})",
            f"ROC AUC {self.roc_auc:.4f}  average precision {self.average_precision:.4f}  "
            f"expected calibration error {self.expected_calibration_error:.4f}",
        ]
        if self.skipped:
            lines.append(f"Skipped {self.skipped} unreadable file(s), not counted above")
        lines += [
            "Confusion matrix:",
            f"  {corner:<{width}}  {neg:>{len(neg)}}  {pos:>{len(pos)}}",
            f"  {neg:<{width}}  {m[0][0]:>{len(neg)}}  {m[0][1]:>{len(pos)}}",
            f"  {pos:<{width}}  {m[1][0]:>{len(neg)}}  {m[1][1]:>{len(pos)}}",
        ]
        if list_mistakes:
            mistakes = self.mistakes()
            lines.append(f"Wrongly classified: {len(mistakes)}")
            lines += [f"  {s.path}  true {self.class_names[s.label]}  predicted {p}  p(success)={prob:.4f}" for s, p, prob in mistakes]
        return "\n".join(lines)

    def _interval_text(self, metric: str) -> str:
        """'95% CI 0.9500-0.9850, 512 episodes'."""
        interval, episodes = self.intervals.intervals[metric], self.intervals.episodes
        bounds = f"{interval[0]:.4f}-{interval[1]:.4f}" if interval else "n/a"
        return f"95% CI {bounds}, {episodes} episode{'' if episodes == 1 else 's'}"

    def write(self, folder: str | Path, model: GraspModel | None = None, report: bool = True) -> None:
        """predictions.csv, mistakes.csv, metrics.json, mistakes.png (a grid of the mistakes) and report.html
        into folder; the report's saliency maps need the PyTorch model (given, or loaded from ``checkpoint``)."""
        folder = Path(folder)
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        rows = list(zip(self.samples, self.predicted.tolist(), self.probabilities.tolist()))
        header = ["path", "true", "predicted", "success_probability", "episode"]
        for name, keep in (("predictions.csv", lambda r: True), ("mistakes.csv", lambda r: r[1] != r[0].label)):
            with atomic_write(folder / name) as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows(
                    [str(s.path), self.class_names[s.label], self.class_names[p], f"{prob:.6f}", s.episode]
                    for s, p, prob in rows
                    if keep((s, p, prob))
                )
        with atomic_write(folder / "metrics.json") as f:
            json.dump(self.summary(), f, indent=2)
        names = self.class_names
        plot_mistakes([(str(s.path), names[s.label], p, prob) for s, p, prob in self.mistakes()], folder / "mistakes.png")
        if report:
            from .report import write_report  # the report reads evaluations: imported here, not at the top

            write_report(folder, self, model)

    @classmethod
    def read(cls, folder: str | Path) -> "Evaluation":
        """The evaluation that write() saved in folder (predictions.csv and metrics.json)."""
        folder = Path(folder)
        try:
            summary = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            class_names = tuple(summary["confusion"]["classes"])
            _, rows = read_csv(folder / "predictions.csv", ("path", "true", "success_probability", "episode"), "an evaluation's predictions.csv")
            index = {name: i for i, name in enumerate(class_names)}
            samples = [Sample(Path(row["path"]), index[row["true"]], row["episode"]) for row in rows]
            probabilities = torch.tensor([float(row["success_probability"]) for row in rows])
            threshold, temperature = float(summary["threshold"]), float(summary.get("temperature", 1.0))
            low, high = TEMPERATURE_BOUNDS
            for problem, wrong in (("two class names", len(class_names) != 2), ("any image", not samples),
                                   ("a threshold from 0 to 1", not 0 <= threshold <= 1),
                                   (f"a temperature from {low:g} to {high:g}", not low <= temperature <= high),
                                   ("probabilities from 0 to 1", not bool(((probabilities >= 0) & (probabilities <= 1)).all()))):
                if wrong:
                    raise ValueError(f"it does not hold {problem}")
            return cls(class_names, samples, probabilities, threshold, int(summary.get("skipped", 0)), summary.get("checkpoint"), temperature)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise GraspcheckError(f"{folder} holds no readable evaluation ({describe_error(error)}); "
                                  "run 'graspcheck evaluate' to make one") from None


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined score (one class absent) is written as null."""
    return float(value) if np.isfinite(value) else None


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _as_list(interval: tuple[float, float] | None) -> list[float] | None:
    return list(interval) if interval else None


def evaluate_decoded(model: GraspModel, images: DecodedImages, threshold: float | None = None) -> Evaluation:
    probabilities = model.success_probabilities(images.pixels)
    cut = model.info.threshold if threshold is None else threshold
    source = str(model.source) if model.source is not None else None
    return Evaluation(model.class_names, images.samples, probabilities, cut, len(images.skipped), source, model.info.temperature)


def evaluate(
    checkpoint: str | Path | GraspModel,
    data: str | Path,
    split: str | None = None,
    threshold: float | None = None,
    device: str = "auto",
) -> Evaluation:
    """Evaluate a checkpoint (or loaded model) on a class-folder dataset.

    data is a folder of class folders, a dataset with train/val/test folders (split picks one; default
    test), or a run's split.csv (split picks one; default test).
    """
    model = checkpoint if isinstance(checkpoint, GraspModel) else load(checkpoint, device)
    return evaluate_decoded(model, _decoded(model, data, split, "evaluate"), threshold)


def _decoded(model: GraspModel, data: str | Path, split: str | None, description: str) -> DecodedImages:
    """The labelled images of data (see evaluate), decoded at the model's input size; at least one."""
    decoded = decode_images(labelled_samples(Path(data), model.class_names, split), model.info.preprocess, description)
    if not decoded.samples:
        raise GraspcheckError(f"no readable image in {data}: all {len(decoded.skipped)} image file(s) failed to decode (listed above)")
    return decoded


def calibrated(model: GraspModel, images: DecodedImages) -> GraspModel:
    """The model with a temperature fitted on labelled images, multiplied into the one it has (its logits are
    already divided by that one; for a calibrated model the fit is near 1 and the calibration is kept), within
    what calibration can fit. It runs the same network: nothing is saved."""
    fitted = fit_temperature(model.success_probabilities(images.pixels).numpy(), images.labels.numpy())
    temperature = float(np.clip(model.info.temperature * fitted, *TEMPERATURE_BOUNDS))
    return GraspModel(model.backend.pipeline.network, replace(model.info, temperature=temperature), model.device, model.source)



@dataclass(frozen=True)
class Tuned:
    """A checkpoint tuned on validation images: where it was written, and what was fitted."""

    checkpoint: Path
    threshold: float
    temperature: float
    choice: ThresholdChoice | None  # the threshold search, when a target precision was given
    evaluation: Evaluation  # the tuned model on the images it was tuned on (optimistic: measure on held-out ones)


def tune(
    checkpoint: str | Path,
    data: str | Path,
    split: str | None = None,
    target_precision: float | None = None,
    calibrate: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
    device: str = "auto",
) -> Tuned:
    """Fit a calibration temperature and/or the lowest threshold whose precision of success reaches
    target_precision on labelled (validation) images, and write them into a new checkpoint beside the
    original (``NAME.tuned.safetensors``, or out); the original file is never modified.

    With both, the temperature is fitted first and the threshold chosen on the calibrated probabilities.
    predict, export and serve use the new checkpoint's threshold and temperature.
    """
    if target_precision is None and not calibrate:
        raise GraspcheckError("nothing to tune: pass --target-precision P (with --threshold auto) and/or --calibrate")
    source = find_checkpoint(checkpoint)
    if source.suffix != ".safetensors":
        raise GraspcheckError(f"{source} is not a .safetensors checkpoint; tune the checkpoint, then export the tuned one")
    target = Path(out) if out is not None else source.with_name(source.name.removesuffix(".safetensors") + ".tuned.safetensors")
    if target.resolve() == source.resolve():
        raise GraspcheckError(f"--checkpoint-out {target} is the checkpoint being tuned; choose another file (the original is never modified)")
    if target.is_dir() or target.suffix != ".safetensors":
        raise GraspcheckError(f"--checkpoint-out {target} is not a file name ending in .safetensors; pass one, e.g. tuned.safetensors")
    if not target.parent.is_dir():
        raise GraspcheckError(f"--checkpoint-out {target}: the folder {target.parent} does not exist; create it or choose another")
    if target.exists() and not overwrite:
        raise GraspcheckError(f"{target} exists; choose another --checkpoint-out or pass --overwrite")
    model = load(source, device)
    images = _decoded(model, data, split, "tune")
    labels = images.labels.numpy()
    if len(np.unique(labels)) < 2:
        raise GraspcheckError(f"tuning needs images of both classes; {data} has only {model.class_names[int(labels[0])]} images")
    if calibrate:
        model = calibrated(model, images)
    # The tuned model itself computes the probabilities the threshold is chosen on: a threshold that is one
    # image's probability must give that image the same verdict when the tuned checkpoint runs.
    evaluation = evaluate_decoded(model, images)
    probabilities, temperature = evaluation.probabilities.numpy(), model.info.temperature
    threshold, choice = model.info.threshold, None
    if target_precision is not None:
        try:
            choice = threshold_for_precision(labels, probabilities, target_precision)
        except ValueError as error:
            raise GraspcheckError(f"--target-precision: {error}") from None
        if not choice.met:
            raise GraspcheckError(f"no threshold reaches precision {target_precision:g} of {model.class_names[1]} on these "
                                  f"{len(labels)} images; the best reachable is {choice.best_precision:.4f} (threshold "
                                  f"{choice.best_precision_threshold:.4f}): lower --target-precision or add validation images")
        threshold = float(choice.threshold)
    save_checkpoint(target, model.backend.pipeline.network, replace(model.info, threshold=threshold))
    tuned = replace(evaluation, threshold=threshold, checkpoint=str(target))
    return Tuned(target, threshold, temperature, choice, tuned)
