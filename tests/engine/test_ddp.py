"""Training on several processes (DDP): the settings, the per-machine decoded-image cache, and one real 2-process
CPU run (gloo) launched by torchrun that checks every training image is seen exactly once per epoch across the
ranks, that rank 0 alone writes the run folder, and that its checkpoint loads and predicts."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cadx.data.sources import DatasetError, load_index
from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import load_checkpoint
from cadx.engine.config import build_config, cli_fields
from cadx.engine.datamodule import decode_shared
from cadx.engine.inference import Predictor
from tests.conftest import make_class_folders

EPOCHS = 2
TRAIN_PER_CLASS = 8  # 16 training images: 8 per rank, two full batches of 4 each, nothing padded or dropped

# Run by torchrun, once per rank: trains, and records a digest of every image of every training batch this rank saw.
SCRIPT = textwrap.dedent('''
    import hashlib, json, sys
    from pathlib import Path

    import lightning as L

    from cadx.engine.config import build_config
    from cadx.engine.training import train


    def digest(image):
        return hashlib.sha256(image.cpu().contiguous().numpy().tobytes()).hexdigest()


    class SeenImages(L.Callback):
        def __init__(self, folder):
            self.folder, self.seen = folder, []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen += [digest(image) for image in batch[0]]

        def on_train_epoch_end(self, trainer, module):
            train_set = trainer.datamodule.train_set
            record = {"seen": self.seen, "dataset": [digest(train_set[i][0]) for i in range(len(train_set))],
                      "world_size": trainer.world_size, "cache": str(getattr(train_set.images, "filename", None))}
            name = f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
            (self.folder / name).write_text(json.dumps(record))
            self.seen = []


    data, output, split, seen = map(Path, sys.argv[1:5])
    config = build_config(model="simple_cnn", image_size=32, batch_size=4, epochs=int(sys.argv[5]),
                          early_stopping=0, augment=False, near_duplicates=0, accelerator="cpu", devices=2,
                          strategy="ddp", num_workers=0)
    result = train(data, config, output, split_file=split, callbacks=[SeenImages(seen)])
    (seen / f"result-rank{result.rank}.json").write_text(json.dumps({"rank": result.rank}))
''')


def test_devices_nodes_and_strategy_are_settings() -> None:
    offered = dict(cli_fields())
    assert {"devices", "num_nodes", "strategy"} <= set(offered)
    config = build_config(devices=4, num_nodes=2, strategy="DDP")
    assert (config.devices, config.num_nodes, config.strategy) == (4, 2, "ddp")
    assert build_config().devices == 1 and build_config().strategy == "auto"
    for bad, message in (({"devices": 0}, "devices must be"), ({"num_nodes": 0}, "num_nodes must be"),
                         ({"strategy": "fsdp2"}, "unknown strategy")):
        with pytest.raises(ValueError, match=message):
            build_config(**bad)


def test_the_cache_is_decoded_once_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_class_folders(tmp_path / "data", 3, size=40)
    (data / "normal" / "broken.png").write_bytes(b"not a png")
    index = load_index(data)
    pre = Preprocessing(32, 1)
    first = decode_shared(index, index.records, pre, tmp_path / "cache", local_rank=0)
    assert isinstance(first.images, np.memmap) and len(first.records) == 6 and len(first.skipped) == 1

    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a second process of the machine decoded the images again")

    monkeypatch.setattr("cadx.engine.datamodule.decode_records", no_decoding)
    other = decode_shared(index, index.records, pre, tmp_path / "cache", local_rank=1, timeout_s=5)
    assert other.records == first.records and other.skipped == first.skipped
    assert np.array_equal(other.images, first.images) and Path(other.images.filename) == tmp_path / "cache/images.npy"
    with pytest.raises(DatasetError, match="waited 0 s"):  # another preprocessing: the cache does not hold it
        decode_shared(index, index.records, Preprocessing(28, 1), tmp_path / "cache", local_rank=1, timeout_s=0)


def test_a_failed_decode_stops_the_machines_other_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_class_folders(tmp_path / "data", 2, size=40)
    index = load_index(data)

    def failing(*_args: object, **_kwargs: object) -> None:
        raise DatasetError("disk on fire")

    monkeypatch.setattr("cadx.engine.datamodule.decode_records", failing)
    with pytest.raises(DatasetError, match="disk on fire"):
        decode_shared(index, index.records, Preprocessing(32, 1), tmp_path / "cache", local_rank=0)
    with pytest.raises(DatasetError, match="first process failed: DatasetError: disk on fire"):
        decode_shared(index, index.records, Preprocessing(32, 1), tmp_path / "cache", local_rank=1, timeout_s=5)


def _split_file(data: Path, path: Path) -> Path:
    """8 training, 2 validation and 6 test images per class; a patient's two images stay together."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "split"])
        for record in load_index(data).records:
            i = int(record.key.rsplit("_img", 1)[1].removesuffix(".png"))
            writer.writerow([record.key, "train" if i < TRAIN_PER_CLASS else "val" if i < 10 else "test"])
    return path


def test_two_cpu_processes_train_one_model(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", 16, size=40)
    split, seen, run = _split_file(data, tmp_path / "split.csv"), tmp_path / "seen", tmp_path / "run"
    seen.mkdir()
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
         str(data), str(run), str(split), str(seen), str(EPOCHS)],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert {json.loads(p.read_text())["rank"] for p in seen.glob("result-rank*.json")} == {0, 1}
    for epoch in range(EPOCHS):
        ranks = [json.loads((seen / f"rank{r}-epoch{epoch}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["world_size"] == 2 and ranks[0]["dataset"] == ranks[1]["dataset"]  # the same data
        everything = ranks[0]["dataset"]
        assert len(everything) == 2 * TRAIN_PER_CLASS == len(set(everything))
        seen_by = [r["seen"] for r in ranks]
        assert len(seen_by[0]) == len(seen_by[1]) == TRAIN_PER_CLASS  # an equal share each
        assert sorted(seen_by[0] + seen_by[1]) == sorted(everything)  # every image once, none twice
        # one decoded copy per machine, memory-mapped by both processes
        assert ranks[0]["cache"] == ranks[1]["cache"] and ranks[0]["cache"].endswith("train/images.npy")

    with (run / "metrics.csv").open() as fh:
        assert [int(row["epoch"]) for row in csv.DictReader(fh)] == list(range(1, EPOCHS + 1))  # rank 0's rows only
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 8
    assert not (run / ".cache").exists()
    predictor = Predictor(load_checkpoint(run / "best.ckpt"))
    assert predictor.meta.split["train"] and len(predictor.meta.split["train"]) == 2 * TRAIN_PER_CLASS
    files = sorted((data / "pneumonia").glob("*.png"))[:2]
    results = list(predictor.predict_files(files))
    assert len(results) == 2 and all(r.error is None and r.probabilities.shape == (2,) for r in results)
