"""The report a lab reads before letting a robot act on graspcheck's verdicts: one self-contained report.html
(figures and images embedded as data URIs, no script, nothing fetched) in a run or evaluation folder.

It holds the configuration and data counts, the seed's per-class table for each test epoch, the training
curves, the headline metrics with 95% intervals from a bootstrap over episodes, the confusion matrix, ROC and
precision-recall curves, precision and recall against the threshold, a reliability diagram, accuracy broken
down by each attribute the dataset's manifest records, every wrongly classified image, the least confident
correct ones, and Grad-CAM saliency maps over the mistakes and a sample of each class.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .files import atomic_write
from .plots import (confusion_figure, history_figure, precision_recall_figure, reliability_figure, roc_figure,
                    threshold_figure)

if TYPE_CHECKING:
    from .evaluation import Evaluation
    from .predict import GraspModel

REPORT_NAME = "report.html"
EVALUATION_FOLDER = "test_evaluation"  # where a run keeps the evaluation of its best checkpoint
GALLERY_LIMIT = 200  # mistakes shown as images; the report says how many more there are
LEAST_CONFIDENT_CORRECT = 12
SALIENCY_MISTAKES = 48
SALIENCY_PER_CLASS = 6
THUMBNAIL = 160  # pixels on the longer side
TARGET_PRECISIONS = (0.9, 0.95, 0.99)


def report(folder: str | Path) -> Path:
    """Write report.html into a run folder or an evaluation folder and return its path.

    A run folder's report covers its training and the evaluation of its best checkpoint in
    test_evaluation/ (made now, on the run's test split, when the run has none yet)."""
    from .console import GraspcheckError
    from .evaluation import Evaluation

    folder = Path(folder)
    if not folder.is_dir():
        raise GraspcheckError(f"{folder} is not a folder; pass a run folder or an evaluation folder")
    if (folder / "metrics.json").is_file() and (folder / "predictions.csv").is_file():
        return write_report(folder, Evaluation.read(folder))
    if (folder / "config.json").is_file():
        evaluation_folder = folder / EVALUATION_FOLDER
        if (evaluation_folder / "predictions.csv").is_file():
            return write_report(folder, Evaluation.read(evaluation_folder))
        return write_run_evaluation(folder, evaluate_run(folder))
    raise GraspcheckError(f"{folder} is neither a run folder (config.json) nor an evaluation folder (metrics.json, predictions.csv)")


def evaluate_run(run_dir: Path) -> "Evaluation":
    """The run's best checkpoint on its test split, or on its validation split when it has no test split."""
    from .console import GraspcheckError
    from .data import read_split_csv
    from .evaluation import evaluate
    from .predict import load

    model = load(run_dir, "cpu")
    splits = read_split_csv(run_dir / "split.csv", model.class_names)
    split = next((name for name in ("test", "val") if splits.get(name)), None)
    if split is None:
        raise GraspcheckError(f"{run_dir} has neither a test nor a validation split to evaluate on; "
                              "run 'graspcheck evaluate RUN DATA' and report on its folder")
    return evaluate(model, run_dir / "split.csv", split=split)


def write_run_evaluation(run_dir: Path, evaluation: "Evaluation", model: "GraspModel | None" = None) -> Path:
    """The evaluation of a run's best checkpoint into its test_evaluation/, and the run's report.html."""
    evaluation.write(run_dir / EVALUATION_FOLDER, model, report=False)
    return write_report(run_dir, evaluation, model)


def write_report(folder: str | Path, evaluation: "Evaluation", model: "GraspModel | None" = None) -> Path:
    """report.html in folder for an evaluation, with the training of the run when folder (or its parent, for a
    run's test_evaluation/) is a run folder. Saliency maps need the PyTorch model: model, or the evaluation's
    checkpoint file when it is still there."""
    folder = Path(folder)
    run_dir = folder if (folder / "config.json").is_file() else folder.parent if (folder.parent / "config.json").is_file() else None
    sections = [_headline(evaluation)]
    if run_dir is not None:
        sections += _training_sections(run_dir, evaluation.class_names)
    else:
        sections.append(_section("Data", _counts_table({"evaluated": evaluation.samples}, evaluation.class_names)))
    sections += [
        _confusion_and_curves(evaluation),
        _threshold_section(evaluation),
        _calibration_section(evaluation),
        _attribute_section(evaluation),
        _gallery_section(evaluation),
        _saliency_section(evaluation, model),
    ]
    title = f"graspcheck report: {folder.resolve().name}"
    page = _page(title, [s for s in sections if s])
    path = folder / REPORT_NAME
    with atomic_write(path) as f:
        f.write(page)
    return path


# ----------------------------------------------------------------------------------------------- sections


def _headline(ev: "Evaluation") -> str:
    from . import __version__

    intervals = {**ev.intervals.intervals, **ev.score_intervals}
    positive = ev.class_names[1]
    rows = [
        ("Balanced accuracy", ev.balanced_accuracy, "balanced_accuracy", "mean of the two per-class accuracies"),
        ("Accuracy", ev.accuracy, "accuracy", "share of images classified correctly"),
        (f"Precision of {positive}", ev.precision, "precision", f"of the images called {positive}, the share that are"),
        (f"Recall of {positive}", ev.recall, "recall", f"of the {positive} images, the share called {positive}"),
        ("Specificity", ev.specificity, "specificity", f"of the other images, the share not called {positive}"),
        ("F1", ev.f1, "f1", "harmonic mean of precision and recall"),
        ("ROC AUC", ev.roc_auc, "roc_auc", f"chance that a {positive} image scores above another"),
        ("Average precision", ev.average_precision, "average_precision", "area under the precision-recall curve"),
    ]
    body = "".join(
        f"<tr><td>{_e(name)}</td><td class=num>{_number(value)}</td><td class=num>{_interval(intervals.get(key))}</td>"
        f"<td class=note>{_e(note)}</td></tr>"
        for name, value, key, note in rows
    )
    table = f"<table><tr><th>metric</th><th>value</th><th>95% interval</th><th>meaning</th></tr>{body}</table>"
    facts = [
        f"{len(ev.samples)} images from {ev.intervals.episodes} episodes",
        f"threshold {ev.threshold:g} on p({positive})",
        f"calibration temperature {ev.temperature:g}" + ("" if ev.temperature != 1 else " (uncalibrated)"),
        f"expected calibration error {ev.expected_calibration_error:.4f}",
    ]
    if ev.skipped:
        facts.append(f"{ev.skipped} unreadable file(s) skipped")
    if ev.checkpoint:
        facts.append(f"checkpoint {ev.checkpoint}")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts.append(f"graspcheck {__version__}, {generated}")
    note = (f"Intervals: percentile bootstrap over episodes ({ev.intervals.resamples} resamples; all frames of a drawn "
            "episode together), since frames of one grasp attempt are not independent evidence.")
    return _section("Verdict quality", f"<p>{' &middot; '.join(_e(fact) for fact in facts)}</p>{table}<p class=note>{note}</p>")


def _training_sections(run_dir: Path, class_names: tuple[str, str]) -> list[str]:
    from .data import read_split_csv

    sections = []
    config_path = run_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict):
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(json.dumps(v))}</td></tr>" for k, v in config.items())
        table = f"<table class=config><tr><th>option</th><th>value</th></tr>{rows}</table>"
        summary = f"{config.get('model', '?')}, {config.get('epochs', '?')} epochs at {config.get('img_size', '?')} px, recipe {config.get('recipe', '?')}"
        sections.append(_section("Configuration", f"<details><summary>{_e(summary)}: every option</summary>{table}</details>"))
    try:
        splits = read_split_csv(run_dir / "split.csv", class_names)
    except Exception:  # a report shows what it can: a missing or foreign split.csv only drops this table
        splits = {}
    if splits:
        sections.append(_section("Data", _counts_table(splits, class_names)))
    history = _read_history(run_dir / "metrics.csv")
    if history:
        parts = [_figure(history_figure(history, class_names), "loss and per-class accuracy per epoch")]
        tested = [row for row in history if row.get("test_balanced_acc") is not None]
        if tested:
            parts.append(_test_epoch_table(tested, class_names))
        sections.append(_section("Training", "".join(parts)))
    return sections


