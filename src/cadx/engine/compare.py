"""``cadx compare``: one config file → train and evaluate every entry × seed → one table (markdown + JSON + plot).

Comparison tables and ablations are the same thing with different entries. Finished entries are resumed (their
``test/metrics.json`` is read back) instead of recomputed, so a long table survives interruptions.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cadx.engine.callbacks import logged_seconds
from cadx.engine.config import build_config
from cadx.engine.decision import decision_indices
from cadx.engine.evaluation import evaluate
from cadx.engine.hardware import describe_hardware
from cadx.engine.meta import DEFAULT_THRESHOLD
from cadx.engine.metrics import HEADLINE, N_BOOTSTRAP, mean_bootstrap_ci
from cadx.engine.training import train

METRICS = HEADLINE


@dataclass
class Entry:
    name: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None  # overrides the plan's seeds, e.g. fewer for a model that is slow to train


@dataclass
class ComparePlan:
    title: str
    data: Path
    entries: list[Entry]
    seeds: list[int]
    train: dict[str, Any]
    recipe: str | None = None
    anchors: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""


def load_plan(path: str | Path) -> ComparePlan:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such comparison config")
    raw = yaml.safe_load(path.read_text()) or {}
    for key in ("data", "entries"):
        if key not in raw:
            raise ValueError(f"{path}: the config needs a '{key}' key")
    data = Path(raw["data"])
    if not data.is_absolute():
        data = (path.parent / data).resolve()
    entries = [Entry(name=e["name"], model=e["model"], options=e.get("options", {}), train=e.get("train", {}),
                     seeds=list(e["seeds"]) if "seeds" in e else None) for e in raw["entries"]]
    return ComparePlan(title=raw.get("title", path.stem), data=data, entries=entries,
                       seeds=list(raw.get("seeds", [0])), train=raw.get("train", {}), recipe=raw.get("recipe"),
                       anchors=raw.get("anchors", []), notes=raw.get("notes", ""))


def run_dir(out: Path, entry: Entry, seed: int) -> Path:
    return out / "runs" / f"{_slug(entry.name)}-seed{seed}"


def finished(run: Path) -> bool:
    """A run counts as finished once its test metrics are written (the last step of ``run_entry``)."""
    return (run / "test" / "metrics.json").exists()


def run_entry(plan: ComparePlan, entry: Entry, seed: int, out: Path) -> Path:
    """Train + evaluate one entry and seed into its run folder, unless a finished result is already there."""
    run = run_dir(out, entry, seed)
    if finished(run):
        return run
    settings = {**plan.train, **entry.train, "model": entry.model, "seed": seed,
                "model_options": {**plan.train.get("model_options", {}), **entry.options}}
    config = build_config(plan.recipe, **settings)
    resume = (run / "last.ckpt").exists()
    result = train(plan.data, config, run, resume=resume, overwrite=not resume)
    evaluate(run, split="val", output=run / "val")
    metrics = evaluate(run, split="test", output=run / "test")
    metrics["train_seconds"] = round(result.seconds, 1)  # earlier sessions of a resumed run included
    metrics["epochs"] = result.epochs_run
    (run / "test" / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return run


def seed_mean_ci(runs: list[Path], metrics: list[dict[str, Any]],
                 n_bootstrap: int = N_BOOTSTRAP) -> dict[str, list[float]]:
    """Bootstrap 95 % intervals (over test images) of the mean over seeds, from each run's test predictions.

    ``metrics`` are the runs' test metrics.json.
    """
    multilabel = metrics[0].get("task") == "multilabel"
    # metrics.json written before "positive_index" existed: training makes class 1 the positive one of two
    positive = None if multilabel else metrics[0].get("positive_index", 1 if len(metrics[0]["classes"]) == 2 else None)
    tables, files = [], []
    for run, m in zip(runs, metrics, strict=True):
        with (run / "test" / "predictions.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        probs = np.array([[float(r[f"p_{c}"]) for c in m["classes"]] for r in rows])
        classes = list(m["classes"])
        y = np.array([_multi_hot(r["target"], classes) if multilabel else int(r["target"]) for r in rows])
        # The headline metrics count every image as if assessed (abstention is reported beside them): the rule at
        # the threshold the evaluation used.
        threshold = DEFAULT_THRESHOLD if m.get("threshold") is None else m["threshold"]
        pred = decision_indices(probs, positive_index=positive, threshold=threshold, multilabel=multilabel)
        tables.append((y, probs, pred))
        files.append([r["file"] for r in rows])
    shared = all(f == files[0] for f in files)
    return mean_bootstrap_ci(tables, positive, n_bootstrap, shared_images=shared, multilabel=multilabel)


def _multi_hot(cell: str, classes: list[str]) -> list[int]:
    """A multi-label target of predictions.csv: 'mass|nodule', or '(0, 1, 1)' as cadx wrote it before 2026-11-22."""
    if cell.startswith("("):
        return [int(v) for v in cell.strip("()").split(",")]
    labels = cell.split("|")
    return [int(c in labels) for c in classes]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def summarise(plan: ComparePlan, results: dict[str, list[Path]]) -> dict[str, Any]:
    rows = []
    for entry in plan.entries:
        run_dirs = results.get(entry.name, [])
        if not run_dirs:
            continue
        runs = [json.loads((r / "test" / "metrics.json").read_text()) for r in run_dirs]
        row: dict[str, Any] = {"name": entry.name, "model": entry.model, "options": entry.options,
                               "train": entry.train, "seeds": len(runs)}
        ci = seed_mean_ci(run_dirs, runs)
        for m in METRICS:
            values = [r[m] for r in runs]
            row[m] = float(np.mean(values))
            row[f"{m}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            row[f"{m}_range"] = [float(np.min(values)), float(np.max(values))]
            row[f"{m}_ci"] = ci.get(m)
        row["params_m"] = runs[0]["params"] / 1e6
        row["ms_per_image_batch1"] = float(np.mean([r["latency_ms"]["batch_1"]["mean"] for r in runs]))
        row["device"] = runs[0]["latency_ms"]["device"]
        # the logged epoch times, which a resumed run keeps whole (every run of train() writes the log)
        row["train_minutes"] = float(np.mean([logged_seconds(d / "metrics.csv") for d in run_dirs])) / 60
        row["epochs"] = [r.get("epochs") for r in runs]
        row["image_size"] = runs[0]["image_size"]
        row["trained_on"] = [machine_label(hw) for hw in run_hardware(run_dirs)]
        rows.append(row)
    return {"title": plan.title, "data": str(plan.data), "seeds": plan.seeds, "train": plan.train,
            "recipe": plan.recipe, "rows": rows, "anchors": plan.anchors, "notes": plan.notes,
            "hardware": run_hardware([r for dirs in results.values() for r in dirs])}


def run_hardware(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """The distinct machines the runs were trained on (a table may be summarised elsewhere, e.g. off a GPU host)."""
    machines: list[dict[str, Any]] = []
    for run in run_dirs:
        summary = run / "summary.json"
        hw = json.loads(summary.read_text()).get("hardware") if summary.exists() else None
        if hw and hw not in machines:
            machines.append(hw)
    return machines or [describe_hardware()]


def machine_label(hw: dict[str, Any]) -> str:
    """A short name for where a run trained: its GPU, else its CPU and cores."""
    return hw["gpu"] or f"{hw['cpu']}, {hw['cores']} cores"


def render_markdown(summary: dict[str, Any]) -> str:
    def cell(row: dict[str, Any], m: str) -> str:
        ci = row.get(f"{m}_ci")
        text = f"{row[m]:.3f}"
        return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text

    machines = "; ".join(f"{hw['cpu']} ({hw['cores']} cores), GPU: {hw['gpu'] or 'none'}, torch {hw['torch']}"
                         for hw in summary["hardware"])
    lines = [f"# {summary['title']}", "",
             f"- data: `{summary['data']}`; seeds: {summary['seeds']} unless a row says otherwise; every metric is "
             "the mean over a row's seeds of its test score, in brackets the 95 % bootstrap CI over test images "
             "(1000 resamples; seeds tested on one test set get the same images in each resample); 'accuracy by "
             "seed' is the min-max over seeds; 'train min' sums the logged epoch times (decoding and set-up "
             "excluded)",
             f"- training: {json.dumps(summary['train'])}" + (f", recipe `{summary['recipe']}`"
                                                                 if summary["recipe"] else ""),
             f"- trained on: {machines}",
             "", "| model | accuracy | precision | recall | specificity | F1 | AUC | accuracy by seed | params (M) "
             "| ms/img (batch 1) | train min | epochs | px | seeds |", "|---" * 14 + "|"]
    mixed = len(summary["hardware"]) > 1  # rows trained on different machines: each train time says where
    for r in summary["rows"]:
        spread = "{:.3f}-{:.3f}".format(*r["accuracy_range"]) if r["seeds"] > 1 else "-"
        where = f" ({'; '.join(r['trained_on'])})" if mixed else ""
        lines.append(f"| {r['name']} | " + " | ".join(cell(r, m) for m in METRICS) + f" | {spread} | "
                     f"{r['params_m']:.2f} | {r['ms_per_image_batch1']:.2f} ({r['device']}) | "
                     f"{r['train_minutes']:.1f}{where} | {r['epochs']} | {r['image_size']} | {r['seeds']} |")
    for a in summary["anchors"]:
        lines.append(f"| *{a['name']}* (published) | {a.get('accuracy', '-')} | - | {a.get('recall', '-')} | "
                     f"{a.get('specificity', '-')} | - | {a.get('auc', '-')} | - | - | - | - | - | "
                     f"{a.get('image_size', '-')} | - |")
    overrides = [f"{r['name']}: {json.dumps(r['train'])}" for r in summary["rows"] if r.get("train")]
    if overrides:
        lines += ["", "Rows with their own training settings (over the plan's): " + "; ".join(overrides) + "."]
    if summary["rows"]:
        best = max(summary["rows"], key=lambda r: r["auc"])
        lines += ["", f"Highest test AUC: **{best['name']}** ({best['auc']:.3f}). Models are selected on validation "
                  "loss only; the test split is touched once, by this table."]
    if summary["notes"]:
        lines += ["", summary["notes"].strip()]
    return "\n".join(lines) + "\n"


def plot_bars(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
    for i, m in enumerate(("accuracy", "f1", "auc")):
        ax.bar(x + (i - 1) * 0.27, [r[m] for r in rows], 0.27, label=m)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylim=(0.5, 1.0), title=summary["title"], ylabel="test score")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(config: str | Path, output: str | Path, *, finished_only: bool = False) -> dict[str, Any]:
    """Train what is missing, then write the table; ``finished_only`` trains nothing and tables the finished runs
    (a table cut short, e.g. when a lent GPU's time ran out, or one trained on another machine)."""
    plan = load_plan(config)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Path]] = {}
    for entry in plan.entries:
        seeds = entry.seeds or plan.seeds
        if finished_only:
            results[entry.name] = [r for r in (run_dir(out, entry, seed) for seed in seeds) if finished(r)]
        else:
            results[entry.name] = [run_entry(plan, entry, seed, out) for seed in seeds]
    summary = summarise(plan, results)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(render_markdown(summary))
    if summary["rows"]:
        plot_bars(summary, out / "results.png")
    return summary
