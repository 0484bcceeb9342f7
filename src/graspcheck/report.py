"""Pictures of a run for people: the training curves and a grid of wrongly classified images."""

from __future__ import annotations

from pathlib import Path

# matplotlib's object API draws without pyplot's global state or backend: importing this module changes
# nothing for the rest of the process, and no display is needed (robots, servers, CI).
from matplotlib.figure import Figure

from .files import atomic_replace


def plot_history(rows: list[dict], class_names: tuple[str, str], path: str | Path) -> None:
    """Loss and per-class accuracy per epoch (train, val, and test where it was measured) as one PNG."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, values, style, marker="o", label=key.replace("_", " "))
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
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
    atomic_replace(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def plot_mistakes(mistakes: list[tuple[str, str, str, float]], path: str | Path, limit: int = 24) -> None:
    """A grid of wrongly classified images titled with true / predicted class and p(success)."""
    from PIL import Image

    shown = mistakes[:limit]
    columns = min(6, max(1, len(shown)))
    rows = max(1, -(-len(shown) // columns))
    fig = Figure(figsize=(2.4 * columns, 2.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image_path, true, predicted, probability) in zip(axes.flat, shown):
        with Image.open(image_path) as image:
            ax.imshow(image.convert("RGB"))
        ax.set_title(f"true {true}\npred {predicted} p={probability:.2f}", fontsize=7)
    if not shown:
        axes.flat[0].text(0.5, 0.5, "no wrongly classified images", ha="center", va="center")
    fig.tight_layout()
    atomic_replace(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