def _counts_table(splits: dict[str, Sequence], class_names: tuple[str, str]) -> str:
    header = "".join(f"<th>{_e(name)}</th>" for name in class_names)
    rows = []
    for split, samples in splits.items():
        counts = [sum(1 for s in samples if s.label == c) for c in (0, 1)]
        episodes = len({s.episode for s in samples})
        rows.append(f"<tr><td>{_e(split)}</td>{''.join(f'<td class=num>{n}</td>' for n in counts)}"
                    f"<td class=num>{sum(counts)}</td><td class=num>{episodes}</td></tr>")
    return f"<table><tr><th>split</th>{header}<th>images</th><th>episodes</th></tr>{''.join(rows)}</table>"


def _test_epoch_table(rows: list[dict], class_names: tuple[str, str]) -> str:
    """The seed's table, one row per epoch with a test evaluation: per-class accuracy on the test split."""
    from .evaluation import display_name

    header = "".join(f"<th>{_e(display_name(name))}</th>" for name in class_names)
    body = "".join(
        f"<tr><td class=num>{int(row['epoch'])}</td>"
        + "".join(f"<td class=num>{_number(row.get(f'test_acc_{name}'))}</td>" for name in class_names)
        + f"<td class=num>{_number(row.get('test_balanced_acc'))}</td></tr>"
        for row in rows
    )
    return (f"<h3>Test accuracy per class, each test epoch</h3>"
            f"<table><tr><th>epoch</th>{header}<th>balanced</th></tr>{body}</table>")


