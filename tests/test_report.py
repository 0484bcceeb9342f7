"""report.html of a run and of an evaluation, opened in a real headless Chromium; threshold auto and
calibration end to end (CLI and API), on a run whose model is not perfect, so that mistakes, curves and the
threshold search all carry data."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graspcheck
from browser import chromium_or_skip, render
from conftest import FAST
from graspcheck.metrics import threshold_for_precision


@pytest.fixture(scope="module")
def imperfect(tmp_path_factory):
    """A seednet trained for one epoch on a small generated set: right more often than not, far from perfect."""
    from imagegen import make_dataset

    data = make_dataset(tmp_path_factory.mktemp("hard"), episodes_per_class=10, frames=3, seed=5)
    out = tmp_path_factory.mktemp("runs") / "run"
    result = graspcheck.train(data, epochs=2, seed=3, out=str(out), test_every=1, **{**FAST, "lr": 0.0005})
    evaluation = result.evaluation
    assert evaluation is not None and 0 < len(evaluation.mistakes()) < len(evaluation.samples), "the model must be imperfect"
    return result


def log_loss(labels, probabilities):
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "graspcheck", *map(str, args)], capture_output=True, text=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_writes_a_report_that_renders_in_chromium(imperfect):
    chromium_or_skip()
    report = imperfect.run_dir / "report.html"
    assert (imperfect.run_dir / "test_evaluation" / "metrics.json").is_file()
    page = render(report)
    assert not page.problems(), page.problems()
    assert page.tables >= 5  # headline, configuration, data, test epochs, threshold, ...
    assert page.images and all(image.decoded for image in page.images), [i for i in page.images if not i.decoded]
    mistakes = len(imperfect.evaluation.mistakes())
    for heading in ("Verdict quality", "Configuration", "Training", "Confusion matrix", "Calibration", "Where the model looks"):
        assert heading in page.text
    assert f"Every wrongly classified image ({mistakes})" in page.text
    # Every mistake is in the gallery, and each saliency card shows the image and its map.
    assert sum(1 for image in page.images if image.name == "saliency") >= min(mistakes, 48)


def test_report_command_rewrites_a_run_report_and_reports_on_an_evaluation_folder(imperfect, tmp_path):
    report = imperfect.run_dir / "report.html"
    report.unlink()
    result = run_cli("report", imperfect.run_dir)
    assert result.returncode == 0, result.stderr
    assert report.is_file()
    ev_dir = tmp_path / "ev"
    result = run_cli("evaluate", imperfect.best, imperfect.run_dir / "split.csv", "--split", "val", "--out", ev_dir)
    assert result.returncode == 0, result.stderr
    html = (ev_dir / "report.html").read_text()
    assert "Verdict quality" in html and "evaluated" in html  # the data it was evaluated on
    assert "Configuration" not in html  # an evaluation folder outside a run has no training to show
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_report_refuses_a_folder_that_is_neither_run_nor_evaluation(tmp_path):
    result = run_cli("report", tmp_path)
    assert result.returncode != 0
    assert "neither a run folder" in result.stderr and "Traceback" not in result.stderr


def test_report_numbers_match_the_evaluation(imperfect):
    page_text = (imperfect.run_dir / "report.html").read_text()
    ev = imperfect.evaluation
    assert f"{ev.balanced_accuracy:.4f}" in page_text
    assert f"{ev.roc_auc:.4f}" in page_text
    low, high = ev.intervals.intervals["balanced_accuracy"]
    assert f"{low:.4f} to {high:.4f}" in page_text


def test_threshold_auto_writes_a_new_checkpoint_that_predict_and_export_use(imperfect, tmp_path):
    best = imperfect.best
    before = sha256(best)
    val = graspcheck.evaluate(best, imperfect.run_dir / "split.csv", split="val")
    labels, scores = val.labels.numpy(), val.probabilities.numpy()
    # The highest precision reachable, so the search has to move the threshold away from 0.5.
    target = threshold_for_precision(labels, scores, 1.0).best_precision
    expected = threshold_for_precision(labels, scores, target)
    result = run_cli("evaluate", best, imperfect.run_dir / "split.csv", "--split", "val", "--threshold", "auto",
                     "--target-precision", target, "--out", tmp_path / "ev")
    assert result.returncode == 0, result.stderr
    tuned = best.with_name("best.tuned.safetensors")
    assert sha256(best) == before  # the original is never modified
    model = graspcheck.load(tuned)
    assert model.info.threshold == pytest.approx(expected.threshold)
    assert f"recall {expected.recall:.4f}" in result.stdout
    # predict uses the tuned threshold: verdicts follow it, not 0.5.
    predictions = model.predict([s.path for s in val.samples])
    assert [p.label == "success" for p in predictions] == [p >= expected.threshold for p in scores.tolist()]
    # export carries it.
    from graspcheck.export import export

    onnx_model = graspcheck.load(export(tuned, out=tmp_path / "tuned.onnx"))
    assert onnx_model.info.threshold == pytest.approx(expected.threshold)
    # A second run refuses to overwrite the tuned checkpoint.
    again = run_cli("evaluate", best, imperfect.run_dir / "split.csv", "--split", "val", "--threshold", "auto",
                    "--target-precision", target, "--out", tmp_path / "ev2")
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_an_unreachable_target_precision_says_what_is_reachable(imperfect, tmp_path):
    """The image the model is surest of is filed as a failure: no threshold then reaches precision 1."""
    import shutil

    val = graspcheck.evaluate(imperfect.best, imperfect.run_dir / "split.csv", split="val")
    surest = int(val.probabilities.argmax())
    for i, sample in enumerate(val.samples):
        label = "not_success" if i == surest else val.class_names[sample.label]
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.path, tmp_path / "data" / label / f"{i:03d}_{sample.path.name}")
    relabelled = graspcheck.evaluate(imperfect.best, tmp_path / "data")
    best = threshold_for_precision(relabelled.labels.numpy(), relabelled.probabilities.numpy(), 1.0)
    assert not best.met
    result = run_cli("evaluate", imperfect.best, tmp_path / "data", "--threshold", "auto", "--target-precision", 1.0,
                     "--checkpoint-out", tmp_path / "t.safetensors", "--out", tmp_path / "ev")
    assert result.returncode != 0
    assert "no threshold reaches precision 1" in result.stderr and f"{best.best_precision:.4f}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "t.safetensors").exists()


def test_calibration_is_stored_and_used_by_predict_and_onnx(imperfect, tmp_path):
    from graspcheck.evaluation import tune
    from graspcheck.export import export

    tuned = tune(imperfect.best, imperfect.run_dir / "split.csv", split="val", calibrate=True,
                 out=tmp_path / "calibrated.safetensors")
    original = graspcheck.evaluate(imperfect.best, imperfect.run_dir / "split.csv", split="val")
    labels = original.labels.numpy()
    assert tuned.temperature != pytest.approx(1.0)
    # Fitted on these images by maximum likelihood: their log-loss cannot get worse.
    calibrated = graspcheck.evaluate(tuned.checkpoint, imperfect.run_dir / "split.csv", split="val")
    assert log_loss(labels, calibrated.probabilities.numpy()) < log_loss(labels, original.probabilities.numpy())
    assert calibrated.probabilities.numpy() == pytest.approx(tuned.evaluation.probabilities.numpy(), abs=1e-5)
    onnx = graspcheck.load(export(tuned.checkpoint, out=tmp_path / "calibrated.onnx"))
    paths = [s.path for s in calibrated.samples]
    assert [p.success_probability for p in onnx.predict(paths)] == pytest.approx(calibrated.probabilities.tolist(), abs=1e-4)


def test_train_calibrate_stores_a_temperature_fitted_on_validation(dataset, tmp_path):
    result = graspcheck.train(dataset, epochs=1, seed=1, out=str(tmp_path / "run"), calibrate=True, **FAST)
    model = graspcheck.load(result.best)
    assert model.info.temperature != 1.0
    metrics = json.loads((result.run_dir / "test_evaluation" / "metrics.json").read_text())
    assert metrics["temperature"] == pytest.approx(model.info.temperature)


def test_attribute_breakdown_groups_by_manifest_columns(tmp_path):
    """A manifest column that decides correctness shows up as groups with accuracies 0 and 1."""
    from graspcheck.data import Sample
    from graspcheck.evaluation import Evaluation
    from graspcheck.report import attribute_breakdown
    import torch

    (tmp_path / "success").mkdir()
    (tmp_path / "not_success").mkdir()
    rows, samples, probabilities = [], [], []
    for i in range(40):
        label = i % 2
        folder = "success" if label else "not_success"
        path = tmp_path / folder / f"{i}.png"
        path.touch()
        lighting = "dark" if i < 20 else "bright"
        mass = str(0.1 + i / 100)
        offset = f"{i / 100} 0 {-i / 100}"  # a vector: grouped by its length, which grows with i
        rows.append(f"{folder}/{i}.png,{folder},ep{i},{lighting},{mass},{offset},frame_{i}.json")
        samples.append(Sample(path, label, f"ep{i}"))
        # Right in bright light, wrong in the dark.
        probabilities.append(float(label) if lighting == "bright" else 1.0 - label)
    (tmp_path / "manifest.csv").write_text("path,label,episode,lighting,object_mass,approach_offset,parameters\n" + "\n".join(rows) + "\n")
    ev = Evaluation(("not_success", "success"), samples, torch.tensor(probabilities), 0.5)
    tables = attribute_breakdown(ev)
    lighting = {group: (n, accuracy) for group, n, _, accuracy, _ in tables["lighting"]}
    assert lighting == {"bright": (20, 1.0), "dark": (20, 0.0)}
    assert len(tables["object_mass"]) == 4  # quartiles of a numeric column
    assert sum(n for _, n, _, _, _ in tables["object_mass"]) == 40
    # Vectors by their length, in quartiles from the shortest; the lower half is images 0-19 (dark: all wrong).
    offsets = tables["approach_offset"]
    assert [n for _, n, _, _, _ in offsets] == [10, 10, 10, 10] and [a for _, _, _, a, _ in offsets] == [0.0, 0.0, 1.0, 1.0]
    assert "parameters" not in tables  # a value per image: no groups to compare


def test_a_tuned_checkpoint_gives_the_verdicts_its_tuning_reported(imperfect, tmp_path):
    """Calibrated and thresholded together: the threshold is one image's probability, so the tuned checkpoint
    must compute exactly the probabilities the threshold was chosen on."""
    from graspcheck.evaluation import tune

    val = graspcheck.evaluate(imperfect.best, imperfect.run_dir / "split.csv", split="val")
    target = threshold_for_precision(val.labels.numpy(), val.probabilities.numpy(), 1.0).best_precision
    tuned = tune(imperfect.best, imperfect.run_dir / "split.csv", split="val", target_precision=min(target, 0.8),
                 calibrate=True, out=tmp_path / "tuned.safetensors")
    again = graspcheck.evaluate(tuned.checkpoint, imperfect.run_dir / "split.csv", split="val")
    assert again.predicted.tolist() == tuned.evaluation.predicted.tolist()
    assert again.precision == tuned.evaluation.precision >= min(target, 0.8)


def test_the_report_escapes_class_names(tmp_path):
    from graspcheck.data import Sample
    from graspcheck.evaluation import Evaluation
    from graspcheck.report import write_report
    import torch

    names = ("<b>failed</b>", "<img src=x onerror=alert(1)>")
    samples = [Sample(tmp_path / f"{i}.png", i % 2, f"e{i}") for i in range(8)]
    ev = Evaluation(names, samples, torch.linspace(0.05, 0.95, 8), 0.5)
    html = write_report(tmp_path, ev).read_text()
    assert "<img src=x" not in html and "<b>failed" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.parametrize("damage", ["temperature", "threshold", "classes", "probability", "empty"])
def test_a_damaged_evaluation_folder_is_one_line(tmp_path, cli, damage):
    folder = tmp_path / "ev"
    folder.mkdir()
    metrics = {"confusion": {"classes": ["not_success", "success"]}, "threshold": 0.5, "temperature": 1.0}
    rows = ["path,true,predicted,success_probability,episode", "a.png,success,success,0.9,e1", "b.png,not_success,success,0.6,e2"]
    if damage == "temperature":
        metrics["temperature"] = 0
    elif damage == "threshold":
        metrics["threshold"] = float("nan")
    elif damage == "classes":
        metrics["confusion"]["classes"].append("maybe")
    elif damage == "probability":
        rows[1] = "a.png,success,success,7.5,e1"
    else:
        rows = rows[:1]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "predictions.csv").write_text("\n".join(rows) + "\n")
    result = cli("report", folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "holds no readable evaluation" in result.stderr
    assert not (folder / "report.html").exists()


@pytest.mark.parametrize("temperature", [0, -1, 1e-300, 1e300, "2", True, None])
def test_a_checkpoint_temperature_outside_what_calibration_fits_is_refused(temperature):
    from graspcheck.checkpoint import CheckpointInfo, InvalidMetadata
    from graspcheck.transforms import Preprocess

    text = json.loads(CheckpointInfo("seednet", Preprocess(size=(32, 32)), ("not_success", "success"), temperature=2.0).to_json())
    assert text["temperature"] == 2.0 and text["format_version"] == 2
    text["temperature"] = temperature
    with pytest.raises(InvalidMetadata, match="temperature"):
        CheckpointInfo.from_json(json.dumps(text))
