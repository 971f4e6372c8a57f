"""The CPU kind that int8 copies are verified for is torch's, read without torch."""

import pytest
import torch

from cadx.engine import hardware


def test_cpu_kind_is_what_torch_reports_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert hardware.cpu_kind() == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize(("flags", "kind"), [
    ({"avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq"}, "AVX512"),
    ({"avx2", "fma", "avx512f"}, "AVX2"),  # AVX-512 foundation alone is not torch's AVX512 kernels
    ({"avx2"}, "DEFAULT"),  # AVX2 without FMA
    ({"sse4_2"}, "DEFAULT"),
])
def test_cpu_kind_from_the_flags(monkeypatch: pytest.MonkeyPatch, flags: set[str], kind: str) -> None:
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert hardware.cpu_kind() == kind


def test_cpu_kind_follows_torchs_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512vl", "avx512bw", "avx512dq"}))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert hardware.cpu_kind() == "AVX2"