def _confusion_and_curves(ev: "Evaluation") -> str:
    from .metrics import precision_recall_curve, roc_curve

    labels, scores = ev.labels.numpy(), ev.probabilities.numpy()
    figures = [_figure(confusion_figure(np.array(ev.confusion), ev.class_names), "confusion matrix")]
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        operating = (1 - ev.specificity, ev.recall)
        figures.append(_figure(roc_figure(fpr, tpr, ev.roc_auc, operating), "ROC curve"))
        figures.append(_figure(precision_recall_figure(precision, recall, ev.average_precision, (ev.recall, ev.precision)),
                               "precision-recall curve"))
    else:
        figures.append("<p>ROC and precision-recall curves need images of both classes.</p>")
    return _section("Confusion matrix and curves", f"<div class=row>{''.join(figures)}</div>")


def _threshold_section(ev: "Evaluation") -> str:
    from .metrics import precision_recall_curve, threshold_for_precision

    labels, scores = ev.labels.numpy(), ev.probabilities.numpy()
    if len(np.unique(labels)) < 2:
        return ""
    rows = []
    for target in TARGET_PRECISIONS:
        choice = threshold_for_precision(labels, scores, target)
        if choice.met:
            rows.append(f"<tr><td class=num>{target:g}</td><td class=num>{choice.threshold:.4f}</td>"
                        f"<td class=num>{choice.precision:.4f}</td><td class=num>{choice.recall:.4f}</td></tr>")
        else:
            rows.append(f"<tr><td class=num>{target:g}</td><td colspan=3>not reachable on these images "
                        f"(best precision {choice.best_precision:.4f})</td></tr>")
    table = ("<table><tr><th>target precision</th><th>lowest threshold</th><th>precision</th><th>recall</th></tr>"
             f"{''.join(rows)}</table>")
    note = ("Chosen on the images of this report: pick a threshold on validation images with "
            "<code>graspcheck evaluate MODEL DATA --split val --threshold auto --target-precision P</code>, "
            "then measure it here on held-out ones.")
    return _section("Threshold", f"<div class=row>{_figure(threshold_figure(*precision_recall_curve(labels, scores), ev.threshold), 'precision and recall against the threshold')}"
                                 f"<div>{table}<p class=note>{note}</p></div></div>")


