import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import graspcheck


from conftest import run_cli  # noqa: E402  (also imported from here by other test modules)


def _split_paths(run_dir, split):
    with open(run_dir / "split.csv") as f:
        return [(r["path"], r["label"]) for r in csv.DictReader(f) if r["split"] == split]


def test_predict_agrees_with_evaluate_on_the_same_images(trained):
    evaluation = graspcheck.evaluate(trained.best, trained.run_dir / "split.csv", split="val")
    model = graspcheck.load(trained.best)
    predictions = {p.source: p for p in model.predict([s.path for s in evaluation.samples])}
    for sample, probability, predicted in zip(evaluation.samples, evaluation.probabilities.tolist(), evaluation.predicted.tolist()):
        p = predictions[str(sample.path)]
        assert p.success_probability == pytest.approx(probability, abs=1e-6)
        assert p.label == evaluation.class_names[predicted]


def test_evaluation_metrics_are_consistent(trained):
    ev = graspcheck.evaluate(trained.run_dir, trained.run_dir / "split.csv", split="test")
    m = ev.confusion
    assert sum(map(sum, m)) == len(ev.samples) == len(_split_paths(trained.run_dir, "test"))
    assert ev.accuracy == pytest.approx((m[0][0] + m[1][1]) / len(ev.samples))
    tp, fp, fn = m[1][1], m[0][1], m[1][0]
    assert ev.precision == pytest.approx(tp / (tp + fp) if tp + fp else 0)
    assert ev.recall == pytest.approx(tp / (tp + fn) if tp + fn else 0)
    assert len(ev.mistakes()) == m[0][1] + m[1][0]


def test_a_raised_threshold_never_adds_success_verdicts(trained):
    images = [p for p, _ in _split_paths(trained.run_dir, "val")]
    model = graspcheck.load(trained.best)
    low = sum(p.label == "success" for p in model.predict(images, threshold=0.3))
    high = sum(p.label == "success" for p in model.predict(images, threshold=0.9))
    assert high <= low


def test_predict_accepts_arrays_and_pil_images(trained):
    model = graspcheck.load(trained.best)
    path, _ = _split_paths(trained.run_dir, "val")[0]
    with Image.open(path) as image:
        pil = image.convert("RGB")
    from_file, from_pil, from_array = model.predict([path, pil, np.asarray(pil)])
    assert (from_file.source, from_pil.source, from_array.source) == (path, "<image 1>", "<image 2>")  # input order
    assert from_pil.success_probability == pytest.approx(from_file.success_probability, abs=1e-6)
    assert from_array.success_probability == pytest.approx(from_file.success_probability, abs=1e-6)


def test_cli_predict_prints_lines_json_and_csv(trained, dataset):
    folder = dataset / "success"
    lines = run_cli("predict", trained.best, folder)
    assert lines.returncode == 0, lines.stderr
    rows = [line.split("\t") for line in lines.stdout.splitlines()]
    assert len(rows) == 48 and all(r[1] in ("success", "not_success") for r in rows)
    assert "success:" in lines.stderr and "(of 48 images)" in lines.stderr

    as_json = json.loads(run_cli("predict", trained.best, folder, "--json").stdout)
    as_csv = list(csv.DictReader(run_cli("predict", trained.best, folder, "--csv").stdout.splitlines()))
    assert [j["source"] for j in as_json] == [c["source"] for c in as_csv] == [r[0] for r in rows]
    assert [round(j["success_probability"], 4) for j in as_json] == [float(r[2]) for r in rows]


def test_cli_evaluate_writes_its_report(trained, tmp_path):
    result = run_cli("evaluate", trained.run_dir, trained.run_dir / "split.csv", "--split", "val", "--out", tmp_path / "ev", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Not success:" in result.stdout and "Confusion matrix" in result.stdout and "F1" in result.stdout
    for name in ("predictions.csv", "mistakes.csv", "metrics.json", "mistakes.png"):
        assert (tmp_path / "ev" / name).is_file(), name
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["images"] == len(_split_paths(trained.run_dir, "val"))


def test_a_pickle_with_code_is_refused_as_weights(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Exploit()}, path)
    model = graspcheck.create_model("resnet18")
    from graspcheck.models import load_pretrained

    with pytest.raises(graspcheck.GraspcheckError, match="cannot read weights"):
        load_pretrained(model, path)


