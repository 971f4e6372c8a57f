"""What a result was measured on (every recorded figure states its hardware), and what this CPU can do. Reading
the CPU needs no torch (``cadx models`` lists which copies run here without loading it)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_kind() -> str:
    """The CPU's vector instruction set as torch's kernel dispatcher names it (``AVX512``, ``AVX2`` or ``DEFAULT``):
    an int8 copy verified on one kind is used only on the same kind. Decided as ATen's DispatchStub does (the
    ``ATEN_CPU_CAPABILITY`` override, else AVX512 with AVX512-VL/BW/DQ and FMA, AVX2 with AVX2 and FMA) from
    ``/proc/cpuinfo``; where that file is absent, torch is asked. ``tests/engine/test_hardware.py`` checks that the
    two agree on the machine the tests run on."""
    forced = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if forced in ("avx512", "avx2", "default"):
        return forced.upper()
    flags = cpu_flags()
    if not flags:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    if {"avx512vl", "avx512bw", "avx512dq", "fma"} <= flags:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "DEFAULT"


def native_bf16_cpu() -> bool:
    """A CPU with AVX512-BF16 or AMX, where bf16 runs natively (elsewhere oneDNN emulates it, slower than fp32)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic runs natively here: a GPU that supports it, or a CPU with AVX512-BF16 or AMX (on
    other CPUs oneDNN emulates bf16, slower than fp32)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return native_bf16_cpu()


def describe_hardware() -> dict[str, Any]:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "native_bf16_cpu": native_bf16(torch.device("cpu"))}
