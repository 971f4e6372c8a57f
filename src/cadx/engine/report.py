"""``report.md``: the evaluation as tables a person reads (metrics.json stays the machine-readable twin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return str(value)


def _with_ci(metrics: dict[str, Any], key: str) -> str:
    ci = metrics.get("ci", {}).get(key)
    base = _fmt(metrics.get(key))
    return f"{base} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else base


def render_report(m: dict[str, Any]) -> str:
    lat = m["latency_ms"]
    batch_keys = [k for k in lat if k.startswith("batch_")]
    lines = [
        f"# Evaluation of `{m['model']}`",
        "",
        f"- checkpoint: `{m['checkpoint']}`",
        f"- data: `{m['data']}`, split **{m['split']}**, {m['n_images']} images at {m['image_size']} px"
        + (f", {len(m['skipped_files'])} unreadable file(s) skipped" if m.get("skipped_files") else ""),
        f"- averaging: {m['average']}" + (f"; decision threshold {m['threshold']:.3f} (chosen on validation "
                                           "unless given)" if m.get("threshold") is not None else ""),
        f"- parameters: {m['params'] / 1e6:.2f} M",
        "",
        "| metric | value [95 % bootstrap CI] |",
        "|---|---|",
        f"| accuracy | {_with_ci(m, 'accuracy')} |",
        f"| precision | {_with_ci(m, 'precision')} |",
        f"| recall (sensitivity) | {_with_ci(m, 'recall')} |",
        f"| specificity | {_with_ci(m, 'specificity')} |",
        f"| F1 | {_with_ci(m, 'f1')} |",
        f"| AUC-ROC | {_with_ci(m, 'auc')} |",
    ]
    if "accuracy_at_0.5" in m:
        lines.append(f"| accuracy at threshold 0.5 | {_fmt(m['accuracy_at_0.5'])} |")
    lines += ["", "## Per class", "", "| class | precision | recall | specificity | F1 | AUC | support |",
              "|---|---|---|---|---|---|---|"]
    for name, pc in m["per_class"].items():
        lines.append(f"| {name} | {_fmt(pc['precision'])} | {_fmt(pc['recall'])} | {_fmt(pc['specificity'])} | "
                     f"{_fmt(pc['f1'])} | {_fmt(pc['auc'])} | {pc['support']} |")
    if m.get("task") != "multilabel":
        classes = m["classes"]
        lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
                  "| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        for name, row in zip(classes, m["confusion_matrix"], strict=True):
            lines.append(f"| **{name}** | " + " | ".join(map(str, row)) + " |")
    lines += _calibration_lines(m) + _operating_point_lines(m) + _uncertainty_lines(m)
    lines += ["", f"## Inference time ({lat['device']}, {lat['torch_threads']} threads, model forward only)", "",
              "| batch size | mean ms / image | p95 ms / image |", "|---|---|---|"]
    for key in batch_keys:
        lines.append(f"| {lat[key]['batch_size']} | {lat[key]['mean']:.2f} | {lat[key]['p95']:.2f} |")
    if m.get("skipped_files"):
        lines += ["", "## Skipped files", ""] + [f"- `{s['file']}`: {s['reason']}" for s in m["skipped_files"]]
    return "\n".join(lines) + "\n"


def _ci(value: Any, ci: list[float] | None) -> str:
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else _fmt(value)


def _calibration_lines(m: dict[str, Any]) -> list[str]:
    cal = m.get("calibration")
    if not cal:
        return []
    temps = "; ".join(", ".join(f"{t:.3f}" for t in ts) if ts else "none" for ts in cal["temperatures"])
    state = "applied" if cal["applied"] else "not fitted (probabilities as the network gives them)"
    lines = ["", "## Calibration", "",
             f"Temperature scaling {state}; T = {temps} (fitted on {', '.join(map(str, cal['fitted_on']))}). "
             f"ECE: {cal['bins']} equal-width bins, {cal['ece_kind']}. Lower is better for all three.", "",
             "| | ECE | Brier | NLL |", "|---|---|---|---|"]
    for name in ("uncalibrated", "calibrated"):
        s = cal[name]
        lines.append(f"| {name} | " + " | ".join(_ci(s[k], s["ci"].get(k)) for k in ("ece", "brier", "nll")) + " |")
    return lines


def _operating_point_lines(m: dict[str, Any]) -> list[str]:
    points = m.get("operating_points")
    if not points:
        return []
    lines = ["", "## Operating points (chosen on validation)", "",
             "| name | threshold | target | validation sensitivity / specificity | sensitivity [95 % CI] | "
             "specificity [95 % CI] |", "|---|---|---|---|---|---|"]
    for p in points:
        target = f"{p['criterion']} ≥ {p['target']:g}" if p["target"] is not None else "Youden's J"
        v = p["validation"]
        name = f"**{p['name']}** (decides)" if p["default"] else p["name"]
        lines.append(f"| {name} | {p['threshold']:.3f} | {target} | {_fmt(v['sensitivity'])} / "
                     f"{_fmt(v['specificity'])} (n={v['n']}) | {_ci(p['sensitivity'], p['ci']['sensitivity'])} | "
                     f"{_ci(p['specificity'], p['ci']['specificity'])} |")
    return lines


def _uncertainty_lines(m: dict[str, Any]) -> list[str]:
    u = m.get("uncertainty")
    if not u:
        return []
    f, k = u["flagged"], u["unflagged"]
    share = u["share_of_errors_flagged"]
    lines = ["", "## Uncertain — review", "",
             f"Flagged: calibrated probability within {u['margin']:g} of the threshold"
             + (", or the mirrored image decided otherwise" if u.get("flip_check") else "")
             + f". {f['n']} of {u['n_assessed']} assessed images ({100 * f['rate']:.1f} %) flagged, holding "
             f"{u['errors_flagged']} of {u['errors']} errors"
             + (f" ({100 * share:.1f} %)" if share is not None else "") + ".", "",
             "| images | n | accuracy [95 % CI] |", "|---|---|---|",
             f"| flagged uncertain | {f['n']} | {_ci(f['accuracy'], f['ci'])} |",
             f"| not flagged | {k['n']} | {_ci(k['accuracy'], k['ci'])} |"]
    rc = m.get("risk_coverage")
    if rc and rc.get("aurc") is not None:
        lines += ["", f"Risk–coverage (images ordered by the calibrated probability of the decided class): AURC "
                      f"{rc['aurc']:.4f} (a perfect ranking of the same errors: {rc['optimal_aurc']:.4f}); "
                      "`risk_coverage.png`."]
    return lines


def write_report(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(render_report(metrics))
