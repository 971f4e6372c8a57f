"""``cadx explain``: heatmap overlays (the architecture's measured default method, or Grad-CAM, Grad-CAM++,
Layer-CAM, occlusion), raw heatmaps, feature-map tiles and, on request, deletion/insertion faithfulness."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cadx.data.errors import UnreadableImageError
from cadx.interfaces.console import console, err_console, user_errors

if TYPE_CHECKING:
    from cadx.engine.explain import Explainer


def _unique_stem(path: Path, used: set[str]) -> str:
    """``<stem>``, or ``<stem>_2``... when two inputs in different folders share a name."""
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


@user_errors
def explain_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder or .ckpt file.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the overlays, heatmaps and tiles.")],
    class_name: Annotated[str | None, typer.Option("--class", help="Class to explain (default: the predicted "
                                                                   "one).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Binary decision threshold (default: the model's); the "
                                                         "predicted class is decided at it.")] = None,
    method: Annotated[str | None, typer.Option(help="gradcam, gradcam++, layercam or occlusion (default: the "
                                                    "architecture's measured default, docs/explanations.md).")] = None,
    layer: Annotated[str | None, typer.Option(help="Target layer (default: the architecture's measured "
                                                   "default).")] = None,
    feature_maps: Annotated[int, typer.Option("--feature-maps", help="Most active channels per stage in "
                                                                     "<stem>_features.png; 0 skips it.")] = 8,
    faithfulness: Annotated[bool, typer.Option("--faithfulness", help="Also write faithfulness.json: deletion and "
                                                                      "insertion curves and AUCs per image.")] = False,
) -> None:
    """A heatmap per image: <stem>_overlay.png, <stem>_heatmap.npy (float, [0, 1], image size), <stem>_features.png;
    explanations.csv lists each image's decision (as cadx predict makes it) and the class its heatmap explains.
    ``--faithfulness`` adds faithfulness.json (deletion to mean grey, insertion from a blur; Petsiuk et al. 2018).

    Unreadable files are reported and skipped; the exit code is non-zero only if no image could be explained.
    """
    from numpy import save as save_array

    from cadx.engine.decision import resolve_threshold
    from cadx.engine.explain import Explainer
    from cadx.engine.inference import Predictor, expand_inputs

    if feature_maps < 0:
        raise ValueError(f"--feature-maps must be >= 0, got {feature_maps}")
    predictor = Predictor.from_checkpoint(checkpoint)
    resolve_threshold(predictor.meta, threshold)  # a threshold outside [0, 1] fails before any image is read
    try:
        explainer = Explainer(predictor, method=method, layer=layer)
        if class_name is not None:
            explainer.class_index(class_name)
    except ValueError as exc:  # the layer list is long: keep it on one line instead of Rich's wrapping
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    files = expand_inputs(paths)
    if not files:
        raise ValueError(f"no image files found in {', '.join(map(str, paths))}")
    output.mkdir(parents=True, exist_ok=True)

    rows: list[tuple[str, str, str, str]] = []
    records: list[dict[str, object]] = []  # explanations.csv: each image's decision and what its heatmap shows
    warnings: list[tuple[str, str]] = []
    curves: list[dict[str, object]] = []  # faithfulness.json, when asked for
    used: set[str] = set()
    started, done = time.perf_counter(), 0
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("Explaining", total=len(files))
        for file in files:
            try:
                image = predictor.read(file)
            except (UnreadableImageError, FileNotFoundError) as exc:
                reason = exc.reason if isinstance(exc, UnreadableImageError) else str(exc)
                rows.append((str(file), "-", "", reason))
                records.append({"file": str(file), "error": reason})
                progress.advance(task)
                continue
            reason = predictor.assess(predictor.prepare(image), predictor.input_problem(file, image))
            result = explainer.explain(image, target=class_name, feature_maps=feature_maps,
                                       decide=lambda p, r=reason: predictor.decide(p, threshold, r))
            stem = _unique_stem(file, used)
            (output / f"{stem}_overlay.png").write_bytes(result.overlay_png)
            save_array(output / f"{stem}_heatmap.npy", result.heatmap)
            if result.feature_maps_png is not None:
                (output / f"{stem}_features.png").write_bytes(result.feature_maps_png)
            decision = result.decision
            p = "-" if decision.probability is None else f"{decision.probability:.3f}"
            rows.append((str(file), result.target_class, f"{decision.label} ({p})", ""))
            records.append({"file": str(file), "prediction": decision.cell, "assessed": decision.assessed,
                            "reason": decision.reason or "",
                            "probability": decision.probability, "threshold": decision.threshold,
                            # not assessed: the overlay is kept for research, but it explains no finding
                            "explained_class": result.target_class if decision.assessed else "",
                            "overlay": f"{stem}_overlay.png"})
            if faithfulness:
                measured = explainer.faithfulness(image, result.heatmap, result.target_index)
                curves.append({"file": str(file), "explained_class": result.target_class, **measured.as_dict()})
            if reason:
                warnings.append((str(file), f"not assessed: {reason}; the heatmap shows the most probable class"))
            done += 1
            progress.advance(task)
    _write_records(records, output / "explanations.csv")
    if faithfulness:
        _write_faithfulness(curves, explainer, output / "faithfulness.json")
    _print_rows(rows)
    for file, warning in warnings:
        console.print(f"[yellow]caution[/] {escape(file)}: {escape(warning)}", soft_wrap=True, highlight=False)
    seconds = time.perf_counter() - started
    rate = f" ({1000 * seconds / done:.0f} ms/image)" if done else ""
    console.print(f"explained {done} of {len(files)} file(s) with {explainer.describe()} in "
                  f"{seconds:.1f} s{rate}; results in [bold]{escape(str(output))}[/]", soft_wrap=True)
    if done == 0:
        raise typer.Exit(1)


def _write_faithfulness(curves: list[dict[str, object]], explainer: Explainer, path: Path) -> None:
    """Per-image curves and AUCs, their means, and what removed pixels were replaced with."""
    from cadx.engine import faithfulness as f

    def mean(key: str) -> float | None:
        return sum(float(c[key]) for c in curves) / len(curves) if curves else None

    first = curves[0] if curves else {}
    report = {"method": explainer.method, "layer": explainer.layer, "described": explainer.describe(),
              "deletion_baseline": f.DELETION_BASELINE, "insertion_baseline": f.INSERTION_BASELINE,
              "fractions": f.FRACTIONS, "steps": len(first.get("deletion", [])) - 1 if first else f.DEFAULT_STEPS,
              "score": "probability of the explained class", "n": len(curves),
              "mean_deletion_auc": mean("deletion_auc"), "mean_insertion_auc": mean("insertion_auc"),
              "images": curves}
    path.write_text(json.dumps(report, indent=1))


def _write_records(records: list[dict[str, object]], path: Path) -> None:
    fields = ["file", "prediction", "probability", "threshold", "assessed", "reason", "explained_class", "overlay",
              "error"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def _print_rows(rows: list[tuple[str, str, str, str]]) -> None:
    """A table of the explained files; each skipped file on its own unwrapped line (easy to grep)."""
    explained = [r for r in rows if not r[3]]
    if explained:
        table = Table()
        for col in ("file", "explained class", "prediction (p)"):
            table.add_column(col)
        for row in explained:
            table.add_row(*(escape(v) for v in row[:3]))
        console.print(table)
    for file, _, _, error in rows:
        if error:
            console.print(f"[yellow]skipped[/] {escape(file)}: {escape(error)}", soft_wrap=True, highlight=False)
