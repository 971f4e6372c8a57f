"""The image commands of ``cadx``: models, train, evaluate, predict, compare, export. Thin: each parses its
options, calls the engine and prints; ``cadx.interfaces.cli`` puts them on the app."""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from rich.table import Table

from cadx.data.cache import progress_bar
from cadx.engine.config import TrainConfig, cli_fields, config_from_cli
from cadx.interfaces.console import console, user_errors

if TYPE_CHECKING:  # the engine is imported lazily so that `cadx --help` stays fast
    from cadx.engine.inference import FilePrediction


def with_config_options(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` with one command-line option per ``TrainConfig`` field (its ``cli`` metadata), so the configuration
    is declared once; the values reach ``fn``'s ``**settings`` as typed (None when not given)."""
    signature = inspect.signature(fn)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = []
    for name, option in cli_fields():
        flag = option.flag or name.replace("_", "-")
        default = getattr(TrainConfig, name, None)
        shown = "" if option.repeat or option.parse or default is None else f" (default {default})"
        if option.type is bool:
            negative = option.negative or f"no-{flag}"
            info = typer.Option(f"--{flag}/--{negative}", help=option.help + shown, show_default=False)
            kind: Any = bool | None
        elif option.repeat:
            info, kind = typer.Option(f"--{flag}", help=option.help), list[str] | None
        else:
            info = typer.Option(f"--{flag}", help=option.help + shown, show_default=False)
            kind = option.type | None
        generated.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=Annotated[kind, info]))
    names = [p.name for p in fixed]

    def command(**values: Any) -> None:
        fn(**{k: values.pop(k) for k in names if k in values}, **values)

    command.__name__, command.__doc__ = fn.__name__, fn.__doc__
    resolved = get_type_hints(fn, include_extras=True)
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(annotation=resolved.get(p.name, p.annotation)) for p in fixed] + generated)
    command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
    return command


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


def train(
    data: Annotated[Path, typer.Argument(help="Class folders, a .csv manifest or a MedMNIST .npz.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to create.")],
    split_file: Annotated[Path | None, typer.Option(help="Replay the split.csv of an earlier run.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT/last.ckpt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in OUTPUT.")] = False,
    **settings: Any,
) -> None:
    """Train a model on labelled images; writes best.ckpt, last.ckpt, config.yaml, metrics.csv, curves.png.

    Every setting of ``cadx.engine.config.TrainConfig`` is an option (generated from its fields)."""
    from cadx.engine.training import train as run_training

    config = config_from_cli(settings)  # validated here, before any image is decoded
    result = run_training(data, config, output, resume=resume, overwrite=overwrite, split_file=split_file)
    s = result.summary
    console.print(f"[bold green]trained[/] {config.model} for {result.epochs_run} epoch(s) in {result.seconds:.0f} s; "
                  f"split {s['split_sizes']}; best validation loss {result.best_val_loss:.4f}; "
                  f"decision threshold {s['decision_threshold']:.3f}")
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} unreadable file(s) skipped[/] (listed in summary.json)")
    console.print(f"results in [bold]{result.output}[/] (best.ckpt, last.ckpt, config.yaml, metrics.csv, "
                  "curves.png, split.csv, summary.json)")


train_command = user_errors(with_config_options(train))


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
    declined = m["abstention"]
    if declined["n"]:
        reasons = ", ".join(f"{k} {v}" for k, v in declined["by_reason"].items())
        kept = m["assessed_only"]
        on_kept = f"; on the assessed images: accuracy {kept['accuracy']:.4f}, AUC {kept['auc']:.4f}" if kept else ""
        console.print(f"[yellow]{declined['n']} image(s) not assessed[/] ({100 * declined['rate']:.1f} %: {reasons})"
                      f"{on_kept}", highlight=False)
    if "ensemble" in m:
        ens = m["ensemble"]
        cut = f"; threshold {m['threshold']:.3f} ({ens['threshold_source']})" if m.get("threshold") is not None else ""
        console.print(f"averaged {len(ens['checkpoints'])} checkpoint(s), TTA {ens['tta'] or 'off'}{cut}")
    out = output or Path(m["checkpoint"]).parent
    console.print(f"results in [bold]{out}[/] (metrics.json, report.md, confusion_matrix.png, roc.png)")


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
    from cadx.engine.catalogue import DEFAULT_MODEL, models_dir, names_a_checkpoint
    from cadx.engine.decision import resolve_threshold
    from cadx.engine.inference import Predictor, expand_inputs

    paths = list(paths or [])
    if not names_a_checkpoint(checkpoint):  # images only: the shipped default model
        checkpoint, paths = Path(DEFAULT_MODEL), [checkpoint, *paths]
        console.print(f"no model given: using the shipped [bold]{DEFAULT_MODEL}[/] model from {models_dir()} "
                      "(paediatric chest X-rays; name another checkpoint first for other images)", highlight=False)
    if not paths:
        raise ValueError("give the image files or folders to classify after the checkpoint")
    predictor = Predictor.from_checkpoint(checkpoint)
    resolve_threshold(predictor.meta, threshold)  # a threshold outside [0, 1] fails before any image is read
    files = expand_inputs(paths)
    if not files:
        raise ValueError(f"no image files found in {', '.join(map(str, paths))}")
    rows = []
    with progress_bar() as progress:
        task = progress.add_task("Classifying", total=len(files))
        for pred in predictor.predict_files(files, batch_size, frame, threshold):
            rows.append(_prediction_row(pred, predictor.classes))
            progress.advance(task)
    _print_predictions(rows, predictor.classes)
    if output:
        _write_predictions(rows, predictor.classes, output)
        console.print(f"written to [bold]{output}[/]")
    if all(r["error"] for r in rows):
        raise typer.Exit(1)


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


@user_errors
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder or .ckpt file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination .ckpt (e.g. models/NAME/model.ckpt).")],
    category: Annotated[str | None, typer.Option(help="Task group shown by the server, e.g. 'Chest X-ray'.")] = None,
    fp32: Annotated[bool, typer.Option("--fp32", help="Keep float32 weights (default: fp16, half the size).")] = False,
) -> None:
    """Write a compact checkpoint (weights + metadata, no optimizer state) for shipping or serving."""
    import shutil

    from cadx.engine.catalogue import resolve_checkpoint
    from cadx.engine.checkpoint import export_checkpoint

    source = resolve_checkpoint(checkpoint)
    extra = {"category": category} if category else {}
    dst = export_checkpoint(source, output, half=not fp32, **extra)
    for candidate in (source.parent / "test" / "metrics.json", source.parent / "metrics.json"):
        if candidate.exists():
            shutil.copyfile(candidate, dst.parent / "metrics.json")
            break
    console.print(f"exported to [bold]{dst}[/] ({dst.stat().st_size / 1e6:.1f} MB)")


@user_errors
def fit_ood_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder, .ckpt file or shipped model name.")],
    method: Annotated[str, typer.Option(help="mahalanobis (each stage's pooled features, summed) or energy "
                                             "(logits).")]
    = "mahalanobis",
    keep: Annotated[float, typer.Option(help="Share of the model's validation images kept as in-distribution.")]
    = 0.99,
) -> None:
    """Fit the out-of-distribution score of an existing checkpoint on its own train/validation splits, so that images
    unlike its training data are "not assessed" (training does this itself since format 2)."""
    from cadx.engine.training import refit_ood

    path, ood = refit_ood(checkpoint, method=method, keep=keep)
    console.print(f"[bold green]fitted[/] {ood.method} score on {ood.fitted['train_images']} training images; limit "
                  f"{ood.threshold:.2f} keeps {100 * ood.keep:g} % of {ood.fitted['val_images']} validation images; "
                  f"written to [bold]{path}[/]", highlight=False)


def _prediction_row(pred: FilePrediction, classes: list[str]) -> dict[str, Any]:
    """One row of the table, CSV and JSON: the prediction's own decision, never re-derived here."""
    decision = pred.decision
    if pred.probabilities is None or decision is None:
        return {"file": pred.file, "prediction": None, "assessed": None, "reason": None, "error": pred.error}
    # The probability beside the decision is the decided class's own (binary: below 0.5 when the threshold is), not
    # the argmax's, so the two columns never disagree; multi-label: the highest decided, empty when none is. An image
    # that was not assessed has no prediction: its probabilities are kept for the record, not as a finding.
    return {"file": pred.file, "prediction": decision.cell if decision.assessed else None,
            "probability": decision.probability, "threshold": decision.threshold,
            "assessed": decision.assessed, "reason": decision.reason or "",
            **{f"p_{c}": float(p) for c, p in zip(classes, pred.probabilities, strict=True)}, "error": None}


def _print_predictions(rows: list[dict[str, Any]], classes: list[str]) -> None:
    table = Table()
    for col in ("file", "prediction", *classes, "error"):
        table.add_column(col)
    for r in rows:
        if r["assessed"] is False:
            shown, cells = f"not assessed: {r['reason']}", ["" for _ in classes]
        else:
            shown = r["prediction"] or "-"
            cells = [f"{r[f'p_{c}']:.3f}" if r["prediction"] is not None else "" for c in classes]
        table.add_row(r["file"], shown, *cells, r["error"] or "")
    console.print(table)
    declined = sum(r["assessed"] is False for r in rows)
    if declined:
        console.print(f"[yellow]{declined} image(s) not assessed[/] (the model cannot judge them; see the reason): "
                      "no finding is given for them.")


def _write_predictions(rows: list[dict[str, Any]], classes: list[str], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".json":
        output.write_text(json.dumps(rows, indent=2))
        return
    fields = ["file", "prediction", "probability", "threshold", "assessed", "reason", *[f"p_{c}" for c in classes],
              "error"]
    with output.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