def _calibration_section(ev: "Evaluation") -> str:
    from .metrics import apply_temperature, expected_calibration_error, reliability_bins

    labels, scores = ev.labels.numpy(), ev.probabilities.numpy()
    curves = {"this model" if ev.temperature == 1 else f"calibrated (T={ev.temperature:.3g})": ev.reliability}
    text = f"<p>Expected calibration error {ev.expected_calibration_error:.4f}"
    if ev.temperature != 1:
        # The network's own probabilities: the temperature undone.
        raw = apply_temperature(scores, 1 / ev.temperature)
        curves["before calibration"] = reliability_bins(labels, raw)
        text += f" (before calibration {expected_calibration_error(labels, raw):.4f})"
    text += (". A calibrated model's p(success) of 0.8 is right 80% of the time. "
             "<code>graspcheck evaluate MODEL DATA --split val --calibrate</code> fits a temperature on validation images.</p>")
    return _section("Calibration", f"<div class=row>{_figure(reliability_figure(curves), 'reliability diagram')}<div>{text}</div></div>")


def _attribute_section(ev: "Evaluation") -> str:
    tables = attribute_breakdown(ev)
    if not tables:
        return ""
    parts = []
    for attribute, groups in tables.items():
        rows = "".join(
            f"<tr><td>{_e(group)}</td><td class=num>{n}</td><td class=num>{episodes}</td><td class=num>{accuracy:.3f}</td>"
            f"<td class=num>{_interval(interval)}</td></tr>"
            for group, n, episodes, accuracy, interval in groups
        )
        parts.append(f"<div><h3>{_e(attribute)}</h3><table><tr><th>value</th><th>images</th><th>episodes</th><th>accuracy</th>"
                     f"<th>95% interval</th></tr>{rows}</table></div>")
    note = ("From the dataset's manifest.csv; numeric attributes in quartiles, vectors (sizes, offsets) by their length. "
            "Intervals: bootstrap over episodes within each group.")
    return _section("Accuracy by attribute", f"<p class=note>{note}</p><div class=grid-tables>{''.join(parts)}</div>")


def attribute_breakdown(ev: "Evaluation", most_groups: int = 30) -> dict[str, list[tuple[str, int, int, float, tuple[float, float] | None]]]:
    """Accuracy per value of each attribute in the datasets' manifests: (group, images, episodes, accuracy,
    95% interval) per group. Numeric attributes with many values are cut into quartiles; an attribute with
    more than most_groups values keeps its worst groups."""
    from .metrics import bootstrap_intervals

    paths = [s.path.resolve() for s in ev.samples]
    attributes = _attributes_of(paths)
    if not attributes:
        return {}
    labels, predicted = ev.labels.numpy(), ev.predicted.numpy()
    episodes = np.array([s.episode for s in ev.samples])
    tables = {}
    for name in sorted({key for row in attributes.values() for key in row}):
        values = [attributes.get(path, {}).get(name, "") for path in paths]
        groups = _groups(values)
        # One group per image or two (a file name, a JSON of parameters) says nothing about weak spots.
        if len(groups) < 2 or np.median([len(members) for members in groups.values()]) < 3:
            continue
        rows = []
        for group, members in groups.items():
            members = np.array(members)
            correct = labels[members] == predicted[members]
            interval = bootstrap_intervals(labels[members], predicted[members], episodes[members], resamples=500).intervals["accuracy"]
            rows.append((group, len(members), len(set(episodes[members])), float(correct.mean()), interval))
        if len(rows) > most_groups:
            rows = sorted(rows, key=lambda r: r[3])[:most_groups]
        tables[name] = rows
    return tables


