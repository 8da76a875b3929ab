"""The committed dvc.lock describes the committed code and params.

dvc.lock records the hash of every code file and folder a stage depends on, and the values of its params. When
code changes (even a docstring) without `dvc repro` re-recording the lock, a fresh clone's `dvc status` calls
the committed outputs stale and `dvc exp show` compares runs against a lock no commit's code produced. The first
test asks DVC itself (`dvc status`) about this repository; the second shows, in a temporary git + DVC repo, that
the check reports an edited code file and an edited param and ignores outputs that are merely absent (a fresh
clone has none)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from workspace import PROJECT_ROOT as ROOT, commit_all, run_dvc


def stale_lock_entries(root: Path) -> list[str]:
    """``stage: path (what)`` for every git-tracked dependency or param whose value differs from dvc.lock."""
    res = run_dvc(root, "status", "--json")
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.splitlines()

    def in_git(path: str) -> bool:
        return path in tracked or any(t.startswith(path.rstrip("/") + "/") for t in tracked)

    out = []
    for stage, changes in json.loads(res.stdout or "{}").items():
        for change in changes:
            if not isinstance(change, dict):
                continue                                  # "always changed" (stages with always_changed)
            for path, what in change.get("changed deps", {}).items():
                if isinstance(what, dict):                # a params file: {key: "modified" | "new" | "deleted"}
                    out += [f"{stage}: {path} {key} ({w})" for key, w in what.items()]
                elif what == "modified" and in_git(path):
                    out.append(f"{stage}: {path} (modified)")
    return out


def test_committed_lock_matches_the_code_and_params():
    stale = stale_lock_entries(ROOT)
    assert not stale, ("dvc.lock does not describe this checkout's code or params; run `dvc repro` and commit "
                       "dvc.lock with the outputs it rewrote:\n  " + "\n  ".join(stale))


def test_stale_code_and_params_are_reported_absent_outputs_are_not(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    run_dvc(repo, "init", "-q")
    (repo / "lib").mkdir()
    (repo / "lib" / "a.py").write_text("A = 1\n")
    (repo / "make.py").write_text("import pathlib\npathlib.Path('out.txt').write_text('x')\n")
    (repo / "params.yaml").write_text("rate: 0.5\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: python make.py\n    deps: [make.py, lib]\n    params: [rate]\n"
        "    outs: [out.txt]\n")
    run_dvc(repo, "repro", "-q")
    commit_all(repo, "run")
    assert stale_lock_entries(repo) == []

    (repo / "out.txt").unlink()                           # an absent output: what a fresh clone has
    run_dvc(repo, "gc", "-w", "-f", "-q")
    assert stale_lock_entries(repo) == []

    (repo / "lib" / "a.py").write_text("A = 1  # a comment changes the folder's hash\n")
    (repo / "params.yaml").write_text("rate: 0.6\n")
    assert sorted(stale_lock_entries(repo)) == ["make: lib (modified)", "make: params.yaml rate (modified)"]
