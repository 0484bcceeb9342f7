"""The command line: a thin layer that parses options, calls the API and prints. One verb per task."""

from __future__ import annotations

import csv
import errno
import json
import os
import platform
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from .config import RECIPES, Augment, Balance, Optimizer, Schedule, option_help
from .console import GraspcheckError, exit_interrupted, interrupted_by_user

app = typer.Typer(
    help="Tell from a camera image whether a robot grasp succeeded.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def in_range(low: float, high: float | None = None):
    """An option callback that refuses a value outside [low, high] with the whole allowed range in the message."""
    allowed = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"

    def check(value: Optional[float]) -> Optional[float]:
        if value is not None and (value < low or (high is not None and value > high)):
            raise typer.BadParameter(f"must be {allowed}, got {value:g}")
        return value

    return check


@app.command("train")
def train_command(
    data: Optional[Path] = typer.Argument(None, help="Dataset folder: one sub-folder per class, optionally inside train/ val/ test/."),
    recipe: str = typer.Option("default", help=f"A named set of the options below ({', '.join(RECIPES)}); options given override it."),
    model: Optional[str] = typer.Option(None, help=option_help("model", "Architecture; see 'graspcheck models' (or timm/NAME).")),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help=option_help("pretrained", "Start from the model's ImageNet weights.")),
    freeze_backbone: Optional[bool] = typer.Option(None, "--freeze-backbone/--no-freeze-backbone", help=option_help("freeze_backbone", "Train the classifier only (a linear probe: fastest).")),
    epochs: Optional[int] = typer.Option(None, help=option_help("epochs", "Training epochs.")),
    batch_size: Optional[int] = typer.Option(None, help=option_help("batch_size", "Images per optimizer step.")),
    optimizer: Optional[Optimizer] = typer.Option(None, help=option_help("optimizer", "Optimizer.")),
    lr: Optional[float] = typer.Option(None, help=option_help("lr", "Learning rate of the classifier (of the whole model when not pretrained).")),
    backbone_lr: Optional[float] = typer.Option(None, help=option_help("backbone_lr", "Learning rate of a pretrained backbone.")),
    momentum: Optional[float] = typer.Option(None, help=option_help("momentum", "SGD momentum.")),
    weight_decay: Optional[float] = typer.Option(None, help=option_help("weight_decay", "Weight decay.")),
    schedule: Optional[Schedule] = typer.Option(None, help=option_help("schedule", "Learning rate over the run.")),
    warmup: Optional[float] = typer.Option(None, help=option_help("warmup", "Share of the steps with a linearly rising learning rate.")),
    label_smoothing: Optional[float] = typer.Option(None, help=option_help("label_smoothing", "Label smoothing of the loss.")),
    img_size: Optional[int] = typer.Option(None, help=option_help("img_size", "Square input size in pixels.")),
    augment: Optional[Augment] = typer.Option(None, help=option_help("augment", "On-the-fly augmentation of training images.")),
    balance: Optional[Balance] = typer.Option(None, help=option_help("balance", "Class imbalance: loss (class-weighted loss), sampler (weighted sampling) or none.")),
    val_fraction: Optional[float] = typer.Option(None, help=option_help("val_fraction", "Share of episodes held out for validation when no val/ folder pins it.")),
    test_fraction: Optional[float] = typer.Option(None, help=option_help("test_fraction", "Share of episodes held out for testing when there is neither --test nor a test/ folder.")),
    test: Optional[Path] = typer.Option(None, help="Held-out test folder (class sub-folders)."),
    test_every: Optional[int] = typer.Option(None, help=option_help("test_every", "Evaluate the test set every N epochs.")),
    save_every: Optional[int] = typer.Option(None, help=option_help("save_every", "Keep a checkpoint every N epochs.")),
    positive: Optional[str] = typer.Option(None, help="The class folder that means success, if its name does not tell."),
    weights: Optional[Path] = typer.Option(None, help="Start from a local weight file (.safetensors, .pt, .pth)."),
    threshold: Optional[float] = typer.Option(None, help=option_help("threshold", "Decision threshold on the probability of success stored in checkpoints.")),
    calibrate: Optional[bool] = typer.Option(None, "--calibrate/--no-calibrate", help=option_help("calibrate", "Fit a temperature on the validation split so p(success) is calibrated.")),
    seed: Optional[int] = typer.Option(None, help=option_help("seed", "Seed of the split, the initial weights and the batch order.")),
    device: Optional[str] = typer.Option(None, help=option_help("device", "auto, cpu or cuda.")),
    fast: Optional[bool] = typer.Option(None, "--fast/--no-fast", help=option_help("fast", "Channels-last memory and bfloat16 autocast where supported.")),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=option_help("compile", "torch.compile the model for training (a minute or two of compiling first).")),
    workers: Optional[int] = typer.Option(None, help=option_help("workers", "Processes that augment the next batches while the model trains (0: in the training process; None: half the cores).")),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: runs/train/expN, a new one each run)."),
    overwrite: bool = typer.Option(False, help="Replace an existing run folder given as --out (only one graspcheck wrote)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run in this folder with its own options."),
) -> None:
    """Train a classifier; the run folder gets config, split, metrics.csv, results.png and checkpoints.

    On several processes or machines: torchrun --nproc_per_node N -m graspcheck train DATA ... (--batch-size is per process)."""
    given = {k: v for k, v in locals().items() if v is not None}  # first: the parameters, nothing else yet
    given = {k: v.value if isinstance(v, Enum) else v for k, v in given.items()}
    from .distributed import is_main_process
    from .training import train

    if resume is not None:
        result = train(resume=resume)
    else:
        options = {k: v for k, v in given.items() if k not in ("data", "resume", "overwrite")}
        options.update({k: str(v) for k, v in (("test", test), ("weights", weights), ("out", out)) if v is not None})
        result = train(data, overwrite=overwrite, **options)
    if is_main_process():
        typer.echo(f"done: {result.run_dir}  best checkpoint {result.best}")


