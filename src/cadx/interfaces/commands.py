"""The image commands of ``cadx``: models, train, evaluate, predict, compare, export, fit-ood, calibrate. Thin:
each parses its options, calls the engine and prints; ``cadx.interfaces.cli`` puts them on the app."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from rich.markup import escape
from rich.table import Table

from cadx.data.progress import progress_bar
from cadx.engine.config import TrainConfig, cli_fields, config_from_cli
from cadx.interfaces.console import console, user_errors

if TYPE_CHECKING:  # the engine is imported lazily so that `cadx --help` stays fast
    from cadx.data.sources import DatasetIndex
    from cadx.engine.inference import FilePrediction
    from cadx.engine.onnx_runtime import Verification


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
def models_command(
    models_folder: Annotated[Path | None, typer.Option("--models-dir", help="Folder of installed models (default: "
                                                       "CADX_MODELS_DIR, else ./models).")] = None,
) -> None:
    """List the architectures (parameters at the default input with 2 classes, default input size), then the models
    installed in the models folder with each ONNX copy's verification. Loads no torch (a stored table, checkpoint
    metadata read without it)."""
    from cadx.engine.architecture_table import read_table
    from cadx.engine.catalogue import models_dir

    table = Table(title="cadx models")
    for col in ("name", "parameters (M)", "input", "channels", "description"):
        table.add_column(col)
    for row in read_table():
        table.add_row(row.name, f"{row.parameters / 1e6:.2f}", f"{row.default_input_size} px",
                      str(row.default_in_channels), row.description)
    console.print(table)
    _print_installed(models_folder or models_dir())


def _print_installed(folder: Path) -> None:
    """The models in ``folder`` (as ``cadx predict NAME`` finds them), then each ONNX copy with what its verification
    record says: the drops against torch on validation, the CPU it was verified on, and whether it is used here."""
    from cadx.engine.catalogue import category_of, scan
    from cadx.engine.checkpoint_peek import peek_meta
    from cadx.engine.meta import CheckpointError
    from cadx.engine.onnx_runtime import BACKEND_FILES, bf16_record_path, read_bf16_record, read_verification

    found = scan(folder)
    if not found:
        console.print(f"no installed models in {folder}", highlight=False)
        return
    models = Table(title=f"installed models in {folder}")
    models.add_column("id", no_wrap=True)
    for col in ("title", "category", "architecture", "classes"):
        models.add_column(col)
    copies = Table(title="their ONNX copies, verified against torch on validation")
    copies.add_column("id", no_wrap=True)
    copies.add_column("copy", no_wrap=True)
    for col in ("accuracy drop (points)", "AUC drop", "assessed agreement", "images", "verified on", "used here"):
        copies.add_column(col)
    for name, checkpoint in found.items():
        try:
            meta = peek_meta(checkpoint)
        except CheckpointError as exc:
            models.add_row(name, f"[red]unreadable[/]: {escape(str(exc))}", "", "", "")
            continue
        models.add_row(name, meta.title or "", category_of(meta.category, checkpoint), meta.model.name,
                       ", ".join(meta.classes))
        for backend, file in BACKEND_FILES.items():
            copy = checkpoint.parent / file
            if copy.is_file():
                copies.add_row(name, backend, *_verification_cells(backend, read_verification(copy)))
        if bf16_record_path(checkpoint).is_file():
            copies.add_row(name, "torch-bf16", *_verification_cells("torch-bf16", read_bf16_record(checkpoint)))
    console.print(models)
    if copies.row_count:
        console.print(copies)


BACKEND_HELP = ("auto (the fastest verified: onnx-int8, torch-bf16, onnx, else torch), torch, torch-bf16 (where bf16 "
                "is native), onnx or onnx-int8.")


def _verification_cells(backend: str, record: Verification | None) -> list[str]:
    """accuracy drop, AUC drop, agreement, images, CPU, used: a copy without a passing record is never used."""
    from cadx.engine.hardware import cpu_kind
    from cadx.engine.onnx_runtime import usable_here

    if record is None or record.backend != backend:
        return ["", "", "", "", "", "[yellow]no: not verified[/]"]
    agreement = "" if record.assessed_agreement is None else f"{record.assessed_agreement:.3f}"
    cells = [f"{100 * record.accuracy_drop:.2f}", f"{record.auc_drop:.4f}", agreement, str(record.images),
             record.cpu or "not recorded"]
    if not record.passed:
        return [*cells, "[red]no: failed[/]"]
    if backend == "torch-bf16":
        from cadx.engine.hardware import native_bf16_cpu

        usable = usable_here(record) and native_bf16_cpu()
        return [*cells, "yes" if usable else "[yellow]no: not this CPU, or bf16 not native[/]"]
    return [*cells, "yes" if usable_here(record) else f"[yellow]no: this CPU is {cpu_kind()}[/]"]


def train(
    data: Annotated[Path, typer.Argument(help="Class folders, a .csv manifest or a MedMNIST .npz.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder to create (default: "
                                                "runs/<data folder name>).")] = None,
    split_file: Annotated[Path | None, typer.Option(help="Replay the split.csv of an earlier run.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT/last.ckpt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in OUTPUT.")] = False,
    **settings: Any,
) -> None:
    """Train a model on labelled images; writes best.ckpt, last.ckpt, config.yaml, metrics.csv, curves.png.

    A set under 1,000 images is cross-validated first (5 folds over patient and near-duplicate groups; --folds).
    Every setting of ``cadx.engine.config.TrainConfig`` is an option (generated from its fields)."""
    from cadx.data.sources import load_index
    from cadx.engine.crossval import plan_folds

    config = config_from_cli(settings)  # validated here, before any image is decoded
    output = output or default_run_folder(data)
    index = None
    if split_file is not None or resume:
        folds, line = 1, "a given split (--split-file / --resume): no cross-validation"
    else:
        index = load_index(data, patient_pattern=config.patient_pattern)
        folds, line = plan_folds(index, config)
    console.print(f"[bold]plan[/]: {escape(line)}", highlight=False)
    if folds > 1:
        _cross_validate(data, config, output, folds, overwrite, index)
        return
    from cadx.engine.training import train as run_training

    result = run_training(data, config, output, resume=resume, overwrite=overwrite, split_file=split_file)
    if result.rank:  # under DDP only rank 0 reports (and wrote the results)
        return
    s = result.summary
    console.print(f"[bold green]trained[/] {config.model} for {result.epochs_run} epoch(s) in {result.seconds:.0f} s; "
                  f"split {s['split_sizes']}; best validation loss {result.best_val_loss:.4f}; "
                  f"decision threshold {s['decision_threshold']:.3f}")
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} unreadable file(s) skipped[/] (listed in summary.json)")
    console.print(f"results in [bold]{result.output}[/] (best.ckpt, last.ckpt, config.yaml, metrics.csv, "
                  "curves.png, split.csv, summary.json)")


def default_run_folder(data: Path) -> Path:
    """runs/<name of the data>: the folder's name, or its parent's for a ``train`` folder inside a dataset."""
    path = data.expanduser().resolve()
    name = path.parent.name if path.name.lower() in ("train", "training") else path.stem
    return Path("runs") / (name or "run")


def _cross_validate(data: Path, config: TrainConfig, output: Path, folds: int, overwrite: bool,
                    index: DatasetIndex | None) -> None:
    from cadx.engine.crossval import cross_validate

    cv = cross_validate(data, config, output, folds, overwrite=overwrite, index=index)
    s = cv.summary
    mean, ci, pooled = s["mean_over_folds"], s["ci_over_folds"], s["pooled_out_of_fold"]

    def cell(key: str) -> str:
        interval = ci.get(key)
        spread = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        return f"{mean[key]:.3f}{spread}" if mean.get(key) is not None else "n/a"

    table = Table(title=f"{folds}-fold cross-validation, {s['images_cross_validated']} images in {s['groups']} groups")
    for col in ("fold", "images", "accuracy", "balanced accuracy", "AUC"):
        table.add_column(col)
    for row in cv.folds:
        table.add_row(str(row["fold"]), str(row["images"]), f"{row['accuracy']:.3f}",
                      f"{row['balanced_accuracy']:.3f}", f"{row['auc']:.3f}")
    table.add_row("mean [95 % CI over folds]", "", cell("accuracy"), cell("balanced_accuracy"), cell("auc"))
    pci = pooled["ci"]
    table.add_row("pooled out of fold [bootstrap 95 % CI]", str(pooled["n_images"]),
                  f"{pooled['accuracy']:.3f} [{pci['accuracy'][0]:.3f}, {pci['accuracy'][1]:.3f}]",
                  f"{pooled['balanced_accuracy']:.3f}",
                  f"{pooled['auc']:.3f} [{pci['auc'][0]:.3f}, {pci['auc'][1]:.3f}]")
    console.print(table)
    if cv.final_test is not None:
        console.print(f"final model on the data's own test split ({cv.final_test['n_images']} images): accuracy "
                      f"{cv.final_test['accuracy']:.3f}, AUC {cv.final_test['auc']:.3f}", highlight=False)
    console.print(f"[bold green]trained[/] the final {config.model} on all {s['images_cross_validated']} images "
                  f"(less {100 * config.val_fraction:g} % for validation) in {cv.final.seconds:.0f} s; results in "
                  f"[bold]{cv.output}[/] (best.ckpt, cv_metrics.json, folds/)")


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
    operating_point: Annotated[str | None, typer.Option(help="Decide at this stored operating point (balanced, "
                                                             "high-sensitivity, high-specificity).")] = None,
    target_sensitivity: Annotated[float | None, typer.Option(help="Choose the operating points again on the "
                                                                  "validation split for this sensitivity.")] = None,
    target_specificity: Annotated[float | None, typer.Option(help="... and for this specificity.")] = None,
    flip_check: Annotated[bool, typer.Option("--flip-check/--no-flip-check", help="Flag an image uncertain when "
                                             "its mirror is decided otherwise (a second forward pass).")] = True,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
) -> None:
    """Metrics with 95 % CIs, confusion matrix, ROC curves and timing: metrics.json, report.md, PNGs.

    Several checkpoints, or --tta, average the class probabilities; the binary threshold is then chosen again on
    the members' shared validation split (Youden's J)."""
    from cadx.engine.evaluation import evaluate

    m = evaluate(checkpoint, data, split=split, output=output, batch_size=batch_size, threshold=threshold,
                 n_bootstrap=bootstrap, tta=tta, operating_point=operating_point,
                 target_sensitivity=target_sensitivity, target_specificity=target_specificity, flip_check=flip_check,
                 backend=backend)
    table = Table(title=f"{m['model']} on {m['split']} ({m['n_images']} images, {m['average']})")
    table.add_column("metric")
    table.add_column("value")
    table.add_column("95 % CI")
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
        ci = m["ci"].get(key)
        table.add_row(key, f"{m[key]:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    cal = m["calibration"]
    for key in ("ece", "brier", "nll"):
        for name in ("uncalibrated", "calibrated") if cal["applied"] else ("uncalibrated",):
            ci = cal[name]["ci"][key]
            table.add_row(f"{key} ({name})", f"{cal[name][key]:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    console.print(table)
    for p in m.get("operating_points") or []:
        console.print(f"operating point {p['name']}{' (decides)' if p['default'] else ''}: threshold "
                      f"{p['threshold']:.3f}, sensitivity {p['sensitivity']:.3f}, specificity {p['specificity']:.3f} "
                      f"(validation {p['validation']['sensitivity']:.3f} / {p['validation']['specificity']:.3f})",
                      highlight=False)
    u = m["uncertainty"]
    if u["n_assessed"]:
        acc = lambda g: "n/a" if g["accuracy"] is None else f"{g['accuracy']:.3f}"  # noqa: E731
        console.print(f"uncertain - review: {u['flagged']['n']} of {u['n_assessed']} images, accuracy "
                      f"{acc(u['flagged'])} (others {acc(u['unflagged'])}); AURC "
                      f"{m.get('risk_coverage', {}).get('aurc') or float('nan'):.4f}", highlight=False)
    lat = m["latency_ms"]["batch_1"]
    console.print(f"{m['params'] / 1e6:.2f} M parameters; {lat['mean']:.2f} ms/image at batch 1 "
                  f"({m['latency_ms']['device']}, backend {m['backend']})")
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
    console.print(f"results in [bold]{out}[/] (metrics.json, report.md, confusion_matrix.png, roc.png, "
                  "reliability.png, risk_coverage.png)")


@user_errors
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder, .ckpt file or shipped model name; leave it out "
                                                    "to use the shipped chest_xray_pneumonia model.")],
    paths: Annotated[list[Path] | None, typer.Argument(help="Image files or folders (searched recursively).")]
    = None,
    threshold: Annotated[float | None, typer.Option(help="Binary decision threshold (default: the model's).")]
    = None,
    output: Annotated[Path | None, typer.Option(help="Write results to FILE.csv or FILE.jsonl (row by row, as they "
                                                     "come) or FILE.json (at the end).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the files already in --output (CSV/JSONL, from an "
                                                          "interrupted run of the same model) and append the rest.")]
    = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int | None, typer.Option(help="Processes decoding images ahead of the network (default: "
                                                     "all cores but one, at most 4; 0: decode in this process).")]
    = None,
    frame: Annotated[int | None, typer.Option(help="Frame of multi-frame DICOMs (default: the middle one).")] = None,
    operating_point: Annotated[str | None, typer.Option(help="Decide at this stored operating point (balanced, "
                                                             "high-sensitivity, high-specificity).")] = None,
    flip_check: Annotated[bool, typer.Option("--flip-check/--no-flip-check", help="Flag an image uncertain when "
                                             "its mirror is decided otherwise (a second forward pass per image).")]
    = True,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    engine: Annotated[str, typer.Option(help="local: this process (and its decode workers); ray: a Ray Data "
                                             "pipeline of predictor actors (pip install 'cadx[ray]').")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to run on (default: RAY_ADDRESS, else a local "
                                                         "Ray on this machine).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Ray predictor actors (default: the cluster's CPUs less "
                                                         "one).")] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray predictor actor (0: CPU only).")] = 0.0,
) -> None:
    """Classify PNG/JPEG/DICOM images; unreadable files are reported and the rest still run."""
    import time

    from cadx.engine.backends import load_predictor
    from cadx.engine.catalogue import DEFAULT_MODEL, models_dir, names_a_checkpoint
    from cadx.engine.decision import resolve_operating_point
    from cadx.engine.decoding import auto_workers
    from cadx.engine.inference import expand_inputs
    from cadx.interfaces.prediction_output import PredictionWriter, already_done, check_output

    paths = list(paths or [])
    if not names_a_checkpoint(checkpoint):  # images only: the shipped default model
        checkpoint, paths = Path(DEFAULT_MODEL), [checkpoint, *paths]
        console.print(f"no model given: using the shipped [bold]{DEFAULT_MODEL}[/] model from {models_dir()} "
                      "(paediatric chest X-rays; name another checkpoint first for other images)", highlight=False)
    if not paths:
        raise ValueError("give the image files or folders to classify after the checkpoint")
    if resume and output is None:
        raise ValueError("--resume needs --output: the file whose rows are kept")
    if output is not None:
        check_output(output, resume)
    if workers is not None and workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {workers}")
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; choose local or ray")
    predictor = load_predictor(checkpoint, backend)
    resolve_operating_point(predictor.meta, threshold, operating_point=operating_point)  # fails before any image
    files = expand_inputs(paths)
    if not files:
        raise ValueError(f"no image files found in {', '.join(map(str, paths))}")
    done = already_done(output, predictor.classes) if resume and output is not None else set()
    todo = [f for f in files if str(f) not in done]
    if engine == "ray":
        from cadx.engine.ray_inference import PredictionOptions, RayOptions, predict_with_ray

        results = predict_with_ray(predictor.checkpoint.path, todo, backend,
                                   PredictionOptions(batch_size, frame, threshold, operating_point, flip_check),
                                   RayOptions(ray_address, concurrency, gpus_per_actor=gpus_per_worker))
    else:
        workers = auto_workers(len(todo), batch_size) if workers is None else workers
        results = ((pred, predictor.backend) for pred in predictor.predict_files(
            todo, batch_size, frame, threshold, operating_point=operating_point, flip_check=flip_check,
            workers=workers))
    shown: list[dict[str, Any]] = []  # the table's rows: all of them without --output, else up to TABLE_ROWS + 1
    counts = {"images": 0, "unreadable": 0, "not assessed": 0}
    backends = {predictor.backend} if engine == "local" else set()  # Ray's actors choose theirs where they run
    started = time.perf_counter()
    writer = PredictionWriter(output, predictor.classes, resume=resume) if output is not None else None
    try:
        with progress_bar() as progress:
            task = progress.add_task("Classifying", total=len(todo))
            for pred, made_by in results:
                row = {**_prediction_row(pred, predictor.classes), "backend": made_by}
                backends.add(made_by)
                counts["images"] += 1
                counts["unreadable"] += bool(row["error"])
                counts["not assessed"] += row["assessed"] is False
                if writer is not None:
                    writer.write(row)
                if writer is None or len(shown) <= TABLE_ROWS:
                    shown.append(row)
                rate = counts["images"] / max(time.perf_counter() - started, 1e-9)
                progress.update(task, advance=1, description=f"Classifying ({rate:.1f} images/s)")
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    if writer is None or len(shown) <= TABLE_ROWS:
        _print_predictions(shown, predictor.classes)
    skipped = f", {len(files) - len(todo)} already in {output} skipped" if resume else ""
    console.print(f"{counts['images']} image(s), {counts['unreadable']} unreadable, {counts['not assessed']} not "
                  f"assessed{skipped}; {counts['images'] / max(seconds, 1e-9):.1f} images/s (decode included, "
                  f"{'Ray actors' if engine == 'ray' else f'{workers} decode worker(s)'}), backend "
                  f"{', '.join(sorted(backends)) or predictor.backend}",
                  highlight=False)
    if output:
        console.print(f"written to [bold]{output}[/]")
    if counts["images"] and counts["unreadable"] == counts["images"]:
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
    checkpoint: Annotated[Path, typer.Argument(help="Run folder, .ckpt file or shipped model name.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Destination .ckpt (e.g. "
                                                "models/NAME/model.ckpt); the ONNX copies go beside it.")] = None,
    category: Annotated[str | None, typer.Option(help="Task group shown by the server, e.g. 'Chest X-ray'.")] = None,
    fp32: Annotated[bool, typer.Option("--fp32", help="Keep float32 weights (default: fp16, half the size).")] = False,
    onnx: Annotated[bool, typer.Option("--onnx", help="Also write model.onnx for ONNX Runtime, verified on the "
                                                      "validation split before it is used.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="With --onnx: also a statically quantised model.int8.onnx, "
                                                      "calibrated on training images and verified the same way.")]
    = False,
    calibration_data: Annotated[Path | None, typer.Option(help="Images to calibrate the int8 ranges on (default: "
                                                               "a sample of the checkpoint's training split).")]
    = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="Verify the torch-bf16 backend (bf16 autocast) against fp32 on "
                                                      "the validation split, so that --backend auto may pick it "
                                                      "(where bf16 is native).")] = False,
) -> None:
    """Write a compact checkpoint (weights + metadata, no optimizer state) for shipping or serving, and/or its
    ONNX Runtime copies; a copy that answers differently from the checkpoint on validation is refused."""
    import shutil

    from cadx.engine.catalogue import resolve_checkpoint
    from cadx.engine.checkpoint import export_checkpoint

    if (int8 or calibration_data is not None) and not onnx:
        raise ValueError("--int8 and --calibration-data need --onnx")
    if output is None and not onnx and not bf16:
        raise ValueError("give --output FILE.ckpt for a compact checkpoint, --onnx for ONNX copies beside it, or "
                         "--bf16")
    source = resolve_checkpoint(checkpoint)
    target = source
    if output is not None:
        extra = {"category": category} if category else {}
        target = export_checkpoint(source, output, half=not fp32, **extra)
        for candidate in (source.parent / "test" / "metrics.json", source.parent / "metrics.json"):
            if candidate.exists() and candidate.resolve() != (target.parent / "metrics.json").resolve():
                shutil.copyfile(candidate, target.parent / "metrics.json")
                break
        console.print(f"exported to [bold]{target}[/] ({target.stat().st_size / 1e6:.1f} MB)")
    refused = []
    if bf16:
        from cadx.engine.bf16 import verify_checkpoint

        path, record = verify_checkpoint(target)
        if record.passed:
            console.print(f"[bold green]verified[/] torch-bf16 ({path}): "
                          f"{record.summary()}", highlight=False)
        else:
            refused.append("torch-bf16")
            console.print(f"[bold red]refused[/] torch-bf16: {record.summary()}; allowed: {record.limits}",
                          highlight=False)
    copies = []
    if onnx:
        from cadx.engine.onnx_export import export_checkpoint_copies

        copies = export_checkpoint_copies(target, int8=int8, calibration_data=calibration_data)
    for path, record in copies:
        if record.passed:
            console.print(f"[bold green]verified[/] {path} ({path.stat().st_size / 1e6:.1f} MB): {record.summary()}",
                          highlight=False)
        else:
            refused.append(path.name)
            console.print(f"[bold red]refused[/] {path.name} (deleted): {record.summary()}; allowed: "
                          f"{record.limits}", highlight=False)
    if refused:
        raise typer.Exit(1)


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


@user_errors
def calibrate_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder, .ckpt file or shipped model name.")],
    data: Annotated[Path | None, typer.Option(help="Other labelled data to fit on (its --split; default: the "
                                                   "checkpoint's own validation split).")] = None,
    split: Annotated[str, typer.Option(help="The split of --data to fit on.")] = "val",
    target_sensitivity: Annotated[float, typer.Option(help="Sensitivity the high-sensitivity operating point must "
                                                           "reach on validation.")] = 0.95,
    target_specificity: Annotated[float, typer.Option(help="Specificity the high-specificity operating point must "
                                                           "reach on validation.")] = 0.95,
    default: Annotated[str, typer.Option("--operating-point", help="The operating point that decides by default.")]
    = "balanced",
) -> None:
    """Fit temperature scaling and the operating points of an existing checkpoint on its validation split and
    write them into it (training does this itself since format 3)."""
    from cadx.engine.calibrate import calibrate_checkpoint

    path, meta, fitted = calibrate_checkpoint(checkpoint, data, split=split, target_sensitivity=target_sensitivity,
                                              target_specificity=target_specificity, default=default)
    cal = fitted.calibration
    temperatures = ", ".join(f"{t:.3f}" for t in cal.temperatures)
    console.print(f"[bold green]calibrated[/] on {cal.n} {cal.fitted_on} images: temperature "
                  f"{temperatures}; NLL {cal.nll_before:.4f} -> {cal.nll_after:.4f}, "
                  f"ECE {cal.ece_before:.4f} -> {cal.ece_after:.4f}", highlight=False)
    for p in fitted.operating_points:
        console.print(f"  {p.name}{' (decides)' if p.name == meta.default_operating_point else ''}: threshold "
                      f"{p.threshold:.3f}, validation sensitivity {p.sensitivity:.3f}, specificity "
                      f"{p.specificity:.3f}", highlight=False)
    console.print(f"written to [bold]{path}[/]")


TABLE_ROWS = 50  # with --output, a longer run prints only its summary


def _prediction_row(pred: FilePrediction, classes: list[str]) -> dict[str, Any]:
    """One row of the table, CSV and JSON: the prediction's own decision, never re-derived here."""
    decision = pred.decision
    if pred.probabilities is None or decision is None:
        return {"file": pred.file, "prediction": None, "assessed": None, "reason": None, "uncertain": None,
                "error": pred.error}
    # The probability beside the decision is the decided class's own (binary: below 0.5 when the threshold is), not
    # the argmax's, so the two columns never disagree; multi-label: the highest decided, empty when none is. An image
    # that was not assessed has no prediction: its probabilities are kept for the record, not as a finding.
    return {"file": pred.file, "prediction": decision.cell if decision.assessed else None,
            "probability": decision.probability, "threshold": decision.threshold,
            "assessed": decision.assessed, "reason": decision.reason or "",
            "operating_point": decision.operating_point or ("custom" if decision.threshold is not None and
                                                            decision.assessed else ""),
            "uncertain": decision.uncertain, "uncertain_reason": decision.uncertain_reason or "",
            **{f"p_{c}": float(p) for c, p in zip(classes, pred.probabilities, strict=True)}, "error": None}


def _print_predictions(rows: list[dict[str, Any]], classes: list[str]) -> None:
    table = Table()
    for col in ("file", "prediction", *classes, "error"):
        table.add_column(col)
    for r in rows:
        if r["assessed"] is False:
            shown, cells = f"not assessed: {r['reason']}", ["" for _ in classes]
        else:
            shown = (r["prediction"] or "-") + (" (uncertain - review)" if r.get("uncertain") else "")
            cells = [f"{r[f'p_{c}']:.3f}" if r["prediction"] is not None else "" for c in classes]
        table.add_row(r["file"], shown, *cells, r["error"] or "")
    console.print(table)
    declined = sum(r["assessed"] is False for r in rows)
    if declined:
        console.print(f"[yellow]{declined} image(s) not assessed[/] (the model cannot judge them; see the reason): "
                      "no finding is given for them.")
