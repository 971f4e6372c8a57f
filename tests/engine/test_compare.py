import json
from pathlib import Path

import yaml

from cadx.engine.compare import compare, load_plan
from tests.conftest import make_class_folders, make_multilabel_manifest


def test_compare_trains_each_entry_and_resumes(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", 24)
    config = tmp_path / "table.yaml"
    config.write_text(yaml.safe_dump({
        "title": "tiny table", "data": "data", "seeds": [0],
        "train": {"epochs": 1, "image_size": 32, "batch_size": 16, "in_channels": 1},
        "entries": [{"name": "Simple CNN", "model": "simple_cnn"},
                    {"name": "Small CNN wide", "model": "small_cnn", "options": {"hidden": 32}, "seeds": [0, 1]}],
        "anchors": [{"name": "Some paper", "accuracy": 0.9, "auc": 0.95}],
    }))
    assert load_plan(config).data == data.resolve()
    summary = compare(config, tmp_path / "out")
    assert [r["name"] for r in summary["rows"]] == ["Simple CNN", "Small CNN wide"]
    assert [r["seeds"] for r in summary["rows"]] == [1, 2]  # an entry's own seeds override the plan's
    assert (tmp_path / "out" / "runs" / "small-cnn-wide-seed1" / "test" / "metrics.json").exists()
    for row in summary["rows"]:  # every metric: the seed mean with its bootstrap interval over test images
        for m in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
            low, high = row[f"{m}_ci"]
            assert low <= row[m] <= high, (row["name"], m)
    two_seeds = summary["rows"][1]
    assert two_seeds["accuracy_range"] == sorted(two_seeds["accuracy_range"])
    for key in ("accuracy", "precision", "recall", "f1", "auc", "accuracy_ci", "auc_ci", "params_m",
                "ms_per_image_batch1", "train_minutes"):
        assert key in summary["rows"][0]
    run_machine = json.loads((tmp_path / "out" / "runs" / "simple-cnn-seed0" / "summary.json").read_text())["hardware"]
    assert summary["hardware"] == [run_machine]  # where the runs trained, not where the table was written
    table = (tmp_path / "out" / "results.md").read_text()
    assert "Simple CNN" in table and "Some paper" in table and "trained on" in table and "accuracy by seed" in table
    assert len({line.count("|") for line in table.splitlines() if line.startswith("|")}) == 1  # aligned columns
    assert (tmp_path / "out" / "results.png").exists()
    ckpt = tmp_path / "out" / "runs" / "simple-cnn-seed0" / "best.ckpt"
    stamp = ckpt.stat().st_mtime
    again = compare(config, tmp_path / "out")  # finished entries are read back, not retrained
    assert ckpt.stat().st_mtime == stamp
    assert again["rows"][0]["auc"] == summary["rows"][0]["auc"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"][1]["options"] == {"hidden": 32}


def test_finished_only_tables_the_finished_runs_and_trains_nothing(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data", 24)
    plan = {"title": "cut short", "data": "data", "seeds": [0],
            "train": {"epochs": 1, "image_size": 32, "batch_size": 16, "in_channels": 1},
            "entries": [{"name": "Simple CNN", "model": "simple_cnn"}]}
    config = tmp_path / "table.yaml"
    config.write_text(yaml.safe_dump(plan))
    compare(config, tmp_path / "out")
    plan["entries"].append({"name": "Never trained", "model": "small_cnn"})
    config.write_text(yaml.safe_dump(plan))
    summary = compare(config, tmp_path / "out", finished_only=True)
    assert [r["name"] for r in summary["rows"]] == ["Simple CNN"]
    assert not (tmp_path / "out" / "runs" / "never-trained-seed0").exists()
    assert "Never trained" not in (tmp_path / "out" / "results.md").read_text()


def test_rows_trained_on_different_machines_say_where_and_with_which_settings(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data", 24)
    config = tmp_path / "table.yaml"
    config.write_text(yaml.safe_dump({
        "title": "two hosts", "data": "data", "seeds": [0],
        "train": {"epochs": 1, "image_size": 32, "batch_size": 16, "in_channels": 1},
        "entries": [{"name": "Simple CNN", "model": "simple_cnn"},
                    {"name": "Small CNN", "model": "small_cnn", "train": {"label_smoothing": 0.1}}]}))
    compare(config, tmp_path / "out")
    single_host = (tmp_path / "out" / "results.md").read_text()
    assert "cores)" not in single_host.split("| model |")[1]  # one machine: said once, above the table
    summary_file = tmp_path / "out" / "runs" / "simple-cnn-seed0" / "summary.json"
    record = json.loads(summary_file.read_text())
    record["hardware"] = {**record["hardware"], "gpu": "Lent GPU 80GB"}  # as if this run came back from a GPU host
    summary_file.write_text(json.dumps(record))
    summary = compare(config, tmp_path / "out", finished_only=True)
    assert summary["rows"][0]["trained_on"] == ["Lent GPU 80GB"]
    table = (tmp_path / "out" / "results.md").read_text()
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| Simple") or
            line.startswith("| Small")}
    assert "(Lent GPU 80GB)" in rows["| Simple CNN"] and "cores)" in rows["| Small CNN"]
    assert 'Small CNN: {"label_smoothing": 0.1}' in table


def test_multilabel_rows_get_the_seed_mean_interval(tmp_path: Path) -> None:
    make_multilabel_manifest(tmp_path)
    config = tmp_path / "table.yaml"
    config.write_text(yaml.safe_dump({
        "title": "multi-label", "data": "labels.csv", "seeds": [0, 1],
        "train": {"epochs": 1, "image_size": 28, "batch_size": 16, "in_channels": 1, "patient_pattern": ""},
        "entries": [{"name": "Small CNN", "model": "small_cnn"}]}))
    summary = compare(config, tmp_path / "out")
    row = summary["rows"][0]
    for m in ("accuracy", "f1", "auc"):
        low, high = row[f"{m}_ci"]
        assert low <= row[m] <= high, m
    assert row["precision_ci"] is None  # no interval is claimed where none was computed
    with (tmp_path / "out" / "runs" / "small-cnn-seed0" / "test" / "predictions.csv").open() as fh:
        targets = {line.split(",")[1] for line in fh.readlines()[1:]}
    assert targets <= {"effusion|mass", "mass", "nodule"}  # the manifest's own spelling of the labels
