"""The architecture table ``cadx models`` prints, kept as JSON beside this module so that listing needs no torch.

The registry (:mod:`cadx.models`) is the one definition; this table is what it says, written by
``python -m cadx.engine.architecture_table`` and checked against it by ``tests/engine/test_architecture_table.py``
(a model added, renamed or changed without rewriting the table fails that test, with this command in its message).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("architecture_table.json")
REWRITE = "python -m cadx.engine.architecture_table"


@dataclass(frozen=True)
class ArchitectureRow:
    name: str
    parameters: int  # at the default input channels, 2 classes
    default_input_size: int
    default_in_channels: int
    description: str


def read_table() -> list[ArchitectureRow]:
    return [ArchitectureRow(**row) for row in json.loads(TABLE.read_text())]


def build_table() -> list[ArchitectureRow]:
    """From the registry (imports torch and every model family)."""
    from cadx.models import list_models, parameter_count

    return [ArchitectureRow(info.name, parameter_count(info.name), info.default_input_size, info.default_in_channels,
                            info.description) for info in list_models()]


if __name__ == "__main__":
    TABLE.write_text(json.dumps([asdict(row) for row in build_table()], indent=1) + "\n")
    print(f"wrote {TABLE}")
