"""Tabular (clinical-variable) classification: the seed's 1-D CNN beside logistic regression and gradient boosting.

Every model sees the same stratified outer folds and, inside each training fold, the same inner split: it is fitted
on the inner-training rows, the 1-D CNN early-stops on the inner-validation rows, and each model's decision
threshold is Youden's J on those inner-validation predictions. The test fold is only ever predicted. Encoding and
standardisation are one scikit-learn pipeline fitted on the inner-training rows of each fold, so no statistic of a
validation or test row leaks into training.
"""

from __future__ import annotations

import copy
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from torch import nn

from cadx.engine.decision import decision_indices
from cadx.engine.metrics import bootstrap_ci, choose_threshold
from cadx.engine.plots import plot_roc
from cadx.models.tabular import TabularCNN1d

MODELS = ("cnn1d", "logistic", "gbm")
ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5}  # grade/stage labels: ordered, so encoded as 1 < 2 < 3
MISSING = {"", "na", "nan", "null", "none", "?"}
VAL_FRACTION = 0.2


@dataclass
class TabularData:
    """A CSV read into memory: features kept raw (floats or strings) so the per-fold pipeline does the encoding."""

    path: Path
    target: str
    columns: list[str]
    x: np.ndarray  # (rows, columns), dtype object
    y: np.ndarray  # 0/1
    positive_class: str
    encoding: dict[str, str]  # column -> "numeric" | "ordinal (I<II<III)" | "one-hot"
    dropped: list[str] = field(default_factory=list)


@dataclass
class CVResult:
    metrics: dict[str, Any]  # what metrics.json holds
    oof: dict[str, np.ndarray]  # pooled out-of-fold probabilities per model
    y: np.ndarray
    folds: list[dict[str, Any]]  # per fold: inner/val/test indices and the fitted preprocessor (for audits, tests)


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def load_table(path: Path, target: str, drop: list[str] | tuple[str, ...] = ()) -> TabularData:
    """Read, validate and type the columns; every problem is a ValueError naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if target not in header:
        raise ValueError(f"{path}: target column '{target}' not found; columns: {', '.join(header)}")
    for col in drop:
        if col not in header:
            raise ValueError(f"{path}: --drop column '{col}' not found; columns: {', '.join(header)}")
        if col == target:
            raise ValueError(f"{path}: cannot --drop the target column '{target}'")
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: line(s) {bad[:5]} have a different number of fields than the header")
    cols = {h: [r[i].strip() for r in body] for i, h in enumerate(header)}
    missing = [h for h in header if h not in drop and any(v.lower() in MISSING for v in cols[h])]
    if missing:
        raise ValueError(f"{path}: missing values in column(s) {', '.join(missing)}; impute or --drop them")
    y, positive = _binary_target(path, target, cols[target])
    features = [h for h in header if h != target and h not in drop]
    if not features:
        raise ValueError(f"{path}: no feature columns left after dropping {', '.join(drop)}")
    x = np.empty((len(body), len(features)), dtype=object)
    encoding = {}
    for j, h in enumerate(features):
        values = cols[h]
        if all(_is_float(v) for v in values):
            x[:, j], encoding[h] = [float(v) for v in values], "numeric"
        elif all(v.upper() in ROMAN for v in values):
            levels = sorted({v.upper() for v in values}, key=ROMAN.__getitem__)
            x[:, j], encoding[h] = [v.upper() for v in values], f"ordinal ({'<'.join(levels)})"
        else:
            k = len(set(values))
            x[:, j], encoding[h] = values, "one-hot, one 0/1 column" if k == 2 else f"one-hot, {k} levels"
    return TabularData(path, target, features, x, y, positive, encoding, list(drop))


def _binary_target(path: Path, target: str, values: list[str]) -> tuple[np.ndarray, str]:
    levels = sorted(set(values), key=lambda v: (float(v), v) if _is_float(v) else (float("inf"), v))
    if len(levels) != 2:
        shown = ", ".join(levels[:6]) + (", ..." if len(levels) > 6 else "")
        raise ValueError(f"{path}: target '{target}' must be binary, found {len(levels)} distinct value(s): {shown}")
    positive = levels[1]  # 1 of 0/1, the larger number, or the later string (yes over no)
    return np.array([v == positive for v in values], dtype=int), positive


def check_folds(data: TabularData, folds: int) -> None:
    """Each outer training fold is split again for validation, so each class needs 2 rows per fold."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    counts = np.bincount(data.y, minlength=2)
    if counts.min() < 2 * folds:
        raise ValueError(f"{data.path}: too few rows per class for {folds}-fold CV with an inner validation split: "
                         f"class counts {counts[0]} / {counts[1]}, need at least {2 * folds} each")


