"""pipeline/cpu_kernels.py: every stage process runs the AVX2 kernels of oneDNN, ATen and OpenBLAS and MKL's
COMPATIBLE branch on x86-64 (the same floats on any such CPU), unless the user set a variable or MRL_NATIVE_CPU=1.
Real processes: a stage package import in a fresh interpreter, then torch's own report of the kernels it dispatches
to."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cpu_kernels import PINS, kernel_signature, pin_cpu_kernels

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import json, os, pipeline.stages, torch\n"
         "print(json.dumps({'env': {k: os.environ.get(k) for k in %r}, "
         "'aten': torch.backends.cpu.get_cpu_capability()}))" % sorted(PINS))


def _probe(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in PINS and k != "MRL_NATIVE_CPU"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_pins_only_what_is_unset_on_x86_64_and_nothing_elsewhere_or_when_told(monkeypatch):
    assert PINS["MKL_CBWR"] == "COMPATIBLE"       # MKL's one branch documented alike on Intel and AMD CPUs
    env = {"MKL_CBWR": "AVX2"}
    assert pin_cpu_kernels(env, "x86_64") == {k: v for k, v in PINS.items() if k != "MKL_CBWR"}
    assert env == {**PINS, "MKL_CBWR": "AVX2"}                        # the user's choice is kept
    assert pin_cpu_kernels({}, "aarch64") == {} and pin_cpu_kernels({}, "arm64") == {}
    assert pin_cpu_kernels({"MRL_NATIVE_CPU": "1"}, "x86_64") == {}
    assert pin_cpu_kernels({"MRL_NATIVE_CPU": "0"}, "AMD64") == PINS
    import numpy  # noqa: F401  (loaded: this process would not see the variables)

    for k in PINS:
        monkeypatch.delenv(k, raising=False)
    assert pin_cpu_kernels(machine="x86_64") == {} and not any(k in os.environ for k in PINS)


def test_kernel_signature_names_the_machine_and_each_pin():
    env = dict(PINS)
    assert kernel_signature(env, "X86_64") == ("x86_64;ATEN_CPU_CAPABILITY=avx2;MKL_CBWR=COMPATIBLE;"
                                               "ONEDNN_MAX_CPU_ISA=AVX2;OPENBLAS_CORETYPE=Haswell")
    assert kernel_signature({}, "aarch64") == ("aarch64;ATEN_CPU_CAPABILITY=-;MKL_CBWR=-;ONEDNN_MAX_CPU_ISA=-;"
                                               "OPENBLAS_CORETYPE=-")
    assert kernel_signature({**env, "MKL_CBWR": "AUTO"}, "x86_64") != kernel_signature(env, "x86_64")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86-64 CPUs")
def test_a_stage_process_dispatches_to_avx2_kernels_unless_told_otherwise():
    pinned = _probe()
    assert pinned["env"] == PINS
    assert pinned["aten"] in ("AVX2", "DEFAULT")                       # never AVX512, whatever this CPU has
    native = _probe(MRL_NATIVE_CPU="1")
    assert native["env"] == {k: None for k in PINS}
    mine = _probe(ATEN_CPU_CAPABILITY="default")
    assert mine["aten"] == "DEFAULT" and mine["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86-64 CPUs")
def test_mrl_detect_and_serve_score_with_the_stages_kernels_and_the_other_commands_pin_nothing():
    probe = ("import json, os, sys\nfrom pipeline import cli\ntry:\n    cli.main(sys.argv[1:])\n"
             "except SystemExit:\n    pass\nprint(json.dumps({k: os.environ.get(k) for k in %r}))" % sorted(PINS))
    base = {k: v for k, v in os.environ.items() if k not in PINS and k != "MRL_NATIVE_CPU"}

    def env_after(*argv: str, **extra: str) -> dict:
        out = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True, text=True,
                             env={**base, "PYTHONPATH": str(ROOT), **extra}, check=True, timeout=300).stdout
        return json.loads(out.strip().splitlines()[-1])

    assert env_after("serve", "--help") == PINS
    assert env_after("detect", "--help") == PINS                        # torch is imported after the pins
    assert env_after("results", "--help") == {k: None for k in PINS}    # nothing numeric: nothing set
    assert env_after("detect", "--help", MRL_NATIVE_CPU="1") == {k: None for k in PINS}
