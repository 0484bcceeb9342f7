"""Binary classification metrics from confusion matrices and from scores, their confidence intervals by a
bootstrap over episodes, calibration of probabilities, and the choice of a decision threshold.

Frames of one grasp attempt look alike and are mostly classified alike, so they are not independent
observations: a bootstrap over frames would count one attempt's 20 frames as 20 pieces of evidence and give
intervals far too narrow. The bootstraps here resample whole episodes with replacement instead.

Conventions: labels are 0 (not success) and 1 (success); a verdict is success when its score (probability of
success) is >= the threshold; a metric that is undefined (its denominator is zero, e.g. ROC AUC without a
sample of each class) is NaN, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1")
SCORE_NAMES = ("roc_auc", "average_precision")
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
# Resamples drawn at once: bounds the (chunk, episodes) draw matrices to ~10 MB each at 5000 episodes.
_CHUNK = 250
# The score bootstrap also holds (chunk, frames) weight matrices: this many cells (~10 MB of float64) at most.
_SCORE_CELLS = 1_250_000
# Probabilities arrive as float32, whose spacing just below 1 is 6e-8: log-odds beyond about +-16 are not
# recoverable from them, so calibration clips probabilities to [1e-7, 1 - 1e-7] before taking the logit.
_PROBABILITY_EPSILON = 1e-7
# The search range of the temperature: beyond it a fit says more about a degenerate set than about the model.
TEMPERATURE_BOUNDS = (0.01, 100.0)


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """2x2 integer matrix [true][predicted] of 0/1 labels and predictions, classes in the order (negative, positive)."""
    cells = 2 * np.asarray(labels, dtype=np.int64) + np.asarray(predicted, dtype=np.int64)
    return np.bincount(cells, minlength=4).reshape(2, 2)


def rates(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, and the precision, recall, specificity and F1 of the positive class for
    confusion matrices of shape (..., 2, 2); a metric whose denominator is zero is NaN (undefined, not zero).

    Balanced accuracy is the mean recall over the classes present, so it stays defined when one class is absent.
    Specificity is the recall of the negative class: how many failed grasps are caught. F1 is 2tp / (2tp + fp + fn),
    which equals the harmonic mean of precision and recall and is 0, not NaN, when there are positives but no
    positive verdict; it is NaN only with neither a positive sample nor a positive verdict."""
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
            "recall": class_recalls[1],
            "specificity": class_recalls[0],
            "f1": 2 * tp / (2 * tp + fp + fn),
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
    """Confidence intervals of the metrics in METRIC_NAMES by resampling episodes.

    Each resample draws as many episodes as there are, with replacement, takes all frames of each drawn
    episode and recomputes the metrics; the interval is the central ``confidence`` share of those values
    (resamples where a metric is undefined, e.g. precision without a positive verdict, are left out of that
    metric's interval). The same inputs and seed give the same intervals.
    """
    episode_codes, episode_count = _episode_codes(episodes)
    if episode_count < 2:
        return BootstrapIntervals({name: None for name in METRIC_NAMES}, episode_count, resamples, confidence, seed)
    # Each episode's own confusion matrix, flattened to (tn, fp, fn, tp): a resample's matrix is then the
    # sum of its drawn episodes' rows, weighted by how often each was drawn.
    cells = 2 * np.asarray(labels, dtype=np.int64) + np.asarray(predicted, dtype=np.int64)
    per_episode = np.bincount(4 * episode_codes + cells, minlength=4 * episode_count).reshape(episode_count, 4)
    totals = [times_drawn @ per_episode for times_drawn in _episode_draws(episode_count, resamples, seed, _CHUNK)]
    values = rates(np.concatenate(totals).reshape(resamples, 2, 2))
    intervals = {name: _percentile_interval(values[name], confidence) for name in METRIC_NAMES}
    return BootstrapIntervals(intervals, episode_count, resamples, confidence, seed)


def _episode_codes(episodes: np.ndarray | list[str]) -> tuple[np.ndarray, int]:
    """Each frame's episode as an integer 0..count-1, and the count of episodes."""
    codes = np.unique(np.asarray(episodes), return_inverse=True)[1].reshape(-1)
    return codes, int(codes.max()) + 1 if codes.size else 0


