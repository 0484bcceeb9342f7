"""Metrics and their bootstrap intervals on hand-built evaluations with known answers (no trained model)."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import graspcheck
from graspcheck.checkpoint import CheckpointInfo
from graspcheck.data import Sample
from graspcheck.evaluation import Evaluation
from graspcheck.metrics import (
    METRIC_NAMES,
    _auc_and_ap,
    _cumulative_counts,
    _ranking,
    apply_temperature,
    average_precision,
    bootstrap_intervals,
    bootstrap_score_intervals,
    expected_calibration_error,
    fit_temperature,
    precision_recall_curve,
    rates,
    reliability_bins,
    roc_auc,
    roc_curve,
    threshold_for_precision,
)
from graspcheck.predict import GraspModel
from graspcheck.transforms import Preprocess

CLASSES = ("not_success", "success")


def evaluation_of(frames: list[tuple[str, int, int]], folder: Path = Path("."), skipped: int = 0) -> Evaluation:
    """An Evaluation of frames given as (episode, true label, predicted label), threshold 0.5."""
    samples = [Sample(folder / f"{i:05d}.png", label, episode) for i, (episode, label, _) in enumerate(frames)]
    probabilities = torch.tensor([0.9 if predicted else 0.1 for _, _, predicted in frames])
    return Evaluation(CLASSES, samples, probabilities, 0.5, skipped)


def simulated_frames(rng: np.random.Generator, episodes: int, frames: int, recall: float, specificity: float) -> list[tuple[str, int, int]]:
    """Half the episodes are successes; a whole episode is classified right or wrong (frames of one grasp
    attempt look alike), right with probability recall for successes and specificity for failures."""
    result = []
    for e in range(episodes):
        label = e % 2
        right = rng.random() < (recall if label else specificity)
        predicted = label if right else 1 - label
        result += [(f"episode{e}", label, predicted)] * frames
    return result


def width(intervals, metric: str) -> float:
    low, high = intervals.intervals[metric]
    return high - low


def test_a_hand_built_confusion_matrix_gives_the_exact_metrics():
    # tn 5, fp 3, fn 2, tp 10: asymmetric, so a transposed matrix would give other numbers.
    frames = [("a", 0, 0)] * 5 + [("b", 0, 1)] * 3 + [("c", 1, 0)] * 2 + [("d", 1, 1)] * 10
    ev = evaluation_of(frames)
    assert ev.confusion == [[5, 3], [2, 10]]
    assert ev.precision == pytest.approx(10 / 13)
    assert ev.recall == pytest.approx(10 / 12)
    assert ev.balanced_accuracy == pytest.approx((5 / 8 + 10 / 12) / 2)
    assert ev.accuracy == pytest.approx(15 / 20)
    assert ev.per_class() == [("not_success", 5, 8), ("success", 10, 12)]
    summary = ev.summary()
    assert summary["precision"] == pytest.approx(10 / 13) and summary["recall"] == pytest.approx(10 / 12)


def test_undefined_metrics_read_zero_and_a_missing_class_leaves_balanced_accuracy_defined():
    ev = evaluation_of([("a", 0, 0)] * 3 + [("b", 0, 1)])  # no success at all
    assert ev.recall == 0.0 and ev.precision == 0.0
    assert ev.balanced_accuracy == pytest.approx(3 / 4)  # the mean over the one class present


def test_the_confusion_matrix_is_cached_and_the_threshold_cannot_change_under_it():
    ev = evaluation_of([("a", 0, 0), ("b", 1, 1), ("c", 1, 0)])
    assert ev.confusion is ev.confusion
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.threshold = 0.95
    stricter = dataclasses.replace(ev, threshold=0.95)  # the way to another threshold: a new Evaluation
    assert stricter.confusion == [[1, 0], [2, 0]] and ev.confusion == [[1, 0], [1, 1]]


def test_intervals_cover_the_true_values_at_about_the_stated_rate():
    # True recall 0.9, specificity 0.7: balanced accuracy and accuracy 0.8, precision 0.9 / (0.9 + 0.3).
    # F1 is then 2 * 0.75 * 0.9 / (0.75 + 0.9).
    truth = {"recall": 0.9, "balanced_accuracy": 0.8, "accuracy": 0.8, "precision": 0.75, "specificity": 0.7, "f1": 1.35 / 1.65}
    rng = np.random.default_rng(1)
    datasets = 60
    covered = dict.fromkeys(truth, 0)
    for _ in range(datasets):
        intervals = evaluation_of(simulated_frames(rng, episodes=150, frames=4, recall=0.9, specificity=0.7)).intervals
        for metric, value in truth.items():
            low, high = intervals.intervals[metric]
            covered[metric] += low <= value <= high
    # About 95% expected; intervals from frames as if independent would cover about 68% here.
    assert all(count >= 0.85 * datasets for count in covered.values()), covered


def test_intervals_are_reproducible_with_the_same_seed():
    frames = simulated_frames(np.random.default_rng(2), episodes=80, frames=3, recall=0.8, specificity=0.8)
    ev = evaluation_of(frames)
    assert ev.bootstrap(seed=5) == ev.bootstrap(seed=5) == evaluation_of(frames).bootstrap(seed=5)
    assert ev.bootstrap(seed=5).intervals != ev.bootstrap(seed=6).intervals
    assert ev.intervals.resamples == 2000 and ev.intervals.episodes == 80


def test_the_bootstrap_resamples_episodes_not_frames():
    frames = simulated_frames(np.random.default_rng(3), episodes=200, frames=1, recall=0.85, specificity=0.75)
    same_episodes = [frame for frame in frames for _ in range(4)]
    own_episodes = [(f"{episode}/{copy}", label, predicted) for episode, label, predicted in frames for copy in range(4)]
    base, repeated, separate = (evaluation_of(f).intervals for f in (frames, same_episodes, own_episodes))
    for metric in ("accuracy", "balanced_accuracy", "precision", "recall"):
        # Four copies of each frame within its episode add no evidence; as 800 episodes they would halve the width.
        assert width(repeated, metric) == pytest.approx(width(base, metric), rel=0.1), metric
        assert width(separate, metric) < 0.7 * width(base, metric), metric


def test_bootstrap_of_5000_frames_is_vectorised():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 5000)
    predicted = np.where(rng.random(5000) < 0.9, labels, 1 - labels)
    episodes = np.arange(5000) // 4
    intervals = bootstrap_intervals(labels, predicted, episodes)
    low, high = intervals.intervals["accuracy"]
    assert low < (predicted == labels).mean() < high and intervals.episodes == 1250


def test_metrics_json_and_the_report_carry_the_intervals(tmp_path):
    frames = simulated_frames(np.random.default_rng(5), episodes=20, frames=2, recall=0.8, specificity=0.7)
    ev = evaluation_of(frames, folder=tmp_path, skipped=2)
    for sample in ev.samples:  # the mistakes grid opens the images
        Image.new("RGB", (8, 8)).save(sample.path)
    ev.write(tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for metric in ("accuracy", "balanced_accuracy", "precision", "recall"):
        low, high = metrics[f"{metric}_ci95"]
        assert [low, high] == pytest.approx(list(ev.intervals.intervals[metric]))
        assert low <= metrics[metric] <= high and low < high
    for metric in METRIC_NAMES:  # specificity and F1 too
        assert metrics[f"{metric}_ci95"] == pytest.approx(list(ev.intervals.intervals[metric]))
    assert metrics["f1_ci95"][0] <= metrics["f1"] <= metrics["f1_ci95"][1]
    assert metrics["episodes"] == 20 and metrics["bootstrap_resamples"] == 2000 and metrics["images"] == 40
    assert metrics["skipped"] == 2

    report = ev.report()
    assert re.search(r"^Balanced accuracy: \d\.\d{4} \(95% CI \d\.\d{4}-\d\.\d{4}, 20 episodes\)$", report, re.M)
    assert re.search(r"^Accuracy: \d\.\d{4} \(40 images; 95% CI \d\.\d{4}-\d\.\d{4}, 20 episodes\)$", report, re.M)
    assert "Precision of success: " in report and "Recall of success: " in report
    assert "Skipped 2 unreadable file(s)" in report
    assert "Skipped" not in evaluation_of(frames).report()


def test_a_folder_of_only_unreadable_images_is_an_error_not_accuracy_zero(tmp_path):
    for name in CLASSES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "broken.png").write_bytes(b"not a png")
    # Never run: evaluation must stop before classifying anything.
    model = GraspModel(torch.nn.Identity(), CheckpointInfo("seednet", Preprocess(size=(8, 8)), CLASSES))
    with pytest.raises(graspcheck.GraspcheckError, match="no readable image in") as raised:
        graspcheck.evaluate(model, tmp_path)
    assert "\n" not in str(raised.value)


# --- rates of a confusion matrix ---------------------------------------------------------------------------


def test_rates_of_a_fixed_confusion_matrix_are_the_hand_computed_values():
    # tn 5, fp 3, fn 2, tp 10: asymmetric, so swapping classes or axes would change every value.
    values = {name: float(value) for name, value in rates(np.array([[5, 3], [2, 10]])).items()}
    assert set(values) == set(METRIC_NAMES)
    assert values["accuracy"] == pytest.approx(15 / 20)
    assert values["balanced_accuracy"] == pytest.approx((5 / 8 + 10 / 12) / 2)
    assert values["precision"] == pytest.approx(10 / 13)
    assert values["recall"] == pytest.approx(10 / 12)
    assert values["specificity"] == pytest.approx(5 / 8)
    assert values["f1"] == pytest.approx(0.8)  # 2 * (10/13) * (10/12) / (10/13 + 10/12) = 20 / 25


def test_f1_is_zero_without_a_positive_verdict_and_undefined_without_any_positive():
    no_verdict = rates(np.array([[3, 0], [2, 0]]))  # successes exist, none found
    assert no_verdict["f1"] == 0.0 and np.isnan(no_verdict["precision"]) and no_verdict["specificity"] == 1.0
    nothing_positive = rates(np.array([[4, 0], [0, 0]]))
    assert np.isnan(nothing_positive["f1"]) and np.isnan(nothing_positive["recall"])


# --- ROC and precision-recall ------------------------------------------------------------------------------


def mann_whitney(labels: np.ndarray, scores: np.ndarray) -> float:
    """Brute force over every (success, failure) pair: a win counts 1, a tie 1/2."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return wins / (positive.size * negative.size)


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),  # reversed
        ([0, 1, 0, 1, 1], [0.5] * 5, 0.5),  # all tied
        # Successes 0.6, 0.9, 0.1 against failures 0.2, 0.6: 0.6 wins 1 and ties 1, 0.9 wins 2, 0.1 none: 3.5 / 6.
        ([0, 0, 1, 1, 1], [0.2, 0.6, 0.6, 0.9, 0.1], 7 / 12),
    ],
)
def test_roc_auc_of_hand_cases(labels, scores, expected):
    assert roc_auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