def test_api_evaluation_write_includes_the_mistakes_grid(trained, tmp_path):
    ev = graspcheck.evaluate(trained.best, trained.run_dir / "split.csv", split="val")
    ev.write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "mistakes.csv", "mistakes.png", "predictions.csv", "report.html"]


def test_streamed_prediction_matches_one_batch_and_skips_unreadable_files(trained, dataset, tmp_path):
    model = graspcheck.load(trained.best)
    folder = tmp_path / "mixed"
    folder.mkdir()
    images = sorted((dataset / "success").iterdir())[:7]
    for i, path in enumerate(images):
        (folder / f"{i:02d}.png").write_bytes(path.read_bytes())
    (folder / "03_broken.png").write_bytes(b"not a png")
    pil = Image.open(images[0]).convert("RGB")
    whole = model.predict([folder, pil], batch_size=64)
    streamed = list(model.iter_predict([folder, pil], batch_size=3))  # batches end mid-folder and mid-mix
    assert [p.source for p in streamed] == [p.source for p in whole]
    assert [p.source for p in whole][-1] == "<image 1>" and len(whole) == 8  # 7 readable files + the PIL image
    for a, b in zip(whole, streamed):
        assert a.success_probability == pytest.approx(b.success_probability, abs=1e-6)

    result = run_cli("predict", trained.best, folder, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 7
    assert "03_broken.png" in result.stderr and "(of 7 images; 1 unreadable file(s) skipped)" in result.stderr


def test_threshold_override_decides_the_verdicts(trained):
    """Each threshold decides the verdicts: one just below 0.5 calls more images success than 0.5 would, the
    lowest probability calls every image success, so a --threshold that were ignored (0.5 used) fails both.
    (A cut above 0.5 would not tell: a confident model's probabilities saturate at exactly 1.0.)"""
    images = [p for p, _ in _split_paths(trained.run_dir, "val")]
    model = graspcheck.load(trained.best)
    probabilities = [p.success_probability for p in model.predict(images)]
    for cut in (max(p for p in probabilities if p < 0.5), min(probabilities)):
        verdicts = [p.label == "success" for p in model.predict(images, threshold=cut)]
        assert verdicts == [p >= cut for p in probabilities]
        assert sum(verdicts) > sum(p >= 0.5 for p in probabilities)
        result = run_cli("predict", trained.best, *images, "--threshold", cut, "--json")
        assert result.returncode == 0, result.stderr
        assert [row["label"] == "success" for row in json.loads(result.stdout)] == [p >= cut for p in probabilities]


def test_hand_built_evaluation_has_the_known_confusion_matrix_and_rates():
    """3 true negatives, 1 false positive, 2 false negatives, 4 true positives: an asymmetric matrix, so a
    transposed one or swapped classes give other numbers."""
    from graspcheck.data import Sample
    from graspcheck.evaluation import Evaluation

    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.9, 0.2, 0.4, 0.6, 0.7, 0.8, 0.95]
    samples = [Sample(Path(f"{i}.png"), label, f"episode{i}") for i, label in enumerate(truth)]
    ev = Evaluation(("not_success", "success"), samples, torch.tensor(scores), 0.5)
    assert ev.confusion == [[3, 1], [2, 4]]
    assert ev.per_class() == [("not_success", 3, 4), ("success", 4, 6)]
    assert (ev.precision, ev.recall, ev.specificity) == (pytest.approx(4 / 5), pytest.approx(4 / 6), pytest.approx(3 / 4))
    assert ev.balanced_accuracy == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert ev.f1 == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    # ROC AUC by counting: of the 24 (success, failure) pairs, those where the success scores higher.
    pairs = [(s, f) for s, t in zip(scores, truth) if t for f, u in zip(scores, truth) if not u]
    assert ev.roc_auc == pytest.approx(sum((s > f) + 0.5 * (s == f) for s, f in pairs) / len(pairs))
    text = ev.report()
    assert "Not success: 3/4 = 0.75" in text and "Success: 4/6 = 0.67" in text
    assert "  not_success                 3        1" in text and "  success                     2        4" in text
    assert [s.path.name for s, _, _ in ev.mistakes()] == ["3.png", "4.png", "5.png"]  # most confident first
