"""The ``cadx`` command line: thin, parses options and calls the engine; errors become one clear line."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from cadx.data.cache import progress_bar
from cadx.data.readers import UnreadableImageError
from cadx.data.sources import DatasetError
from cadx.engine.checkpoint import CheckpointError
from cadx.engine.config import TrainConfig, build_config

if TYPE_CHECKING:  # the engine is imported lazily so that `cadx --help` stays fast
    from cadx.engine.inference import FilePrediction, Predictor

app = typer.Typer(help="cadx: train, evaluate and use CNNs that classify medical images.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)
USER_ERRORS = (DatasetError, CheckpointError, UnreadableImageError, ValueError, FileNotFoundError)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)])
    for noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends with a one-line message naming the file and the reason, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command("models")
@user_errors
def models_command() -> None:
    """List the architectures: name, parameters (at the default input, 2 classes), default input size."""
    from cadx.models import count_parameters, create_model, list_models

    table = Table(title="cadx models")
    for col in ("name", "parameters (M)", "input", "channels", "description"):
        table.add_column(col)
    for info in list_models():
        params = count_parameters(create_model(info.name, num_classes=2))
        table.add_row(info.name, f"{params / 1e6:.2f}", f"{info.default_input_size} px",
                      str(info.default_in_channels), info.description)
    console.print(table)


def _parse_window(window: str | None) -> tuple[float, float] | None:
    if not window:
        return None
    try:
        center, width = (float(v) for v in window.split(","))
    except ValueError:
        raise ValueError(f"--window expects CENTER,WIDTH (e.g. 40,400), got '{window}'") from None
    return center, width


def _parse_options(options: list[str] | None) -> dict[str, Any] | None:
    if not options:
        return None
    import yaml

    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-option expects KEY=VALUE, got '{item}'")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


@app.command("train")
@user_errors
def train_command(
    data: Annotated[Path, typer.Argument(help="Class folders, a .csv manifest or a MedMNIST .npz.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to create.")],
    model: Annotated[str | None, typer.Option(help="Architecture (see `cadx models`).")] = None,
    recipe: Annotated[str | None, typer.Option(help="Preset: aernet-paper, transfer-resnet50, pneumonia-cnn, "
                                                    "small-cnn, or a .yaml path.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per batch.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for split, initialisation and augmentation.")] = None,
    split_seed: Annotated[int | None, typer.Option(help="Seed for the split only (default: --seed); ensemble "
                                                        "members share one split this way.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam, adamw or sgd.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="cosine, step, plateau or none.")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Label smoothing epsilon.")] = None,
    class_weights: Annotated[bool | None, typer.Option("--class-weights/--no-class-weights",
                                                       help="Inverse-frequency weighted loss.")] = None,
    balanced_sampler: Annotated[bool | None, typer.Option("--balanced-sampler/--no-balanced-sampler",
                                                          help="Draw classes equally often.")] = None,
    early_stopping: Annotated[int | None, typer.Option(help="Patience on validation loss; 0 disables.")] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="Training augmentation.")] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="Horizontal flips in augmentation.")] = None,
    in_channels: Annotated[int | None, typer.Option(help="1 (grey) or 3; default: the model's.")] = None,
    model_option: Annotated[list[str] | None, typer.Option(help="Architecture option KEY=VALUE, repeatable "
                                                                "(e.g. attention=cbam).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Local pretrained state dict (torchvision/timm).")] = None,
    freeze_backbone: Annotated[bool | None, typer.Option("--freeze-backbone/--no-freeze-backbone",
                                                         help="Train the classifier only.")] = None,
    window: Annotated[str | None, typer.Option(help="DICOM window CENTER,WIDTH for every DICOM.")] = None,
    teacher: Annotated[list[Path] | None, typer.Option(help="Checkpoint or run folder to distil from, repeatable "
                                                            "(an ensemble's averaged predictions).")] = None,
    distill_weight: Annotated[float | None, typer.Option(help="Share of the loss on the teachers' soft targets "
                                                              f"(default {TrainConfig.distill_weight}).")] = None,
    distill_temperature: Annotated[float | None, typer.Option(
        help=f"Distillation temperature (default {TrainConfig.distill_temperature}).")] = None,
    patient_pattern: Annotated[str | None, typer.Option(help="Regex whose first group is the patient id "
                                                             "in file names.")] = None,
    class_names: Annotated[str | None, typer.Option(help="Comma-separated names for .npz class indices.")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Share of train carved out for validation.")] = None,
    drop_duplicates: Annotated[bool | None, typer.Option("--drop-duplicates/--keep-duplicates",
                                                         help="Keep one copy of byte-identical images.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        help="Wall-clock budget: stop after the first epoch that ends past it (epochs are never cut).")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, 32-true, bf16-mixed, 16-mixed.")] = None,
    split_file: Annotated[Path | None, typer.Option(help="Replay the split.csv of an earlier run.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT/last.ckpt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in OUTPUT.")] = False,
) -> None:
    """Train a model on labelled images; writes best.ckpt, last.ckpt, config.yaml, metrics.csv, curves.png."""
    from cadx.engine.training import train

    config = build_config(
        recipe, model=model, epochs=epochs, image_size=image_size, batch_size=batch_size, seed=seed,
        split_seed=split_seed, lr=lr, weight_decay=weight_decay, optimizer=optimizer, scheduler=scheduler,
        label_smoothing=label_smoothing, distill_weight=distill_weight, distill_temperature=distill_temperature,
        teachers=[str(t) for t in teacher] if teacher else None,
        class_weights=class_weights, balanced_sampler=balanced_sampler, early_stopping=early_stopping,
        augment=augment, flip=flip, in_channels=in_channels, model_options=_parse_options(model_option),
        weights=str(weights) if weights else None, freeze_backbone=freeze_backbone, window=_parse_window(window),
        patient_pattern=patient_pattern, val_fraction=val_fraction, drop_duplicates=drop_duplicates,
        num_workers=num_workers, max_minutes=max_minutes, precision=precision,
        class_names=[c.strip() for c in class_names.split(",")] if class_names else None)
    result = train(data, config, output, resume=resume, overwrite=overwrite, split_file=split_file)
    s = result.summary
    console.print(f"[bold green]trained[/] {config.model} for {result.epochs_run} epoch(s) in {result.seconds:.0f} s; "
                  f"split {s['split_sizes']}; best validation loss {result.best_val_loss:.4f}; "
                  f"decision threshold {s['decision_threshold']:.3f}")
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} unreadable file(s) skipped[/] (listed in summary.json)")
    console.print(f"results in [bold]{result.output}[/] (best.ckpt, last.ckpt, config.yaml, metrics.csv, "
                  "curves.png, split.csv, summary.json)")


@app.command("evaluate")
@user_errors
def evaluate_command(
    checkpoint: Annotated[list[Path], typer.Argument(help="Run folder or .ckpt file; several are averaged "
                                                          "(an ensemble trained on one split).")],
    data: Annotated[Path | None, typer.Option(help="Other labelled data (default: the run's own data).")] = None,
    split: Annotated[str, typer.Option(help="test, val, train, or all (every image of DATA).")] = "test",
    output: Annotated[Path | None, typer.Option(help="Folder for the results (default: the run folder).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Binary decision threshold (default: chosen on "
                                                         "validation at training).")] = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 64,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95 % CIs.")] = 1000,
    tta: Annotated[bool, typer.Option("--tta/--no-tta", help="Test-time augmentation: average each image with "
                                                             "its horizontal mirror.")] = False,
) -> None:
    """Metrics with 95 % CIs, confusion matrix, ROC curves and timing: metrics.json, report.md, PNGs.

    Several checkpoints, or --tta, average the class probabilities; the binary threshold is then chosen again on
    the members' shared validation split (Youden's J)."""
    from cadx.engine.evaluation import evaluate

    m = evaluate(checkpoint, data, split=split, output=output, batch_size=batch_size, threshold=threshold,
                 n_bootstrap=bootstrap, tta=tta)
    table = Table(title=f"{m['model']} on {m['split']} ({m['n_images']} images, {m['average']})")
    table.add_column("metric")
    table.add_column("value")
    table.add_column("95 % CI")
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
        ci = m["ci"].get(key)
        table.add_row(key, f"{m[key]:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    console.print(table)
    lat = m["latency_ms"]["batch_1"]
    console.print(f"{m['params'] / 1e6:.2f} M parameters; {lat['mean']:.2f} ms/image at batch 1 "
                  f"({m['latency_ms']['device']})")
    if "ensemble" in m:
        ens = m["ensemble"]
        cut = f"; threshold {m['threshold']:.3f} ({ens['threshold_source']})" if m.get("threshold") is not None else ""
        console.print(f"averaged {len(ens['checkpoints'])} checkpoint(s), TTA {ens['tta'] or 'off'}{cut}")
    out = output or Path(m["checkpoint"]).parent
    console.print(f"results in [bold]{out}[/] (metrics.json, report.md, confusion_matrix.png, roc.png)")


@app.command("predict")
@user_errors
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder, .ckpt file or shipped model name; leave it out "
                                                    "to use the shipped chest_xray_pneumonia model.")],
    paths: Annotated[list[Path] | None, typer.Argument(help="Image files or folders (searched recursively).")]
    = None,
    threshold: Annotated[float | None, typer.Option(help="Binary decision threshold (default: the model's).")]
    = None,
    output: Annotated[Path | None, typer.Option(help="Write results to FILE.csv or FILE.json.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    frame: Annotated[int | None, typer.Option(help="Frame of multi-frame DICOMs (default: the middle one).")] = None,
) -> None:
    """Classify PNG/JPEG/DICOM images; unreadable files are reported and the rest still run."""
    from cadx.engine.checkpoint import DEFAULT_MODEL, models_dir, names_a_checkpoint
    from cadx.engine.inference import Predictor, expand_inputs

    paths = list(paths or [])
    if not names_a_checkpoint(checkpoint):  # images only: the shipped default model
        checkpoint, paths = Path(DEFAULT_MODEL), [checkpoint, *paths]
        console.print(f"no model given: using the shipped [bold]{DEFAULT_MODEL}[/] model from {models_dir()} "
                      "(paediatric chest X-rays; name another checkpoint first for other images)", highlight=False)
    if not paths:
        raise ValueError("give the image files or folders to classify after the checkpoint")
    predictor = Predictor.from_checkpoint(checkpoint)
    files = expand_inputs(paths)
    if not files:
        raise ValueError(f"no image files found in {', '.join(map(str, paths))}")
    rows = []
    with progress_bar() as progress:
        task = progress.add_task("Classifying", total=len(files))
        for pred in predictor.predict_files(files, batch_size, frame):
            rows.append(_prediction_row(predictor, pred, threshold))
            progress.advance(task)
    _print_predictions(rows, predictor.classes)
    if output:
        _write_predictions(rows, predictor.classes, output)
        console.print(f"written to [bold]{output}[/]")
    if all(r["error"] for r in rows):
        raise typer.Exit(1)


@app.command("compare")
@user_errors
def compare_command(
    config: Annotated[Path, typer.Argument(help="YAML: data, train settings, seeds, entries (name, model, options).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for runs and the table.")],
    finished_only: Annotated[bool, typer.Option(
        "--finished-only", help="Train nothing: write the table from the runs already finished in OUTPUT.")] = False,
) -> None:
    """Train and evaluate every entry x seed of a comparison or ablation; finished entries are resumed."""
    from cadx.engine.compare import compare

    summary = compare(config, output, finished_only=finished_only)
    table = Table(title=summary["title"])
    for col in ("model", "accuracy", "F1", "AUC", "params (M)", "ms/img", "train min"):
        table.add_column(col)
    for r in summary["rows"]:
        table.add_row(r["name"], f"{r['accuracy']:.3f}", f"{r['f1']:.3f}", f"{r['auc']:.3f}", f"{r['params_m']:.2f}",
                      f"{r['ms_per_image_batch1']:.2f}", f"{r['train_minutes']:.1f}")
    console.print(table)
    console.print(f"table in [bold]{output}[/] (results.md, results.json, results.png)")


@app.command("export")
@user_errors
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder or .ckpt file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination .ckpt (e.g. models/NAME/model.ckpt).")],
    category: Annotated[str | None, typer.Option(help="Task group shown by the server, e.g. 'Chest X-ray'.")] = None,
    fp32: Annotated[bool, typer.Option("--fp32", help="Keep float32 weights (default: fp16, half the size).")] = False,
) -> None:
    """Write a compact checkpoint (weights + metadata, no optimizer state) for shipping or serving."""
    import shutil

    from cadx.engine.checkpoint import export_checkpoint, resolve_checkpoint

    source = resolve_checkpoint(checkpoint)
    extra = {"category": category} if category else {}
    dst = export_checkpoint(source, output, half=not fp32, **extra)
    for candidate in (source.parent / "test" / "metrics.json", source.parent / "metrics.json"):
        if candidate.exists():
            shutil.copyfile(candidate, dst.parent / "metrics.json")
            break
    console.print(f"exported to [bold]{dst}[/] ({dst.stat().st_size / 1e6:.1f} MB)")


def _prediction_row(predictor: Predictor, pred: FilePrediction, threshold: float | None) -> dict[str, Any]:
    if pred.probabilities is None:
        return {"file": pred.file, "prediction": None, "error": pred.error, "warning": None}
    decided = predictor.decide(pred.probabilities, threshold)
    by_class = dict(zip(predictor.classes, pred.probabilities, strict=True))
    # The probability beside the decision is the decided class's own (binary: below 0.5 when the threshold is), not
    # the argmax's, so the two columns never disagree; multi-label: the highest decided, empty when none is.
    return {"file": pred.file, "prediction": "|".join(decided),
            "probability": float(max(by_class[c] for c in decided)) if decided else None,
            **{f"p_{c}": float(p) for c, p in zip(predictor.classes, pred.probabilities, strict=True)},
            "error": None, "warning": pred.warning}


def _print_predictions(rows: list[dict[str, Any]], classes: list[str]) -> None:
    warned = any(r["warning"] for r in rows)
    table = Table()
    for col in ("file", "prediction", *classes, "error", *(["warning"] if warned else [])):
        table.add_column(col)
    for r in rows:
        table.add_row(r["file"], r["prediction"] or "-", *[f"{r[f'p_{c}']:.3f}" if r["prediction"] is not None
                                                           else "" for c in classes], r["error"] or "",
                      *([r["warning"] or ""] if warned else []))
    console.print(table)
    if warned:
        console.print(f"[yellow]{sum(bool(r['warning']) for r in rows)} file(s) outside the model's scope[/] "
                      "(see the warning column): their results are not meaningful.")


def _write_predictions(rows: list[dict[str, Any]], classes: list[str], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".json":
        output.write_text(json.dumps(rows, indent=2))
        return
    fields = ["file", "prediction", "probability", *[f"p_{c}" for c in classes], "error", "warning"]
    with output.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


from cadx.interfaces import tabular_cli  # noqa: E402,F401  (registers cadx tabular)  # isort: skip
from cadx.interfaces import explain_cli  # noqa: E402,F401  (registers cadx explain)  # isort: skip
from cadx.interfaces import serve_cli  # noqa: E402,F401  (registers cadx serve, cadx users)  # isort: skip


def main() -> None:
    app()


if __name__ == "__main__":
    main()
