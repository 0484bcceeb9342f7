"""Metrics of a model on labelled images: per-class accuracy with counts, precision/recall/F1 of success,
the confusion matrix, and every wrongly classified image."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import atomic_write
from .console import GraspcheckError
from .data import DecodedImages, Sample, decode_images, read_split_csv, scan_dataset
from .predict import GraspModel, load
from .report import plot_mistakes


def display_name(class_name: str) -> str:
    """Folder name -> the seed's table style: not_success -> 'Not success'."""
    words = class_name.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


@dataclass
class Evaluation:
    """Predictions on labelled samples and the metrics derived from them."""

    class_names: tuple[str, str]
    samples: list[Sample]
    probabilities: torch.Tensor  # of success, (N,)
    threshold: float
    skipped: int = 0

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)

    @property
    def predicted(self) -> torch.Tensor:
        return (self.probabilities >= self.threshold).long()

    @property
    def confusion(self) -> list[list[int]]:
        """confusion[true][predicted], classes in the order (negative, positive)."""
        matrix = [[0, 0], [0, 0]]
        for t, p in zip(self.labels.tolist(), self.predicted.tolist()):
            matrix[t][p] += 1
        return matrix

    def per_class(self) -> list[tuple[str, int, int]]:
        """(class name, correct, total) for each class, counting every sample."""
        m = self.confusion
        return [(self.class_names[c], m[c][c], m[c][0] + m[c][1]) for c in (0, 1)]

    @property
    def accuracy(self) -> float:
        return _ratio(sum(c for _, c, _ in self.per_class()), len(self.samples))

    @property
    def balanced_accuracy(self) -> float:
        present = [(c, t) for _, c, t in self.per_class() if t]
        return sum(c / t for c, t in present) / len(present) if present else 0.0

    @property
    def precision(self) -> float:
        m = self.confusion
        return _ratio(m[1][1], m[0][1] + m[1][1])

    @property
    def recall(self) -> float:
        m = self.confusion
        return _ratio(m[1][1], m[1][0] + m[1][1])

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return _ratio(2 * p * r, p + r)

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
            "threshold": self.threshold,
            "per_class": {name: {"correct": c, "total": t} for name, c, t in self.per_class()},
            "confusion": {"classes": list(self.class_names), "rows_true_columns_predicted": self.confusion},
        }

    def class_table(self) -> str:
        """Per-class accuracy in the seed's style: 'Not success: 12/13 = 0.92'."""
        return "\n".join(f"{display_name(n)}: {c}/{t} = {_ratio(c, t):.2f}" for n, c, t in self.per_class())

    def report(self) -> str:
        neg, pos = self.class_names
        m = self.confusion
        corner = "true \\ predicted"
        width = max(len(neg), len(pos), len(corner))
        lines = [
            self.class_table(),
            f"Accuracy: {self.accuracy:.4f} ({len(self.samples)} images)",
            f"{display_name(pos)}: precision {self.precision:.4f}  recall {self.recall:.4f}  F1 {self.f1:.4f}  (threshold {self.threshold:g})",
            "Confusion matrix:",
            f"  {corner:<{width}}  {neg:>{len(neg)}}  {pos:>{len(pos)}}",
            f"  {neg:<{width}}  {m[0][0]:>{len(neg)}}  {m[0][1]:>{len(pos)}}",
            f"  {pos:<{width}}  {m[1][0]:>{len(neg)}}  {m[1][1]:>{len(pos)}}",
        ]
        mistakes = self.mistakes()
        lines.append(f"Wrongly classified: {len(mistakes)}")
        lines += [f"  {s.path}  true {self.class_names[s.label]}  predicted {p}  p(success)={prob:.4f}" for s, p, prob in mistakes]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> None:
        """predictions.csv, mistakes.csv, metrics.json and mistakes.png (a grid of the mistakes) into folder."""
        folder = Path(folder)
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


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def evaluate_decoded(model: GraspModel, images: DecodedImages, threshold: float | None = None) -> Evaluation:
    probabilities = model.success_probabilities(images.pixels)
    cut = model.info.threshold if threshold is None else threshold
    return Evaluation(model.class_names, images.samples, probabilities, cut, len(images.skipped))


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
    samples = _labelled_samples(Path(data), model.class_names, split)
    return evaluate_decoded(model, decode_images(samples, model.info.preprocess, "evaluate"), threshold)


def _labelled_samples(data: Path, class_names: tuple[str, str], split: str | None) -> list[Sample]:
    if data.is_file() and data.suffix == ".csv":
        chosen = split or "test"
        samples = read_split_csv(data, class_names).get(chosen)
        if not samples:
            raise GraspcheckError(f"{data} lists no images of split {chosen!r}; is it a run's split.csv?")
        return samples
    scanned = scan_dataset(data, class_names=class_names)
    if not scanned.pinned:
        if split:
            raise GraspcheckError(f"{data} has no split folders; drop --split or pass a run's split.csv")
        return scanned.splits["all"]
    chosen = split or ("test" if "test" in scanned.splits else "val")
    if chosen not in scanned.splits:
        raise GraspcheckError(f"{data} has no {chosen}/ folder; choose one of: {', '.join(scanned.splits)}")
    return scanned.splits[chosen]