def _attributes_of(paths: Sequence[Path]) -> dict[Path, dict[str, str]]:
    """The manifest attributes of each (resolved) image path, from the manifest.csv of the dataset it lies in
    (the folder above its class folder, or above that for a dataset with split folders)."""
    from .manifest import read_attributes

    found: dict[Path, dict[str, str]] = {}
    roots = {parent for path in paths for parent in path.parents[1:3]}
    for root in roots:
        if (root / "manifest.csv").is_file():
            try:
                found.update(read_attributes(root))
            except Exception:  # a damaged manifest loses the breakdown, not the report
                continue
    return found


def _groups(values: list[str]) -> dict[str, list[int]]:
    """Image indices by value; numbers with many values by quartile, and vectors ("0.02 0.01 0.03": a size,
    an offset) by their length."""
    present = [(i, v) for i, v in enumerate(values) if v != ""]
    if not present:
        return {}
    try:
        numbers = np.array([_number_or_length(v) for _, v in present])
    except ValueError:
        numbers = None
    if numbers is not None and len(np.unique(numbers)) > 8:
        edges = np.unique(np.quantile(numbers, [0, 0.25, 0.5, 0.75, 1]))
        bins = np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, len(edges) - 2)
        groups: dict[str, list[int]] = {f"{edges[b]:.4g} to {edges[b + 1]:.4g}": [] for b in sorted(set(bins.tolist()))}
        for (index, _), b in zip(present, bins):
            groups[f"{edges[b]:.4g} to {edges[b + 1]:.4g}"].append(index)
        return groups
    groups = {}
    for index, value in present:
        groups.setdefault(value, []).append(index)
    return dict(sorted(groups.items()))


def _number_or_length(value: str) -> float:
    """A number, or the Euclidean length of a vector written as space-separated numbers; ValueError otherwise."""
    parts = [float(x) for x in value.split()]
    return parts[0] if len(parts) == 1 else float(np.linalg.norm(parts))


def _gallery_section(ev: "Evaluation") -> str:
    mistakes = ev.mistakes()
    names = ev.class_names
    cards = [_card(s.path, f"true {names[s.label]}, called {p}", prob) for s, p, prob in mistakes[:GALLERY_LIMIT]]
    more = f"<p>{len(mistakes) - GALLERY_LIMIT} more are listed in mistakes.csv.</p>" if len(mistakes) > GALLERY_LIMIT else ""
    body = (f"<h3>Every wrongly classified image ({len(mistakes)}), most confident first</h3>"
            + (f"<div class=gallery>{''.join(cards)}</div>{more}" if cards else "<p>None.</p>"))
    correct = [(s, prob) for s, p, prob in zip(ev.samples, ev.predicted.tolist(), ev.probabilities.tolist()) if p == s.label]
    correct.sort(key=lambda item: abs(item[1] - ev.threshold))
    unsure = [_card(s.path, f"true {names[s.label]}, called {names[s.label]}", prob) for s, prob in correct[:LEAST_CONFIDENT_CORRECT]]
    if unsure:
        body += f"<h3>The least confident correct verdicts</h3><div class=gallery>{''.join(unsure)}</div>"
    return _section("Images", body)


