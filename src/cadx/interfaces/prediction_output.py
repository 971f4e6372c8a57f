"""Where ``cadx predict`` writes its rows: CSV and JSON Lines as they come (a crash loses at most the row being
written, and ``--resume`` skips every file already there), or one JSON array at the end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Any

STREAMED = (".csv", ".jsonl")
SUFFIXES = (*STREAMED, ".json")


def fields(classes: list[str]) -> list[str]:
    return ["file", "prediction", "probability", "threshold", "operating_point", "assessed", "reason", "uncertain",
            "uncertain_reason", *[f"p_{c}" for c in classes], "error", "backend"]


def check_output(output: Path, resume: bool) -> None:
    """Refuse an output we could not write or resume, before any image is read."""
    if output.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{output}: write results to a .csv, .jsonl or .json file")
    if resume and output.suffix.lower() == ".json":
        raise ValueError(f"{output}: --resume needs a .csv or .jsonl output (a JSON array is written only at the "
                         "end, so an interrupted run leaves nothing to resume from)")


def _complete_lines(path: Path) -> bytes:
    """The file up to its last newline: a row cut off by a crash is dropped and done again."""
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1]


def _drop_cut_off_row(path: Path, chunk: int = 1 << 16) -> None:
    """Truncate ``path`` in place after its last newline, reading only its end (the rows before it are kept)."""
    with path.open("r+b") as fh:
        end = fh.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            newline = fh.read(end - start).rfind(b"\n")
            if newline >= 0:
                fh.truncate(start + newline + 1)
                return
            end = start
        fh.truncate(0)


def already_done(output: Path, classes: list[str]) -> set[str]:
    """The files an earlier run of the same model wrote to ``output`` (empty when there is no such file); an output
    written for other classes is refused rather than mixed."""
    if not output.is_file():
        return set()
    text = _complete_lines(output).decode("utf-8", errors="replace")
    if output.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is not None and list(reader.fieldnames) != fields(classes):
            raise ValueError(f"{output} was written for other classes or by another version of cadx (columns "
                             f"{', '.join(reader.fieldnames)}); give a new --output to start afresh")
        return {row["file"] for row in reader}
    done = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{output}: line {number} is not JSON; give a new --output to start afresh") from None
        missing = [f for f in fields(classes) if f not in row]
        if missing:
            raise ValueError(f"{output} was written for other classes (line {number} has no {', '.join(missing)}); "
                             "give a new --output to start afresh")
        done.add(row["file"])
    return done


class PredictionWriter:
    """Rows to ``output``: appended and flushed one by one for CSV/JSONL (after the rows kept by ``resume``), kept
    and written at ``close`` for JSON."""

    def __init__(self, output: Path, classes: list[str], *, resume: bool = False) -> None:
        self.output, self.fields = output, fields(classes)
        self.kind = output.suffix.lower()
        self.rows: list[dict[str, Any]] = []
        output.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = None
        if self.kind in STREAMED:
            keep = resume and output.is_file()
            if keep:
                _drop_cut_off_row(output)
            self._fh = output.open("a" if keep else "w", newline="", encoding="utf-8")
            if self.kind == ".csv":
                self._csv = csv.DictWriter(self._fh, fieldnames=self.fields, extrasaction="ignore")
                if not keep or output.stat().st_size == 0:
                    self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self._fh is None:
            self.rows.append(row)
            return
        if self.kind == ".csv":
            self._csv.writerow(row)
        else:
            self._fh.write(json.dumps({k: row.get(k) for k in self.fields}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        elif self.kind == ".json":
            self.output.write_text(json.dumps(self.rows, indent=2))
