"""The same numbers on any x86-64 CPU: the stages run the AVX2 kernels of every numeric library.

oneDNN (torch's convolutions), ATen (torch's own vectorised kernels), MKL (torch's matrix products) and
OpenBLAS (numpy's, scipy's) each pick their kernels from the CPU they find. Kernels of different vector widths
add in different orders, so the same code and data give different float results on different CPUs, and the
differences grow: measured on an AVX-512 Xeon, MTCNN's face boxes in the demo generator moved by float noise
with oneDNN limited to AVX2 or not, every demo video's bytes changed, and so did every stage after it.

:func:`pin_cpu_kernels` sets each library's documented switch to its AVX2 kernels (the widest that every
x86-64 CPU of the last ten years has) in the process environment, before numpy or torch is loaded:
``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=COMPATIBLE`` (MKL's conditional numerical
reproducibility: its SSE2 branch, the only one oneMKL's documentation promises on Intel and non-Intel CPUs
alike; ``MKL_CBWR=AVX2`` falls back to the CPU's own dispatch on AMD, measured below) and
``OPENBLAS_CORETYPE=Haswell``. :mod:`pipeline.stages` calls it first, so every stage and the
processes it starts inherit it. A variable the user set is kept; ``MRL_NATIVE_CPU=1`` sets none (the CPU's own
kernels: on an AVX-512 machine about 1.3-1.7x faster training steps, results that only that kind of CPU
repeats). Other architectures (arm64) and GPUs are left as they are. No numpy or torch import here.

Measured on an AMD EPYC (AVX-512) on 2026-12-03 with ``MKL_CBWR=AVX2`` (the pin before): ``data/demo`` hashed
differently from the run committed on an Intel Xeon, and so did everything after it. On a small demo (49 files)
``MKL_CBWR=AVX512`` wrote the same bytes as ``AVX2`` there (neither branch is taken on AMD: both are MKL's
automatic dispatch), ``COMPATIBLE`` changed 23 files (MKL runs MTCNN's dense layers), as did limiting oneDNN
further (SSE4.1, 20 files) or lifting every pin (22 files).
"""
from __future__ import annotations

import os
import platform
import sys
from typing import MutableMapping, Optional

__all__ = ["PINS", "pin_cpu_kernels", "kernel_signature"]

#: The environment variables and their values: AVX2 kernels, MKL's vendor-independent branch.
PINS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE",
        "OPENBLAS_CORETYPE": "Haswell"}


def pin_cpu_kernels(environ: Optional[MutableMapping[str, str]] = None, machine: Optional[str] = None) -> dict:
    """Set :data:`PINS` in ``environ`` (default ``os.environ``) where not set, on x86-64 and without
    ``MRL_NATIVE_CPU=1``; return the variables set now. In a process that has loaded numpy or torch already
    (a test, a notebook) nothing is set for this process (they would not see it, and processes it starts would
    run other kernels than it does)."""
    env = os.environ if environ is None else environ
    machine = (machine or platform.machine()).lower()
    if env.get("MRL_NATIVE_CPU", "").strip() not in ("", "0") or machine not in ("x86_64", "amd64"):
        return {}
    if environ is None and any(m in sys.modules for m in ("numpy", "torch")):
        return {}
    todo = {k: v for k, v in PINS.items() if k not in env}
    env.update(todo)
    return todo


def kernel_signature(environ: Optional[MutableMapping[str, str]] = None, machine: Optional[str] = None) -> str:
    """The kernels this process computes with, as one string: the machine's architecture and the value of each
    :data:`PINS` variable in ``environ`` (default ``os.environ``; ``-`` where unset, as with ``MRL_NATIVE_CPU=1``
    or in a process that loaded numpy first). The crop stage stores it in every crop file and reuses a file only
    under the same signature: crops that another pin computed differ in their boxes' last bits, and reusing them
    mixes two realizations in one output (measured on 2026-12-03: after the MKL pin changed, 282 of 780 crop
    files came from the old pin)."""
    env = os.environ if environ is None else environ
    machine = (machine or platform.machine()).lower()
    return ";".join([machine] + [f"{k}={env.get(k, '-')}" for k in sorted(PINS)])
