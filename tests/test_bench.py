"""Every bench/ script runs offline on CPU at tiny sizes (media generated in the scripts), so CI keeps them
working; the figures themselves are not checked here (bench/README.md holds the measured ones)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHON": sys.executable}
    out = subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_crop_speed_tiny_compares_worker_settings_and_their_crops():
    out = _run(sys.executable, "bench/crop_speed.py", "--tiny", "--threads", "1")
    assert "DETECTOR 16 frames" in out
    assert "STAGE num_workers=1 (1 process)" in out and "STAGE num_workers=2 (2 processes)" in out
    assert "crops identical" in out


def test_crop_reader_tiny_generates_its_crops():
    out = _run(sys.executable, "bench/crop_reader.py", "--tiny")
    assert "8 windows of 4 videos" in out and "per-frame chunks" in out


def test_encoder_speed_demo_size():
    out = _run(sys.executable, "bench/encoder_speed.py", "--skip-paper", "--batch", "1", "--iters", "1")
    assert "demo  small3d" in out and "clips/s" in out


def test_encoder_speed_compare_prints_seconds_per_epoch_for_each_backbone_and_size():
    out = _run(sys.executable, "bench/encoder_speed.py", "--compare", "--models", "small3d,mobilenet_v2:11",
               "--sizes", "32", "--batch", "1", "--iters", "1", "--repeats", "1", "--threads", "1",
               "--train-windows", "3", "--val-windows", "2", "--epochs", "2")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("small3d ", "mobilenet_v2:11 "))}
    assert set(rows) == {"small3d", "mobilenet_v2:11"}
    for cells in rows.values():
        train, train_cpu, val, val_cpu, epoch, epoch_cpu, minutes = map(float, cells[2:9])
        assert cells[1] == "32" and epoch == pytest.approx(3 * train + 2 * val, abs=0.06)
        assert epoch_cpu == pytest.approx(3 * train_cpu + 2 * val_cpu, abs=0.06)
        assert minutes == pytest.approx(2 * epoch_cpu / 60, abs=0.06)


def test_epoch_speed_tiny_every_part():
    out = _run(sys.executable, "bench/epoch_speed.py", "--tiny", "--workers", "0,2")
    for part in ("read workers=0 new loader/epoch", "read workers=2 persistent", "to_input", "compute",
                 "validate", "epoch train_encoder workers=2"):
        assert part in out, part


def test_relation_cell_tiny():
    from graph_models.gconv_gru import tgt_available

    if not tgt_available():
        pytest.skip("torch_geometric_temporal is not importable")
    out = _run(sys.executable, "bench/relation_cell.py", "--batch", "2", "--in", "16", "--hidden", "8",
               "--repeats", "1")
    assert "-> OK" in out and "ratio tgt / dense" in out


@pytest.mark.slow
def test_gpu_check_cpu_smoke_writes_one_table(tmp_path):
    table = tmp_path / "check.md"
    _run("bash", "bench/gpu_check.sh", "--cpu", "--out", str(table), timeout=1800)   # a hang guard: slow under load
    lines = table.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| script")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["encoder_speed", "crop_speed", "epoch_speed", "relation_cell"]
    assert all(r.split(" | ")[2] == "0" for r in rows), rows   # every script exited 0
    assert "clips/s" in rows[0] and "STAGE" in rows[1] and "windows/s" in rows[2]


@pytest.mark.slow
def test_mask_experiment_tiny():
    out = _run(sys.executable, "bench/mask_experiment.py", "--tiny", timeout=1800)   # a hang guard, not a target
    assert "dvc exp run -S mask.rate=0.6" in out and "ratio" in out
    full = out.split("dvc repro ", 1)[1].split("dvc exp run", 1)[0]          # the full repro, stage by stage
    assert all(f"  {stage} " in full for stage in ("crop", "train_encoder", "cache_features", "evaluate"))
    assert "interpreter teardown" in out and "floor with no work and no MLflow" in out and "at most" in out


def test_cli_startup_times_each_help_and_names_the_heavy_imports():
    out = _run(sys.executable, "bench/cli_startup.py", "--repeats", "1", timeout=900)  # detect: torch under load
    lines = {ln.split(" median")[0].strip(): ln for ln in out.splitlines() if ln.startswith("mrl ")}
    assert set(lines) == {"mrl --help", "mrl results --help", "mrl compare --help", "mrl detect --help"}
    assert lines["mrl --help"].endswith("heavy imports: none") and "torch" in lines["mrl detect --help"]
