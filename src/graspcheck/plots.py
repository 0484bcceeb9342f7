"""matplotlib figures of graspcheck, drawn with the object API (matplotlib.figure.Figure): no pyplot, no
backend chosen, so importing this module changes nothing for the rest of the process and no display is
needed (robots, servers, CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from .files import atomic_replace


def image_grid(images: Sequence[np.ndarray | Image.Image | None], titles: Sequence[str], path: str | Path, columns: int = 6,
               tile_inches: float = 2.4, dpi: int = 90, empty_text: str = "no images") -> None:
    """A PNG of images in rows of `columns`, each above its title (two short lines fit), written atomically.

    Images are PIL images (shown as RGB) or arrays as matplotlib's imshow takes them (H, W, 3) or (H, W, 4);
    None leaves its cell blank, to start a new row, say. Fewer images than columns make one narrower row;
    no images at all make a figure that says empty_text.
    """
    if len(titles) != len(images):
        raise ValueError(f"image_grid needs one title per image, got {len(titles)} for {len(images)}")
    columns = min(columns, max(1, len(images)))
    rows = max(1, -(-len(images) // columns))
    # The extra 0.35 inch of each row holds the tile's title, two lines of 7 points.
    figure = Figure(figsize=(tile_inches * columns, (tile_inches + 0.35) * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        if image is None:
            continue
        ax.imshow(np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else image)
        ax.set_title(title, fontsize=7)
    if not images:
        axes.flat[0].text(0.5, 0.5, empty_text, ha="center", va="center")
    figure.tight_layout()
    atomic_replace(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format="png"))


def history_figure(rows: list[dict], class_names: tuple[str, str]) -> Figure:
    """Loss and per-class accuracy per epoch (train, val, and test where it was measured)."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, values, style, marker="o", label=key.replace("_", " "))
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    colors = {class_names[0]: "tab:red", class_names[1]: "tab:green"}
    for split, style in (("train", ":"), ("val", "-"), ("test", "--")):
        for name in class_names:
            points = [(r["epoch"], r[f"{split}_acc_{name}"]) for r in rows if r.get(f"{split}_acc_{name}") is not None]
            if points:
                xs, ys = zip(*points)
                ax_acc.plot(xs, ys, style, marker="o", color=colors[name], label=f"{split} {name}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Per-class accuracy", ylim=(-0.02, 1.02))
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(rows: list[dict], class_names: tuple[str, str], path: str | Path) -> None:
    """history_figure as a PNG file (the run folder's results.png)."""
    fig = history_figure(rows, class_names)
    atomic_replace(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def confusion_figure(confusion: np.ndarray, class_names: tuple[str, str]) -> Figure:
    """The 2x2 matrix [true][predicted] with counts and row shares in each cell."""
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{confusion[i, j]}\n{shares[i, j]:.1%}", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    return fig


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, operating: tuple[float, float]) -> Figure:
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUC {auc:.4f}")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.plot(*operating, "o", color="tab:red", label="at the threshold")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (recall)", title="ROC",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def precision_recall_figure(precision: np.ndarray, recall: np.ndarray, average_precision: float,
                            operating: tuple[float, float]) -> Figure:
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    ax.plot(recall, precision, drawstyle="steps-post", label=f"AP {average_precision:.4f}")
    ax.plot(*operating, "o", color="tab:red", label="at the threshold")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def threshold_figure(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray, threshold: float) -> Figure:
    """Precision and recall of the positive class against the threshold (metrics.precision_recall_curve: each
    holds from its threshold up to the next), with the model's threshold marked."""
    fig = Figure(figsize=(4.6, 3.6))
    ax = fig.subplots()
    ax.step(thresholds, precision[:-1], where="post", label="precision")
    ax.step(thresholds, recall[:-1], where="post", label="recall")
    ax.axvline(threshold, color="gray", linestyle="--", label=f"threshold {threshold:g}")
    ax.set(xlabel="threshold on p(success)", ylabel="share", title="Precision and recall", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_figure(curves: dict) -> Figure:
    """Observed success frequency against mean predicted p(success), per bin, for each named ReliabilityBins."""
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
    for name, bins in curves.items():
        filled = bins.counts > 0
        ax.plot(bins.mean_predicted[filled], bins.observed[filled], "o-", label=name)
    ax.set(xlabel="predicted p(success)", ylabel="observed share of successes", title="Reliability",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_mistakes(mistakes: list[tuple[str, str, str, float]], path: str | Path, limit: int = 24) -> None:
    """A grid of wrongly classified images titled with true / predicted class and p(success)."""
    shown = mistakes[:limit]
    images = []
    for image_path, *_ in shown:
        with Image.open(image_path) as image:
            images.append(image.convert("RGB"))
    titles = [f"true {true}\npred {predicted} p={probability:.2f}" for _, true, predicted, probability in shown]
    image_grid(images, titles, path, empty_text="no wrongly classified images")
