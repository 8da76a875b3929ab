"""DVC must not hash Python bytecode caches inside the code folders that stages depend on.

Regression: `graph_models/__pycache__` was part of the hash of the `graph_models` dependency, so a fresh
clone (no caches yet) saw train_encoder and train_relation as changed, and every queued experiment
re-trained the encoder."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]


def test_bytecode_caches_are_ignored_by_dvc(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    Repo.init(str(tmp_path))
    pyc = tmp_path / "graph_models" / "__pycache__" / "mrl.cpython-311.pyc"
    pyc.parent.mkdir(parents=True)
    pyc.write_bytes(b"\x00")
    (tmp_path / "graph_models" / "mrl.py").write_text("x = 1\n")
    repo = Repo(str(tmp_path))
    ignore = repo.dvcignore
    assert ignore.is_ignored_file(str(pyc))
    assert ignore.is_ignored_dir(str(pyc.parent))
    assert not ignore.is_ignored_file(str(tmp_path / "graph_models" / "mrl.py"))