def _saliency_section(ev: "Evaluation", model: "GraspModel | None") -> str:
    """Grad-CAM over every mistake (up to a limit) and a sample of each class, beside the image."""
    from .console import GraspcheckError
    from .predict import TorchNetwork, load
    from .saliency import overlay, saliency_maps

    if model is None or not isinstance(model.backend, TorchNetwork):
        if not ev.checkpoint or not str(ev.checkpoint).endswith(".safetensors") or not Path(ev.checkpoint).is_file():
            return _section("Where the model looks", "<p>Saliency maps need the model's .safetensors checkpoint, "
                                                     "which this evaluation does not name or which is gone.</p>")
        try:
            model = load(ev.checkpoint, "cpu")
        except GraspcheckError as error:
            return _section("Where the model looks", f"<p>Saliency maps unavailable: {_e(str(error))}</p>")
    names = ev.class_names
    chosen = [(s, f"true {names[s.label]}, called {p}", prob) for s, p, prob in ev.mistakes()[:SALIENCY_MISTAKES]]
    rng = np.random.default_rng(0)  # the same sample each time the report is written
    for label in (0, 1):
        correct = [(s, prob) for s, p, prob in zip(ev.samples, ev.predicted.tolist(), ev.probabilities.tolist())
                   if p == s.label == label]
        for i in sorted(rng.choice(len(correct), size=min(SALIENCY_PER_CLASS, len(correct)), replace=False).tolist()):
            s, prob = correct[i]
            chosen.append((s, f"true {names[label]}, called {names[label]}", prob))
    pixels, kept = [], []
    for sample, caption, prob in chosen:
        try:
            pixels.append(model.info.preprocess.load(sample.path))
            kept.append((sample, caption, prob))
        except Exception:  # gone, changed or too large since the evaluation: it has no map
            continue
    if not pixels:
        return ""
    batch = np.stack(pixels)
    heat = saliency_maps(model, batch)
    cards = [
        f"<figure class=pair><img src='{_image_uri(image)}' alt='image'><img src='{_image_uri(overlay(image, h))}' alt='saliency'>"
        f"<figcaption>{_e(caption)}<br>p(success) {prob:.3f}<br><span class=path>{_e(sample.path.name)}</span></figcaption></figure>"
        for image, h, (sample, caption, prob) in zip(batch, heat, kept)
    ]
    note = ("Grad-CAM on the network's last spatial feature map, for the class the model chose: red is where the evidence "
            "for its verdict lies. A model that looks at the hand and the object, not at shadows or the table edge, "
            "has learnt the grasp.")
    return _section("Where the model looks", f"<p class=note>{note}</p><div class=gallery>{''.join(cards)}</div>")


# ------------------------------------------------------------------------------------------------ helpers


def _read_history(path: Path) -> list[dict]:
    """metrics.csv's rows as numbers; [] (no Training section) for a file that is missing or damaged."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError, TypeError):  # unreadable, not UTF-8, a non-number, a row with extra fields
        return []
    return rows if all(row.get("epoch") is not None for row in rows) else []


def _card(path: Path, caption: str, probability: float) -> str:
    try:
        from PIL import Image

        from .transforms import check_pixel_limit

        with Image.open(path) as image:
            check_pixel_limit(image)
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            uri = _image_uri(np.asarray(image.convert("RGB")))
        picture = f"<img src='{uri}' alt='{_e(path.name)}'>"
    except Exception:  # gone, changed or too large since the evaluation: the card says so, the report goes on
        picture = "<div class=missing>image not readable</div>"
    return (f"<figure>{picture}<figcaption>{_e(caption)}<br>p(success) {probability:.3f}"
            f"<br><span class=path>{_e(str(path))}</span></figcaption></figure>")


def _image_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="JPEG", quality=85)
    return _data_uri(buffer, "image/jpeg")


def _figure(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return f"<img class=figure src='{_data_uri(buffer, 'image/png')}' alt='{_e(alt)}'>"


def _data_uri(buffer: io.BytesIO, media_type: str) -> str:
    """The bytes written to buffer, embedded in the page: it loads nothing."""
    return f"data:{media_type};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f"<section id='{_e(anchor)}'><h2>{_e(title)}</h2>{body}</section>"


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _interval(interval: tuple[float, float] | None) -> str:
    return f"{interval[0]:.4f} to {interval[1]:.4f}" if interval else "n/a"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;font-size:.9rem}
td.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#555;font-size:.85rem}
table.config td:last-child{font-family:monospace;word-break:break-all}
.row{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}img.figure{max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:.6rem}.gallery figure{margin:0;width:170px;font-size:.75rem}
.gallery figure.pair{width:340px}.gallery img{width:160px;height:auto;margin-right:4px}
.path{color:#777;word-break:break-all}.missing{width:160px;height:120px;background:#eee}
.grid-tables{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}
"""


def _page(title: str, sections: Iterable[str]) -> str:
    # A content security policy that allows nothing but inline styles and data: images: the page can fetch
    # nothing and run nothing, so it is safe to open from anywhere and works offline.
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{policy}\">"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{''.join(sections)}</body></html>\n")