def make_preprocessor(data: TabularData) -> Pipeline:
    """Encode each column in CSV order (the CNN convolves over neighbours), then standardise every feature."""
    parts = []
    for j, col in enumerate(data.columns):
        kind = data.encoding[col]
        if kind == "numeric":
            enc: Any = FunctionTransformer(lambda a: np.asarray(a, dtype=float), feature_names_out="one-to-one")
        elif kind.startswith("ordinal"):
            enc = OrdinalEncoder(categories=[sorted(set(data.x[:, j]), key=ROMAN.__getitem__)])  # labels, no stats
        else:
            enc = OneHotEncoder(drop="if_binary", handle_unknown="ignore", sparse_output=False)
        parts.append((col, enc, [j]))
    return Pipeline([("encode", ColumnTransformer(parts, sparse_threshold=0.0)), ("scale", StandardScaler())])


def train_cnn(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, epochs: int, seed: int,
              lr: float = 1e-3, batch_size: int = 32, patience: int = 20) -> tuple[TabularCNN1d, int]:
    """Adam on BCE-with-logits; keeps the weights of the lowest inner-validation loss (early stopping).

    A plain torch loop rather than Lightning: with ~400 training rows an epoch is a few milliseconds, so Lightning's
    per-epoch machinery (loops, callbacks, logging) would dominate the run time, and this loop is fully seeded.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = TabularCNN1d(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    xv, yv = torch.as_tensor(x_val, dtype=torch.float32), torch.as_tensor(y_val, dtype=torch.float32)
    best, best_state, best_epoch, waited = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv), yv).item()
        if val < best - 1e-4:
            best, best_state, best_epoch, waited = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), best_epoch


def _fit_predict(name: str, xi: np.ndarray, yi: np.ndarray, xv: np.ndarray, yv: np.ndarray, xt: np.ndarray, *,
                 seed: int, epochs: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Probabilities of the positive class on the inner-validation rows and on the test fold."""
    if name == "cnn1d":
        net, best_epoch = train_cnn(xi, yi, xv, yv, epochs=epochs, seed=seed)
        with torch.no_grad():
            p_val, p_test = (torch.sigmoid(net(torch.as_tensor(a, dtype=torch.float32))).numpy() for a in (xv, xt))
        return p_val, p_test, {"best_epoch": best_epoch}
    clf = (LogisticRegression(max_iter=1000) if name == "logistic"
           else GradientBoostingClassifier(random_state=seed))  # defaults: 100 trees, depth 3, rate 0.1
    clf.fit(xi, yi)
    return clf.predict_proba(xv)[:, 1], clf.predict_proba(xt)[:, 1], {}


def run_cv(data: TabularData, *, folds: int = 5, seed: int = 0, epochs: int = 200,
           n_bootstrap: int = 1000) -> CVResult:
    """Stratified k-fold CV of the three models; torch runs single-threaded (tiny tensors: threads only cost)."""
    check_folds(data, folds)
    threads, start = torch.get_num_threads(), time.perf_counter()
    torch.set_num_threads(1)
    try:
        n, y = len(data.y), data.y
        oof = {m: np.zeros(n) for m in MODELS}
        decided = {m: np.zeros(n, dtype=int) for m in MODELS}
        per_fold: dict[str, list[dict[str, Any]]] = {m: [] for m in MODELS}
        fold_log = []
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        for k, (train, test) in enumerate(splitter.split(data.x, y)):
            inner, val = train_test_split(train, test_size=VAL_FRACTION, stratify=y[train], random_state=seed + k)
            prep = make_preprocessor(data).fit(data.x[inner])
            xi, xv, xt = (prep.transform(data.x[rows]).astype(np.float32) for rows in (inner, val, test))
            fold_log.append({"inner": inner, "val": val, "test": test, "preprocessor": prep})
            for name in MODELS:
                p_val, p_test, info = _fit_predict(name, xi, y[inner], xv, y[val], xt, seed=seed + k, epochs=epochs)
                threshold = choose_threshold(y[val], np.stack([1 - p_val, p_val], 1), 1)
                decided[name][test] = decision_indices(np.stack([1 - p_test, p_test], 1), positive_index=1,
                                                       threshold=threshold)
                oof[name][test] = p_test
                per_fold[name].append({"auc": float(roc_auc_score(y[test], p_test)), "threshold": threshold, **info})
        metrics: dict[str, Any] = {m: _summarise(y, oof[m], decided[m], per_fold[m], n_bootstrap, seed)
                                   for m in MODELS}
    finally:
        torch.set_num_threads(threads)
    metrics["data"] = {"file": str(data.path), "rows": n, "positives": int(y.sum()), "target": data.target,
                       "positive_class": data.positive_class, "features": data.columns, "encoding": data.encoding,
                       "dropped": data.dropped, "n_encoded_features": int(xi.shape[1])}
    metrics["cv"] = {"folds": folds, "seed": seed, "max_epochs": epochs, "inner_val_fraction": VAL_FRACTION,
                     "bootstrap_resamples": n_bootstrap, "standardisation": "fitted on each fold's inner-training rows",
                     "threshold": "Youden's J on each training fold's inner-validation predictions",
                     "auc": "mean over folds; CI: percentile bootstrap of the pooled out-of-fold predictions",
                     "seconds": round(time.perf_counter() - start, 1)}
    return CVResult(metrics, oof, y, fold_log)


