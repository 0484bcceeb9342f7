"""Binary classification metrics from confusion matrices, and their confidence intervals by a bootstrap over
episodes.

Frames of one grasp attempt look alike and are mostly classified alike, so they are not independent
observations: a bootstrap over frames would count one attempt's 20 frames as 20 pieces of evidence and give
intervals far too narrow. The bootstrap here resamples whole episodes with replacement instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("accuracy", "balanced_accuracy", "precision", "recall")
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
# Resamples drawn at once: bounds the (chunk, episodes) draw matrices to ~10 MB each at 5000 episodes.
_CHUNK = 250


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """2x2 integer matrix [true][predicted] of 0/1 labels and predictions, classes in the order (negative, positive)."""
    cells = 2 * np.asarray(labels, dtype=np.int64) + np.asarray(predicted, dtype=np.int64)
    return np.bincount(cells, minlength=4).reshape(2, 2)


def rates(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, precision and recall of the positive class for confusion matrices of shape
    (..., 2, 2); a metric whose denominator is zero is NaN (undefined, not zero).

    Balanced accuracy is the mean recall over the classes present, so it stays defined when one class is absent."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tn, fp = confusion[..., 0, 0], confusion[..., 0, 1]
    fn, tp = confusion[..., 1, 0], confusion[..., 1, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        class_recalls = np.stack([tn / (tn + fp), tp / (tp + fn)])
        present = ~np.isnan(class_recalls)
        return {
            "accuracy": (tn + tp) / (tn + fp + fn + tp),
            "balanced_accuracy": np.where(present, class_recalls, 0.0).sum(axis=0) / present.sum(axis=0),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
        }


@dataclass(frozen=True)
class BootstrapIntervals:
    """Percentile confidence intervals of each metric in METRIC_NAMES; None where there are fewer than two
    episodes (nothing to resample) or the metric is undefined in every resample."""

    intervals: dict[str, tuple[float, float] | None]
    episodes: int
    resamples: int
    confidence: float
    seed: int


def bootstrap_intervals(
    labels: np.ndarray,
    predicted: np.ndarray,
    episodes: np.ndarray | list[str],
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> BootstrapIntervals:
    """Confidence intervals of accuracy, balanced accuracy, precision and recall by resampling episodes.

    Each resample draws as many episodes as there are, with replacement, takes all frames of each drawn
    episode and recomputes the metrics; the interval is the central ``confidence`` share of those values
    (resamples where a metric is undefined, e.g. precision without a positive verdict, are left out of that
    metric's interval). The same inputs and seed give the same intervals.
    """
    episode_codes = np.unique(np.asarray(episodes), return_inverse=True)[1].reshape(-1)
    episode_count = int(episode_codes.max()) + 1 if episode_codes.size else 0
    if episode_count < 2:
        return BootstrapIntervals({name: None for name in METRIC_NAMES}, episode_count, resamples, confidence, seed)
    # Each episode's own confusion matrix, flattened to (tn, fp, fn, tp): a resample's matrix is then the
    # sum of its drawn episodes' rows, weighted by how often each was drawn.
    cells = 2 * np.asarray(labels, dtype=np.int64) + np.asarray(predicted, dtype=np.int64)
    per_episode = np.bincount(4 * episode_codes + cells, minlength=4 * episode_count).reshape(episode_count, 4)
    rng = np.random.default_rng(seed)
    totals = []
    for start in range(0, resamples, _CHUNK):
        chunk = min(_CHUNK, resamples - start)
        drawn = rng.integers(0, episode_count, size=(chunk, episode_count))
        offsets = np.arange(chunk)[:, None] * episode_count
        times_drawn = np.bincount((drawn + offsets).ravel(), minlength=chunk * episode_count).reshape(chunk, episode_count)
        totals.append(times_drawn @ per_episode)
    values = rates(np.concatenate(totals).reshape(resamples, 2, 2))
    tail = 100 * (1 - confidence) / 2
    intervals: dict[str, tuple[float, float] | None] = {}
    for name in METRIC_NAMES:
        defined = values[name][~np.isnan(values[name])]
        if defined.size:
            low, high = np.percentile(defined, [tail, 100 - tail])
            intervals[name] = (float(low), float(high))
        else:
            intervals[name] = None
    return BootstrapIntervals(intervals, episode_count, resamples, confidence, seed)
