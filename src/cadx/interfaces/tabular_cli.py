"""``cadx tabular``: clinical-variable CSVs, the seed's 1-D CNN against logistic regression and gradient boosting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cadx.interfaces.console import console, user_errors


@user_errors
def tabular_command(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="One row per patient, a header row.")],
    target: Annotated[str, typer.Option(help="Binary outcome column (e.g. cens).")],
    drop: Annotated[list[str] | None, typer.Option(help="Column to leave out, repeatable (e.g. time: it leaks "
                                                        "the outcome).")] = None,
    folds: Annotated[int, typer.Option(help="Stratified cross-validation folds.")] = 5,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Results folder (default: "
                                                                        "runs/tabular-<CSV name>).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for folds, inner splits, initialisation and bootstrap.")] = 0,
    epochs: Annotated[int, typer.Option(help="Maximum 1-D CNN epochs (early stopping, patience 20).")] = 200,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95 % AUC CIs.")] = 1000,
) -> None:
    """Cross-validate cnn1d, logistic and gbm on a CSV; writes metrics.json, report.md, roc.png."""
    from cadx.engine.tabular import MODELS, load_table, run_cv, write_outputs

    data = load_table(csv_path, target, drop or [])
    result = run_cv(data, folds=folds, seed=seed, epochs=epochs, n_bootstrap=bootstrap)
    out = output or Path("runs") / f"tabular-{csv_path.stem}"
    write_outputs(result, out)
    m = result.metrics
    table = Table(title=f"{csv_path.name}: {m['data']['rows']} rows, {m['data']['positives']} positive "
                        f"({target}={m['data']['positive_class']}), {folds}-fold CV")
    for col in ("model", "AUC mean ± sd", "95 % CI (pooled bootstrap)", "sensitivity", "specificity"):
        table.add_column(col)
    for name in MODELS:
        r = m[name]
        table.add_row(name, f"{r['auc']:.3f} ± {r['auc_sd']:.3f}", f"[{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]",
                      f"{r['sensitivity']:.3f}", f"{r['specificity']:.3f}")
    console.print(table)
    console.print(f"results in [bold]{out}[/] (metrics.json, report.md, roc.png) after {m['cv']['seconds']} s")