@app.command("evaluate")
def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint or a run folder (its best checkpoint)."),
    data: Path = typer.Argument(..., help="Class-folder dataset, a dataset with train/val/test folders, or a run's split.csv."),
    split: Optional[str] = typer.Option(None, help="Which split of a split dataset or split.csv (default: test)."),
    threshold: Optional[str] = typer.Option(None, help="Override the checkpoint's decision threshold (0-1), or 'auto': the "
                                                       "lowest threshold whose precision of success reaches --target-precision on DATA."),
    target_precision: Optional[float] = typer.Option(None, callback=in_range(0, 1), help="Precision of success that --threshold auto must reach, e.g. 0.99."),
    calibrate: bool = typer.Option(False, help="Fit a calibration temperature on DATA (use validation images)."),
    checkpoint_out: Optional[Path] = typer.Option(None, help="With --threshold auto or --calibrate: the tuned checkpoint "
                                                              "(default: beside the original, NAME.tuned.safetensors; the original is never modified)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --checkpoint-out."),
    out: Optional[Path] = typer.Option(None, help="Folder for predictions.csv, mistakes.csv, metrics.json, mistakes.png, report.html (default: runs/evaluate/expN)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Per-class accuracy, balanced accuracy, precision/recall/F1/specificity of success, ROC and PR AUC,
    calibration error, confusion matrix and every wrongly classified image, with 95% confidence intervals from a
    bootstrap over episodes (frames of one attempt are not independent evidence); report.html shows it all.
    With --threshold auto --target-precision P and/or --calibrate it also tunes the checkpoint on DATA."""
    from .evaluation import evaluate, tune
    from .files import discard_folder
    from .runs import new_run_dir

    if out is not None and out.exists() and not out.is_dir():
        raise GraspcheckError(f"--out {out} is a file, not a folder; choose another folder")
    fixed_threshold = None
    if threshold == "auto" or (threshold is None and target_precision is not None):
        if target_precision is None:
            raise GraspcheckError("--threshold auto needs --target-precision P, e.g. 0.99")
    elif threshold is not None:
        try:
            fixed_threshold = float(threshold)
        except ValueError:
            raise GraspcheckError(f"--threshold must be a number between 0 and 1 or 'auto', got {threshold!r}") from None
        if not 0 <= fixed_threshold <= 1:
            raise GraspcheckError(f"--threshold must be between 0 and 1 or 'auto', got {threshold}")
        if calibrate or target_precision is not None:
            raise GraspcheckError("a fixed --threshold does not go with --calibrate or --target-precision; use --threshold auto, "
                                  "or evaluate the tuned checkpoint afterwards")
    tuning = target_precision is not None or calibrate
    if not tuning and (checkpoint_out is not None or overwrite):
        raise GraspcheckError("--checkpoint-out and --overwrite name the tuned checkpoint; add --threshold auto --target-precision P or --calibrate")
    tuned = None
    # The output folder first: a refused --out must not leave a tuned checkpoint behind.
    created = out is None or not out.exists()
    folder = new_run_dir(str(out) if out else None, base=Path("runs/evaluate"))
    try:
        if tuning:
            tuned = tune(checkpoint, data, split, target_precision, calibrate, checkpoint_out, overwrite, device)
            evaluation = tuned.evaluation
        else:
            evaluation = evaluate(checkpoint, data, split=split, threshold=fixed_threshold, device=device)
        evaluation.write(folder)
    except BaseException:
        discard_folder(folder, created)
        raise
    typer.echo(evaluation.report())
    if tuned is not None:
        lines = [f"tuned checkpoint {tuned.checkpoint}: threshold {tuned.threshold:.4f}, temperature {tuned.temperature:.4f}"]
        if tuned.choice is not None:
            lines.append(f"precision {tuned.choice.precision:.4f} at recall {tuned.choice.recall:.4f} on these images "
                         f"(the lowest threshold reaching {target_precision:g}); measure it on held-out images with "
                         f"'graspcheck evaluate {tuned.checkpoint} TEST_DATA'")
        typer.echo("\n".join(lines))
    typer.echo(f"written to {folder} (open {folder / 'report.html'})")


@app.command("report")
def report_command(
    folder: Path = typer.Argument(..., help="A run folder or an evaluation folder."),
) -> None:
    """Write report.html into a run or evaluation folder: metrics with 95% intervals, curves, calibration,
    accuracy by attribute, every mistake and saliency maps; self-contained, it opens in any browser offline."""
    from .report import report

    typer.echo(f"written {report(folder)}")


@app.command("predict")
def predict_command(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint, an exported .onnx file, or a run folder (its best checkpoint)."),
    paths: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of lines."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV instead of lines."),
    threshold: Optional[float] = typer.Option(None, callback=in_range(0, 1), help="Override the checkpoint's decision threshold."),
    batch_size: int = typer.Option(64, callback=in_range(1), help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """One verdict per image: path, label, probability of success; a count per label at the end (on stderr).

    Lines and CSV rows appear batch by batch while the next images are being decoded."""
    from .predict import expand_paths, load

    if as_json and as_csv:
        raise GraspcheckError("choose one of --json and --csv")
    model = load(checkpoint, device)
    files = expand_paths(paths)
    predictions = []
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if as_csv:
        writer.writerow(["source", "label", "success_probability"])
    for p in model.iter_predict(files, threshold=threshold, batch_size=batch_size):
        predictions.append(p)
        if as_csv:
            writer.writerow([p.source, p.label, f"{p.success_probability:.6f}"])
        elif not as_json:
            typer.echo(f"{p.source}\t{p.label}\t{p.success_probability:.4f}")
    if as_json:
        # ensure_ascii writes such a name's bytes as \udcXX escapes, which json.loads and os.fsencode turn back into the name.
        typer.echo(json.dumps([p.to_dict() for p in predictions], indent=2))
    counts = {name: sum(p.label == name for p in predictions) for name in model.class_names}
    summary = "  ".join(f"{name}: {n}" for name, n in counts.items()) + f"  (of {len(predictions)} images"
    skipped = len(files) - len(predictions)
    typer.echo(summary + (f"; {skipped} unreadable file(s) skipped)" if skipped else ")"), err=True)


@app.command("export")
def export_command(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint or a run folder (its best checkpoint)."),
    format: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: beside the checkpoint, .onnx or .torchscript.pt)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    int8: bool = typer.Option(False, "--int8", help="ONNX only: quantise the weights dynamically to int8."),
) -> None:
    """Export for deployment; the file carries the preprocessing and class metadata. predict accepts .onnx."""
    from .export import export

    typer.echo(f"exported {export(checkpoint, format, str(out) if out else None, overwrite, int8)}")


@app.command("extract")
def extract_command(
    videos: Optional[List[Path]] = typer.Argument(None, help="Video files (MP4, AVI, MOV, MKV, ...) or folders of them."),
    label: Optional[str] = typer.Option(None, help="Class of these videos' frames, e.g. success or not_success."),
    out: Path = typer.Option(..., help="Dataset folder: frames go to OUT/<label>/, rows to OUT/manifest.csv."),
    video_list: Optional[Path] = typer.Option(None, "--list", help="CSV with the columns video,label[,start,end] (seconds) for many videos."),
    every: Optional[int] = typer.Option(None, help="Take every N-th frame (the default: every frame)."),
    fps: Optional[float] = typer.Option(None, help="Take N frames per second."),
    count: Optional[int] = typer.Option(None, help="Take N evenly spaced frames of each video (or window)."),
    start: float = typer.Option(0.0, help="Start of the time window, seconds (e.g. the moment after the lift)."),
    end: Optional[float] = typer.Option(None, help="End of the time window, seconds."),
    size: Optional[str] = typer.Option(None, help="Resize frames to N (square) or WIDTHxHEIGHT pixels."),
    crop: Optional[str] = typer.Option(None, help="Crop first: 'center' (largest centred square) or x,y,w,h in pixels."),
    dedupe: Optional[float] = typer.Option(None, help="Drop a frame whose mean pixel difference to the last kept one is below this (0-1; try 0.02)."),
) -> None:
    """Frames of grasp videos into a dataset folder; each video is one episode in manifest.csv. Re-running
    adds nothing twice and overwrites nothing. An unreadable video is reported and the others go on."""
    from .extraction import FrameShape, Sampling, extract, parse_size

    sampling = Sampling(every=every if every or fps or count else 1, fps=fps, count=count, start=start, end=end)
    summary = extract(videos, out, label, video_list, sampling, FrameShape(crop, parse_size(size)), dedupe)
    typer.echo("  ".join(f"{name}: {n}" for name, n in sorted(summary.written.items())) + f"  (new frames in {summary.out})")
    if summary.failed:
        raise GraspcheckError(f"{len(summary.failed)} video(s) could not be read (listed above); the frames of the others were written")


@app.command("augment")
def augment_command(
    data: Path = typer.Argument(..., help="Dataset folder with one sub-folder per class (a training set; it is only read)."),
    out: Path = typer.Option(..., help="New folder for the balanced dataset."),
    per_class: int = typer.Option(1000, callback=in_range(1), help="Images each class should have: originals plus generated copies."),
    preset: str = typer.Option("strong", help="Augmentation strength: light or strong (the same as train --augment)."),
    seed: int = typer.Option(0, help="Same data, options and seed: the same images."),
    preview: bool = typer.Option(False, help="Also write OUT/preview.png: originals beside their augmented copies."),
    positive: Optional[str] = typer.Option(None, help="The class folder that means success, if its name does not tell."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it was written by graspcheck augment."),
) -> None:
    """Balance classes offline, as the seed did: originals copied, augmented copies added with their parent,
    parameters and episode in manifest.csv."""
    from .augment import augment_dataset

    summary = augment_dataset(data, out, per_class, preset, seed, preview, positive, overwrite)
    for name in summary.originals:
        typer.echo(f"{name}: {summary.originals[name]} originals + {summary.generated[name]} generated")
    if summary.skipped:
        typer.echo(f"skipped {len(summary.skipped)} unreadable image(s), listed above")
    typer.echo(f"written to {summary.out}" + (f"; preview {summary.preview}" if summary.preview else ""))


@app.command("simulate")
def simulate_command(
    out: Path = typer.Argument(..., help="Folder to create: success/, not_success/, manifest.csv, samples.png."),
    per_class: int = typer.Option(1000, help="Images of each class (exactly)."),
    seed: int = typer.Option(0, help="Same seed and options, same images and labels."),
    workers: Optional[int] = typer.Option(None, help="Simulation processes (default: one per CPU core)."),
    size: int = typer.Option(224, help="Square image size in pixels."),
    frames: int = typer.Option(4, help="Frames per grasp attempt, spread over the time after the lift."),
    hand: str = typer.Option("adroit", help="The simulated hand."),
    overwrite: bool = typer.Option(False, help="Replace an existing simulated dataset in OUT."),
) -> None:
    """Simulate grasp attempts of a five-fingered hand in MuJoCo; physics decides each label."""
    from .simulate import simulate

    simulate(out, per_class=per_class, seed=seed, workers=workers, size=size, frames=frames, hand=hand, overwrite=overwrite)


@app.command("demo")
def demo_command(
    per_class: int = typer.Option(1000, help="Simulated training images per class (1 frame of each grasp attempt)."),
    test_per_class: int = typer.Option(250, help="Simulated held-out test images per class (1 frame of each attempt)."),
    epochs: Optional[int] = typer.Option(None, help="Override the default recipe's number of epochs."),
    img_size: Optional[int] = typer.Option(None, help="Override the default recipe's input size."),
    workers: Optional[int] = typer.Option(None, help="Simulation processes (default: one per CPU core)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: runs/train/expN)."),
) -> None:
    """Simulate the built-in dataset (cached), fine-tune the default pretrained model, test every 2 epochs, evaluate."""
    from .demo import demo

    training = {k: v for k, v in (("epochs", epochs), ("img_size", img_size)) if v is not None}
    result, evaluation = demo(per_class, test_per_class, workers, str(out) if out else None, **training)
    typer.echo(f"Held-out simulated test set, best checkpoint ({result.best}):")
    typer.echo(evaluation.report())
    typer.echo(f"run folder: {result.run_dir}")


@app.command("models")
def models_command() -> None:
    """List the architectures that --model accepts."""
    from .models import list_models

    for name in list_models():
        typer.echo(name)


@app.command("serve")
def serve_command(
    model: Path = typer.Argument(..., help="A .safetensors checkpoint, a run folder (its best checkpoint) or an exported .onnx file."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; any but loopback needs --api-key or --insecure."),
    port: int = typer.Option(8000, callback=in_range(0, 65535), help="TCP port (0: a free one, printed at start)."),
    api_key: Optional[str] = typer.Option(None, envvar="GRASPCHECK_API_KEY", help="Require this key ('Authorization: Bearer KEY' or 'X-API-Key: KEY') on every endpoint but /health."),
    insecure: bool = typer.Option(False, "--insecure", help="Listen beyond loopback without an API key (a network you trust)."),
    onnx: bool = typer.Option(False, "--onnx", help="Export a checkpoint to ONNX at start and run it with ONNX Runtime (an .onnx file always is)."),
    max_body_mb: float = typer.Option(10.0, callback=in_range(0.001), help="Largest request body (and /stream frame), MB."),
    max_batch: int = typer.Option(32, callback=in_range(1), help="Most images in one /predict/batch request."),
    max_concurrent: int = typer.Option(2, callback=in_range(1), help="Inferences at once; more requests wait (each uses several cores)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (PyTorch models)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (costs time per request)."),
) -> None:
    """Serve verdicts over HTTP (POST /predict, /predict/batch; GET /info, /health) and a WebSocket (/stream)
    until Ctrl-C; OpenAPI docs at /docs. The largest image is graspcheck --max-megapixels (read from the
    header before decoding). See docs/serve.md."""
    from .serve import Limits, serve
    from .transforms import pixel_limit

    limits = Limits(round(max_body_mb * 1e6), pixel_limit(), max_batch, max_concurrent)
    serve(model, host, port, api_key, insecure, onnx, limits, device, access_log)


@app.command("watch")
def watch_command(
    model: Path = typer.Argument(..., help="A .safetensors checkpoint, a run folder (its best checkpoint) or an exported .onnx file."),
    source: str = typer.Argument(..., help="A video file, a camera index (0), an RTSP/HTTP stream URL, or a folder being filled with frames."),
    smooth: int = typer.Option(5, callback=in_range(1, 10000), help="Frames the smoothed decision looks back over."),
    rule: str = typer.Option("majority", help="majority: success when more than half of the last N verdicts are; mean: when their mean "
                             "probability reaches the threshold; consecutive: only after N successes in a row."),
    threshold: Optional[float] = typer.Option(None, callback=in_range(0, 1), help="Override the checkpoint's decision threshold."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Also write every row to this CSV file."),
    idle_exit: Optional[float] = typer.Option(None, callback=in_range(0), help="End after this many seconds without a new frame (folder or live source; default: run until Ctrl-C)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """A verdict per frame as frames arrive: frame, source, label, p(success), the smoothed decision and frames
    per second; Ctrl-C ends with a summary (on stderr)."""
    import time
    from collections import Counter

    from .predict import load
    from .watch import check_smoothing, print_row, watch

    check_smoothing(smooth, rule)
    grasp_model = load(model, device)
    try:
        out = open(csv_file, "w", newline="", buffering=1) if csv_file else None  # a row per line: `tail -f` follows it
    except OSError as error:
        raise GraspcheckError(f"cannot write --csv {csv_file}: {error.strerror}") from None
    counts: Counter = Counter()
    last = None
    interrupted = False
    start = time.perf_counter()
    try:
        writer = csv.writer(out) if out else None
        if writer:
            writer.writerow(["frame", "source", "label", "success_probability", "smoothed", "fps"])
        try:
            for verdict in watch(grasp_model, source, smooth, rule, threshold, idle_exit):
                # Printed last: a row on the screen is one the summary counts and the CSV holds, whenever Ctrl-C comes.
                counts[verdict.label] += 1
                last = verdict
                if writer:
                    writer.writerow([verdict.frame, verdict.source, verdict.label, f"{verdict.success_probability:.6f}",
                                     verdict.smoothed, f"{verdict.fps:.2f}"])
                print_row(verdict)
        except KeyboardInterrupt:
            interrupted = True
    finally:
        if out:
            out.close()
    frames = sum(counts.values())
    elapsed = time.perf_counter() - start
    summary = f"{frames} frames: " + ", ".join(f"{name} {counts[name]}" for name in grasp_model.class_names)
    if last is not None:
        summary += f"; last smoothed decision: {last.smoothed}; {frames / elapsed:.1f} frames/s"
    typer.echo(summary + ("  (stopped by Ctrl-C)" if interrupted else ""), err=True)


# Commands whose big tensors are allocated and freed over and over: training, and the demo that trains.
_TRAINING_COMMANDS = {"train", "demo"}
_TRANSPARENT_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_page_environment(environ: dict[str, str], thp_mode: str | None) -> dict[str, str] | None:
    """The environment to restart a training command in so that glibc's malloc backs its memory with
    transparent huge pages, or None when there is nothing to change.

    glibc maps every allocation over 32 MB fresh from the kernel and unmaps it when freed, so each training
    step page-faults its big activations in again, 4 KiB at a time; with huge pages it takes 512 times fewer
    faults. seednet trained 1.77x faster at the same peak memory (benchmarks/train_speed.py --allocators).
    The setting is read only when a process starts. A GLIBC_TUNABLES that already names it (=0 to refuse it)
    is left alone, as is a kernel whose huge pages are off or already on for every mapping ("always").
    """
    tunables = environ.get("GLIBC_TUNABLES", "")
    if thp_mode != "madvise" or "glibc.malloc.hugetlb" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, "glibc.malloc.hugetlb=1"]))}


def _restart_with_huge_pages() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in _TRAINING_COMMANDS or platform.libc_ver()[0] != "glibc":
        return
    try:
        mode = _TRANSPARENT_HUGE_PAGES.read_text().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return
    environ = huge_page_environment(dict(os.environ), mode)
    if environ is not None:
        # The signal mask survives exec: a Ctrl-C from here on waits until the new process has its handler
        # (graspcheck.__main__), instead of killing the new interpreter while it starts.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        if signal.getitimer(signal.ITIMER_REAL)[0] > 0:  # a Ctrl-C deferred during an import is due
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            sys.exit(130)  # graspcheck.__main__ prints the line
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "graspcheck", *sys.argv[1:]], environ)


@app.callback()
def options_of_every_command(
    max_megapixels: Optional[float] = typer.Option(None, callback=in_range(0.001), help="Refuse to decode an image above this many megapixels: its memory, not its file size, is what counts. [default: 50]"),
) -> None:
    if max_megapixels is not None:  # only then: transforms imports torch, which a usage error should not wait for
        from .transforms import set_max_pixels

        set_max_pixels(round(max_megapixels * 1_000_000))


def main() -> None:
    """Run the CLI: a GraspcheckError or a usage error ends with one line `error: ...` and exit status 2, Ctrl-C
    with one line (for training, how to resume) and 130, never a traceback."""
    # A file name that is not valid UTF-8 (os.fsdecode keeps its odd bytes as surrogates) is printed as its own
    # bytes, so that what is printed names the file; the default would print a replacement character.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        _restart_with_huge_pages()
    except BaseException as error:
        if interrupted_by_user(error):
            exit_interrupted(sys.argv)
        raise
    run(sys.argv[1:])


def run(args: list[str]) -> None:
    """One command line (without the program name), errors mapped to one line and an exit status by
    SystemExit as main() does, in this process: the tests check the messages this way, without a new
    interpreter for each."""
    try:
        # Not standalone: click would print usage errors on several lines and swallow Ctrl-C as a bare exit 130.
        status = app(args=args, standalone_mode=False, prog_name="graspcheck")
    except GraspcheckError as error:
        _fail(str(error))
    except typer.TyperException as error:  # usage errors: a bad option value, a missing argument
        if type(error).__name__ == "NoArgsIsHelpError":  # the help text that a bare `graspcheck` shows
            error.show()
            sys.exit(error.exit_code)
        _fail(error.format_message().replace("\n", " "))
    except typer.Abort:
        exit_interrupted(["graspcheck", *args])
    except OSError as error:
        if interrupted_by_user(error):
            exit_interrupted(["graspcheck", *args])
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        from .files import output_error

        _fail(str(output_error(error.filename or "a file", error)))
    except BaseException as error:
        if interrupted_by_user(error):
            exit_interrupted(["graspcheck", *args])
        raise
    if status == 130:  # typer's translation of KeyboardInterrupt, after every cleanup of the command ran
        exit_interrupted(["graspcheck", *args])
    sys.exit(status or 0)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(2)