def test_roc_auc_equals_the_pairwise_mann_whitney_count_with_ties_on_random_data():
    rng = np.random.default_rng(7)
    for _ in range(20):
        labels = rng.integers(0, 2, 60)
        scores = rng.integers(0, 6, 60) / 5  # few distinct values: many ties within and across classes
        assert roc_auc(labels, scores) == pytest.approx(mann_whitney(labels, scores))
        fpr, tpr, _ = roc_curve(labels, scores)
        assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(labels, scores))  # the curve and its area agree


def test_roc_curve_has_one_point_per_distinct_score_from_0_0_to_1_1():
    labels, scores = np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.4, 0.8, 0.6])
    fpr, tpr, thresholds = roc_curve(labels, scores)
    assert thresholds.tolist() == [np.inf, 0.8, 0.6, 0.4, 0.1]
    assert fpr.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    assert tpr.tolist() == pytest.approx([0.0, 0.0, 1 / 3, 1.0, 1.0])  # the tie at 0.4 is one step, not two


def test_precision_recall_curve_end_points_and_ties():
    labels, scores = np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.4, 0.8, 0.6])
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    assert thresholds.tolist() == [0.1, 0.4, 0.6, 0.8]
    # At the lowest score every frame is a success verdict: recall 1 and precision the share of successes;
    # past the highest threshold the conventional end point (1, 0).
    assert precision.tolist() == pytest.approx([3 / 5, 3 / 4, 1 / 2, 0.0, 1.0])
    assert recall.tolist() == pytest.approx([1.0, 1.0, 1 / 3, 0.0, 0.0])


