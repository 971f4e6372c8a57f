"""`cadx models` prints a stored table: it must say what the registry says."""

from cadx.engine.architecture_table import REWRITE, build_table, read_table


def test_the_stored_architecture_table_is_the_registrys() -> None:
    assert read_table() == build_table(), f"the architecture table is stale: run `{REWRITE}`"