def _episode_draws(episode_count: int, resamples: int, seed: int, chunk: int) -> Iterator[np.ndarray]:
    """How often each episode is drawn in each resample, as (chunk, episode_count) integer matrices.

    A resample draws episode_count episodes with replacement; counting the draws turns any per-episode sum
    into a matrix product, so no resample is materialised frame by frame."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, episode_count, size=(rows, episode_count))
        offsets = np.arange(rows)[:, None] * episode_count
        yield np.bincount((drawn + offsets).ravel(), minlength=rows * episode_count).reshape(rows, episode_count)


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The central ``confidence`` share of the defined (non-NaN) values; None when none is defined."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


# --- Threshold-free scores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ranking:
    """Frames sorted by descending score, and where each run of tied scores ends: a threshold can only fall
    between distinct scores, so the curves have one point per distinct score, never one per frame."""

    order: np.ndarray  # frame indices, highest score first
    labels: np.ndarray  # labels in that order, float64
    group_ends: np.ndarray  # index in `order` of the last frame of each distinct score
    thresholds: np.ndarray  # the distinct scores, descending


def _ranking(labels: np.ndarray, scores: np.ndarray) -> _Ranking:
    labels, scores = _checked(labels, scores)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    group_ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True)) if ranked.size else np.zeros(0, np.int64)
    return _Ranking(order, labels[order].astype(np.float64), group_ends, ranked[group_ends])


def _checked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores as flat arrays, after checking that they pair up, labels are 0/1 and scores finite."""
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (not success) or 1 (success)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return labels.astype(np.int64), scores


def _cumulative_counts(ranking: _Ranking, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, false positives) at each distinct threshold, for rows of frame weights (R, N) given in
    ranking order: a weight is how many times a frame is counted (1 for the data as they are)."""
    positives = np.cumsum(weights * ranking.labels, axis=1)[:, ranking.group_ends]
    verdicts = np.cumsum(weights, axis=1)[:, ranking.group_ends]
    return positives, verdicts - positives


def _auc_and_ap(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision of each row of cumulative counts from _cumulative_counts.

    The AUC is the trapezoid area under the ROC curve, which equals the Mann-Whitney probability that a random
    positive scores above a random negative, ties counting 1/2. AP is the step-wise sum over thresholds of
    precision times the gain in recall, as in scikit-learn (no interpolation)."""
    positives, negatives = tp[:, -1], fp[:, -1]
    tp_gain, fp_gain = np.diff(tp, axis=1, prepend=0.0), np.diff(fp, axis=1, prepend=0.0)
    tp_before = tp - tp_gain
    verdicts = tp + fp
    precision = np.divide(tp, verdicts, out=np.zeros_like(tp), where=verdicts > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (fp_gain * (tp + tp_before)).sum(axis=1) / (2 * positives * negatives)
        ap = (tp_gain * precision).sum(axis=1) / positives
    return auc, ap


def _unit_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[_Ranking, np.ndarray, np.ndarray]:
    """The ranking and its cumulative counts with every frame counted once."""
    ranking = _ranking(labels, scores)
    tp, fp = _cumulative_counts(ranking, np.ones((1, ranking.labels.size)))
    return ranking, tp[0], fp[0]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), one point per distinct score, thresholds descending.

    The first point is (0, 0) at threshold +inf (no positive verdict), the last is (1, 1) at the lowest
    score. A rate is NaN throughout when its class is absent."""
    ranking, tp, fp = _unit_counts(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = np.append(0.0, fp) / (fp[-1] if fp.size else 0.0)
        tpr = np.append(0.0, tp) / (tp[-1] if tp.size else 0.0)
    return fpr, tpr, np.append(np.inf, ranking.thresholds)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random success scores above a random failure, ties
    counting 1/2. NaN unless both classes are present."""
    _, tp, fp = _unit_counts(labels, scores)
    return float(_auc_and_ap(tp[None], fp[None])[0][0]) if tp.size else float("nan")


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as scikit-learn returns them: thresholds are the distinct scores
    ascending, and precision and recall have one more point, (1, 0), past the highest threshold.

    The first point is at the lowest score: recall 1 and precision the share of successes. Recall is NaN
    throughout without a success; precision is always defined, as every threshold has a positive verdict."""
    ranking, tp, fp = _unit_counts(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / (tp[-1] if tp.size else 0.0)
    precision = tp / (tp + fp)
    return np.append(precision[::-1], 1.0), np.append(recall[::-1], 0.0), ranking.thresholds[::-1]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Step-wise average precision, the sum over thresholds of precision times the gain in recall (scikit-learn's
    definition, no interpolation). It needs no failure (it is 1 without one) but is NaN without a success."""
    _, tp, fp = _unit_counts(labels, scores)
    return float(_auc_and_ap(tp[None], fp[None])[1][0]) if tp.size else float("nan")