def _summarise(y: np.ndarray, p: np.ndarray, decided: np.ndarray, folds: list[dict[str, Any]], n_bootstrap: int,
               seed: int) -> dict[str, Any]:
    aucs = np.array([f["auc"] for f in folds])
    ci = bootstrap_ci(y, np.stack([1 - p, p], 1), decided, 1, n_bootstrap, seed)
    tp, fn = int(np.sum((decided == 1) & (y == 1))), int(np.sum((decided == 0) & (y == 1)))
    tn, fp = int(np.sum((decided == 0) & (y == 0))), int(np.sum((decided == 1) & (y == 0)))
    return {"auc": float(aucs.mean()), "auc_sd": float(aucs.std(ddof=1)), "auc_ci": ci["auc"],
            "auc_pooled": float(roc_auc_score(y, p)), "fold_auc": aucs.tolist(),
            "sensitivity": tp / max(tp + fn, 1), "specificity": tn / max(tn + fp, 1),
            "accuracy": (tp + tn) / len(y), "accuracy_ci": ci["accuracy"],
            "confusion_matrix": [[tn, fp], [fn, tp]], "folds": folds}


def render_report(m: dict[str, Any]) -> str:
    """report.md: one row per model, then how the numbers were made."""
    d, cv = m["data"], m["cv"]
    lines = [f"# Tabular CV: {Path(d['file']).name}, target `{d['target']}` (positive: {d['positive_class']})", "",
             f"{d['rows']} rows, {d['positives']} positive; {cv['folds']}-fold stratified CV, seed {cv['seed']}; "
             f"features: {', '.join(d['features'])}" + (f"; dropped: {', '.join(d['dropped'])}" if d['dropped']
                                                         else ""), "",
             "| model | AUC mean ± sd (folds) | 95 % CI (pooled bootstrap) | pooled AUC | sensitivity | specificity |",
             "|---|---|---|---|---|---|"]
    for name in MODELS:
        r = m[name]
        lines.append(f"| {name} | {r['auc']:.3f} ± {r['auc_sd']:.3f} | [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}] "
                     f"| {r['auc_pooled']:.3f} | {r['sensitivity']:.3f} | {r['specificity']:.3f} |")
    lines += ["", "- Encoding: " + "; ".join(f"{c}: {e}" for c, e in d["encoding"].items()) + ".",
              f"- Standardisation: {cv['standardisation']} (never validation or test rows).",
              f"- Threshold: {cv['threshold']}; sensitivity/specificity are of the pooled out-of-fold decisions "
              "(each test fold cut at its own fold's threshold). roc.png: pooled out-of-fold curves; the dot is "
              "cnn1d's operating point, which can sit just off its pooled curve because the thresholds differ by fold.",
              f"- AUC: {cv['auc']} ({cv['bootstrap_resamples']} resamples).",
              "- Models: cnn1d = Conv1d(1,32,3) → max-pool → dense 64 → dropout → logit, Adam, early stopping on the "
              "inner-validation loss; logistic = LogisticRegression; gbm = GradientBoostingClassifier (defaults).",
              f"- Wall time: {cv['seconds']} s.", ""]
    return "\n".join(lines)


def write_outputs(result: CVResult, output: Path) -> None:
    """metrics.json, report.md and roc.png (pooled out-of-fold curves; the dot is the CNN's operating point)."""
    import json

    output.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    (output / "metrics.json").write_text(json.dumps(m, indent=2))
    (output / "report.md").write_text(render_report(m))
    curves = {}
    for name in MODELS:
        fpr, tpr, _ = roc_curve(result.y, result.oof[name])
        mark = " (●)" if name == "cnn1d" else ""
        label = f"{name}{mark}: sens {m[name]['sensitivity']:.2f}, spec {m[name]['specificity']:.2f}, pooled"
        curves[label] = (fpr, tpr, m[name]["auc_pooled"])
    cnn = m["cnn1d"]
    plot_roc(curves, output / "roc.png", operating_point=(1 - cnn["specificity"], cnn["sensitivity"]))