def test_average_precision_of_hand_cases_is_step_wise_and_treats_ties_as_one_threshold():
    # Descending: 1, 0, 1, 1, 0. Recall rises by 1/3 at precisions 1, 2/3 and 3/4.
    assert average_precision(np.array([1, 0, 1, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6, 0.5])) == pytest.approx(29 / 36)
    # A success and a failure tied at 0.7 form one threshold of precision 2/3; taken frame by frame in the
    # order given, the success would count at precision 1 and give 11/12.
    assert average_precision(np.array([1, 1, 0, 1]), np.array([0.9, 0.7, 0.7, 0.5])) == pytest.approx(29 / 36)
    assert average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0


def test_scores_are_nan_when_a_class_is_absent():
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.7])))
    assert np.isnan(roc_auc(np.array([0, 0]), np.array([0.2, 0.7])))
    assert np.isnan(average_precision(np.array([0, 0]), np.array([0.2, 0.7])))
    assert average_precision(np.array([1, 1]), np.array([0.2, 0.7])) == 1.0  # needs no failure
    fpr, tpr, _ = roc_curve(np.array([1, 1]), np.array([0.2, 0.7]))
    assert np.isnan(fpr).all() and tpr.tolist() == [0.0, 0.5, 1.0]


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="labels must be 0"):
        roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        roc_auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="finite"):
        average_precision(np.array([0, 1]), np.array([0.1, np.nan]))