def bootstrap_score_intervals(
    labels: np.ndarray,
    scores: np.ndarray,
    episodes: np.ndarray | list[str],
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> dict[str, tuple[float, float] | None]:
    """Percentile confidence intervals of ROC AUC and average precision (keys in SCORE_NAMES) by resampling
    whole episodes with replacement, as bootstrap_intervals does for the thresholded metrics.

    The frames are ranked once; a resample is then a row of frame weights (how often each frame's episode
    was drawn), and its scores come from weighted cumulative sums, so no resample is sorted or copied. Resamples
    where a score is undefined (one class drawn only) are left out; an interval is None with fewer than two
    episodes or when no resample defines the score. The same inputs and seed give the same intervals."""
    ranking = _ranking(labels, scores)
    episode_codes, episode_count = _episode_codes(episodes)
    if episode_codes.size != ranking.order.size:
        raise ValueError(f"{ranking.order.size} scores but {episode_codes.size} episodes")
    if episode_count < 2:
        return {name: None for name in SCORE_NAMES}
    ranked_episodes = episode_codes[ranking.order]
    chunk = max(1, min(_CHUNK, _SCORE_CELLS // ranking.order.size))
    aucs, aps = [], []
    for times_drawn in _episode_draws(episode_count, resamples, seed, chunk):
        auc, ap = _auc_and_ap(*_cumulative_counts(ranking, times_drawn[:, ranked_episodes].astype(np.float64)))
        aucs.append(auc)
        aps.append(ap)
    return {
        "roc_auc": _percentile_interval(np.concatenate(aucs), confidence),
        "average_precision": _percentile_interval(np.concatenate(aps), confidence),
    }


# --- Calibration ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """A reliability diagram's data: equal-width bins of p(success) on [0, 1], bin k holding
    edges[k] <= p < edges[k + 1] (the last bin also holds p = 1). An empty bin has count 0 and NaN means.

    The fields are read-only NumPy arrays, so a plot can select the filled bins with ``counts > 0``; equality
    is identity, as element-wise comparison of arrays has no single truth value."""

    edges: np.ndarray  # bins + 1 values, 0 to 1
    counts: np.ndarray  # int64
    mean_predicted: np.ndarray  # mean p(success) of the bin's samples
    observed: np.ndarray  # share of successes among them

    def __post_init__(self) -> None:
        for array in (self.edges, self.counts, self.mean_predicted, self.observed):
            array.flags.writeable = False

    @property
    def empty(self) -> np.ndarray:
        return self.counts == 0


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> ReliabilityBins:
    """Count, mean predicted probability and observed success frequency per equal-width bin of p(success):
    a calibrated model's points lie on the diagonal, observed == predicted."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    labels, probabilities = _checked(labels, probabilities)
    if ((probabilities < 0) | (probabilities > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    # k / bins by division is the float nearest to it, so a probability such as 0.3 falls in the bin that starts there.
    edges = np.arange(bins + 1) / bins
    index = np.minimum(np.searchsorted(edges, probabilities, side="right") - 1, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=probabilities, minlength=bins) / counts
        observed = np.bincount(index, weights=labels, minlength=bins) / counts
    return ReliabilityBins(edges, counts, mean_predicted, observed)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean over equal-width bins of |observed success frequency - mean predicted probability|:
    how far, on average over samples, the stated p(success) is from how often success actually happens.
    NaN without samples."""
    reliability = reliability_bins(labels, probabilities, bins)
    filled = ~reliability.empty
    gaps = np.abs(reliability.observed[filled] - reliability.mean_predicted[filled])
    total = reliability.counts.sum()
    return float((reliability.counts[filled] * gaps).sum() / total) if total else float("nan")


def _log_odds(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), _PROBABILITY_EPSILON, 1 - _PROBABILITY_EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def _sigmoid(log_odds: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -log_odds))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of sigmoid(logit(p) / T) on held-out
    labelled samples: T > 1 softens an over-confident model, T < 1 sharpens an under-confident one, and no
    verdict at threshold 0.5 changes.

    With b = 1/T the NLL is mean(log(1 + exp(b z)) - y b z) for log-odds z, convex in b, so its derivative
    mean((sigmoid(b z) - y) z) rises with b and bisection finds its zero; T is kept within
    [0.01, 100] (perfectly separated samples would otherwise drive it to 0). Probabilities are clipped to
    [1e-7, 1 - 1e-7] before the logit."""
    labels, probabilities = _checked(labels, probabilities)
    if not labels.size:
        raise ValueError("fitting a temperature needs at least one labelled sample")
    log_odds = _log_odds(probabilities)

    def slope(inverse_temperature: float) -> float:
        return float(np.mean((_sigmoid(inverse_temperature * log_odds) - labels) * log_odds))

    low, high = 1 / TEMPERATURE_BOUNDS[1], 1 / TEMPERATURE_BOUNDS[0]
    if slope(low) >= 0:
        return TEMPERATURE_BOUNDS[1]
    if slope(high) <= 0:
        return TEMPERATURE_BOUNDS[0]
    for _ in range(100):  # halves a bracket of width 100 to below float64 resolution
        middle = (low + high) / 2
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    return float(2 / (low + high))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """p(success) with its log-odds divided by the temperature: sigmoid(logit(p) / T).

    Two-class softmax logits (a, b) give p(success) = sigmoid(b - a), so dividing both logits by T divides the
    log-odds by T: the model applies the fitted T to its logits and gets exactly these probabilities."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return _sigmoid(_log_odds(probabilities) / temperature)


# --- Threshold selection --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold chosen for a target precision of success, and the best precision reachable at all.

    When the target is not met (``met`` False) threshold, precision and recall are None; best_precision is
    the highest precision over thresholds with at least one positive verdict and best_precision_threshold the
    lowest threshold that reaches it."""

    threshold: float | None
    precision: float | None
    recall: float | None
    met: bool
    best_precision: float
    best_precision_threshold: float


def threshold_for_precision(labels: np.ndarray, probabilities: np.ndarray, target: float) -> ThresholdChoice:
    """The lowest threshold, among the distinct probabilities, whose precision of success is >= target.

    A robot must not carry on after a failed grasp, so precision matters most; of the thresholds precise
    enough the lowest keeps the most recall. Precision need not rise with the threshold, so every distinct
    probability is tried, not a search that assumes it does."""
    if not 0 < target <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    ranking, tp, fp = _unit_counts(labels, probabilities)
    if not tp.size:
        raise ValueError("choosing a threshold needs at least one labelled sample")
    precision = tp / (tp + fp)  # every distinct threshold has a positive verdict: the samples at it
    best = int(np.flatnonzero(precision == precision.max())[-1])
    meeting = np.flatnonzero(precision >= target)
    best_precision, best_threshold = float(precision[best]), float(ranking.thresholds[best])
    if not meeting.size:
        return ThresholdChoice(None, None, None, False, best_precision, best_threshold)
    chosen = int(meeting[-1])
    recall = float(tp[chosen] / tp[-1])
    return ThresholdChoice(float(ranking.thresholds[chosen]), float(precision[chosen]), recall, True, best_precision, best_threshold)
