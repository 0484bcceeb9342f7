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
from graspcheck.metrics import bootstrap_intervals
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
    truth = {"recall": 0.9, "balanced_accuracy": 0.8, "accuracy": 0.8, "precision": 0.75}
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