# --- bootstrap of the threshold-free scores ----------------------------------------------------------------


def noisy_scores(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, frames)
    return labels, np.round(rng.random(frames) + 0.6 * labels, 2)  # rounded: ties included


def test_weighted_counts_equal_scores_of_the_explicitly_repeated_frames():
    # The bootstrap scores a resample as weights on the ranked frames; it must agree with copying the frames.
    rng = np.random.default_rng(8)
    labels, scores = noisy_scores(rng, 50)
    weights = rng.integers(0, 4, (5, 50))
    ranking = _ranking(labels, scores)
    auc, ap = _auc_and_ap(*_cumulative_counts(ranking, weights[:, ranking.order].astype(float)))
    for row in range(5):
        repeated = np.repeat(np.arange(50), weights[row])
        assert auc[row] == pytest.approx(mann_whitney(labels[repeated], scores[repeated]))
        assert ap[row] == pytest.approx(average_precision(labels[repeated], scores[repeated]))


def test_score_intervals_contain_the_estimate_and_are_reproducible():
    labels, scores = noisy_scores(np.random.default_rng(9), 400)
    episodes = np.arange(400) // 2
    intervals = bootstrap_score_intervals(labels, scores, episodes, resamples=500, seed=3)
    for name, estimate in (("roc_auc", roc_auc(labels, scores)), ("average_precision", average_precision(labels, scores))):
        low, high = intervals[name]
        assert low < estimate < high, name
    assert intervals == bootstrap_score_intervals(labels, scores, episodes, resamples=500, seed=3)
    assert intervals != bootstrap_score_intervals(labels, scores, episodes, resamples=500, seed=4)


def test_score_intervals_are_wider_when_the_same_frames_form_fewer_episodes():
    labels, scores = noisy_scores(np.random.default_rng(10), 200)
    # Each frame four times: as four frames of one episode they add no evidence; as four episodes they would.
    labels, scores = np.repeat(labels, 4), np.repeat(scores, 4)
    grouped = bootstrap_score_intervals(labels, scores, np.arange(800) // 4, resamples=1000)
    separate = bootstrap_score_intervals(labels, scores, np.arange(800), resamples=1000)
    for name in ("roc_auc", "average_precision"):
        assert np.diff(grouped[name])[0] > 1.5 * np.diff(separate[name])[0], name  # about 2 expected


def test_score_intervals_need_two_episodes_and_one_episode_per_frame():
    labels, scores = np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9])
    assert bootstrap_score_intervals(labels, scores, ["a", "a", "a"]) == {"roc_auc": None, "average_precision": None}
    with pytest.raises(ValueError, match="3 scores but 2 episodes"):
        bootstrap_score_intervals(labels, scores, ["a", "b"])


# --- calibration -------------------------------------------------------------------------------------------


def test_reliability_bins_and_expected_calibration_error_of_a_hand_case():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1])
    probabilities = np.array([0.1, 0.1, 0.3, 0.3, 0.8, 0.8, 0.8, 0.8, 1.0])
    bins = reliability_bins(labels, probabilities, bins=10)
    assert bins.edges == pytest.approx(np.arange(11) / 10)
    # 0.3 falls in the bin starting at 0.3, and p = 1 in the last bin.
    assert bins.counts.tolist() == [0, 2, 0, 2, 0, 0, 0, 0, 4, 1]
    assert bins.empty.tolist() == [True, False, True, False, True, True, True, True, False, False]
    assert np.isnan(bins.observed[bins.empty]).all() and np.isnan(bins.mean_predicted[bins.empty]).all()
    assert bins.mean_predicted[~bins.empty] == pytest.approx([0.1, 0.3, 0.8, 1.0])
    assert bins.observed[~bins.empty] == pytest.approx([0.0, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="read-only"):
        bins.counts[0] = 5  # frozen through and through
    # Gaps 0.1, 0.2, 0.05, 0 weighted by counts 2, 2, 4, 1 over 9 samples.
    assert expected_calibration_error(labels, probabilities) == pytest.approx((0.2 + 0.4 + 0.2) / 9)


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(-np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities)))


@pytest.mark.parametrize("confidence_factor", [3.0, 0.5])
def test_temperature_scaling_recovers_the_distortion_and_improves_calibration(confidence_factor):
    rng = np.random.default_rng(11)
    true_log_odds = rng.normal(0.0, 1.5, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-true_log_odds))).astype(int)
    reported = 1 / (1 + np.exp(-confidence_factor * true_log_odds))  # over-confident for 3, under- for 0.5
    temperature = fit_temperature(reported, labels)
    assert temperature == pytest.approx(confidence_factor, rel=0.05)
    calibrated = apply_temperature(reported, temperature)
    assert expected_calibration_error(labels, calibrated) < 0.5 * expected_calibration_error(labels, reported)
    assert negative_log_likelihood(labels, calibrated) < negative_log_likelihood(labels, reported) - 0.01
    assert ((calibrated >= 0.5) == (reported >= 0.5)).all()  # no verdict at 0.5 changes


def test_temperature_on_probabilities_equals_dividing_two_class_logits():
    logits = np.array([[0.3, 2.0], [1.5, -0.7], [0.0, 0.0], [-3.0, 4.0]])
    probabilities = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    cooled = np.exp(logits / 2.5)
    assert apply_temperature(probabilities, 2.5) == pytest.approx(cooled[:, 1] / cooled.sum(axis=1))
    assert apply_temperature(probabilities, 1.0) == pytest.approx(probabilities)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        apply_temperature(probabilities, 0.0)


# --- threshold selection -----------------------------------------------------------------------------------

# Descending: precision 1, 1/2, 2/3, 3/4, 4/5, 4/6, 4/7 - it falls, then rises again.
NON_MONOTONE = (np.array([1, 0, 1, 1, 1, 0, 0]), np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]))


@pytest.mark.parametrize(
    ("target", "threshold", "precision", "recall"),
    [
        (0.8, 0.6, 0.8, 1.0),  # exactly at the target; a scan from the top stopping at the first dip picks 0.95
        (0.75, 0.6, 0.8, 1.0),  # the lowest precise-enough threshold, not the one closest to the target (0.7)
        (0.9, 0.95, 1.0, 0.25),
        (0.6, 0.5, 4 / 6, 1.0),  # 4/7 at 0.4 falls short
    ],
)
def test_threshold_for_precision_picks_the_lowest_threshold_that_meets_the_target(target, threshold, precision, recall):
    choice = threshold_for_precision(*NON_MONOTONE, target)
    assert choice.met and choice.threshold == threshold
    assert choice.precision == pytest.approx(precision) and choice.recall == pytest.approx(recall)
    assert choice.best_precision == 1.0 and choice.best_precision_threshold == 0.95


def test_an_unreachable_precision_reports_the_best_reachable_at_its_lowest_threshold():
    # Descending precision 0, 1/2, 2/3, 2/4, 3/5, 4/6: the best, 2/3, is reached twice; the lower keeps more recall.
    choice = threshold_for_precision(np.array([0, 1, 1, 0, 1, 1]), np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), 0.7)
    assert not choice.met and choice.threshold is None and choice.precision is None and choice.recall is None
    assert choice.best_precision == pytest.approx(2 / 3) and choice.best_precision_threshold == 0.4


def test_tied_probabilities_are_one_threshold_for_the_precision_target():
    # At 0.9 a success and a failure are both positive verdicts: precision 1/2, never 1.
    labels, probabilities = np.array([1, 0, 1]), np.array([0.9, 0.9, 0.5])
    assert not threshold_for_precision(labels, probabilities, 1.0).met
    choice = threshold_for_precision(labels, probabilities, 0.6)
    assert choice.threshold == 0.5 and choice.precision == pytest.approx(2 / 3)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, float("nan")])
def test_a_target_precision_outside_0_1_is_a_one_line_error(target):
    with pytest.raises(ValueError, match=r"target precision must be in \(0, 1\]") as raised:
        threshold_for_precision(*NON_MONOTONE, target)
    assert "\n" not in str(raised.value)
