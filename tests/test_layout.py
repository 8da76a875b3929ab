"""The layout: stages on top, libraries below, declared outputs defined once (pipeline/paths.py)."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import paths

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGES = ("pipeline", "graph_models", "feature_cache", "peer_models")
# imports that may stay inside a function: heavy or optional on purpose, each marked where it happens
DEFERRED = ("mlflow", "captum", "facenet_pytorch", "torch_geometric_temporal")
# ... and per module: the shared helpers the always-run `scan` stage imports must not import torch at load
DEFERRED_IN = {"pipeline.runtime": ("torch",)}
# the `scan` stage runs at every `dvc repro` / `dvc exp run` (always_changed): it must start in well under a second
SCAN_MUST_NOT_IMPORT = ("torch", "pandas", "sklearn", "mlflow", "torch_geometric", "h5py")


def _modules():
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            yield name.removesuffix(".__init__"), f


def _imports(f: Path) -> list[tuple[str, bool]]:
    """(module imported, at module level?) for every import in ``f`` (relative imports resolved)."""
    tree = ast.parse(f.read_text())
    pkg = ".".join(f.relative_to(ROOT).with_suffix("").parts[:-1])
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out += [(f"{base}.{a.name}" if base else a.name, id(node) in top) for a in node.names]
            out.append((base, id(node) in top))
    return out


def _outputs(stage: dict) -> set[str]:
    out = set()
    for key in ("outs", "metrics", "plots"):
        for item in stage.get(key, []):
            out.add(next(iter(item)) if isinstance(item, dict) else item)
    return out


def test_dvc_stages_are_the_stage_modules_in_pipeline_order():
    assert tuple(DVC) == paths.STAGES
    for name, stage in DVC.items():
        assert stage["cmd"] == f"python -m pipeline.stages.{name}"
        assert f"pipeline/stages/{name}.py" in stage["deps"]
        mod = importlib.import_module(f"pipeline.stages.{name}")
        assert callable(getattr(mod, "main", None)), f"pipeline.stages.{name} has no main()"
    on_disk = {f.stem for f in (ROOT / "pipeline/stages").glob("*.py")} - {"__init__"}
    assert on_disk == set(paths.STAGES), "every module in pipeline/stages is a dvc.yaml stage and vice versa"


@pytest.mark.parametrize("name", paths.STAGES)
def test_dvc_outputs_and_data_deps_agree_with_paths(name):
    stage = DVC[name]
    assert _outputs(stage) == {p.as_posix() for p in paths.STAGE_OUTPUTS[name]}
    data_deps = {d for d in stage["deps"] if not d.startswith(PACKAGES)}
    assert data_deps == {p.as_posix() for p in paths.STAGE_INPUTS[name]}


def test_every_code_dep_in_dvc_yaml_exists():
    for name, stage in DVC.items():
        for d in stage["deps"]:
            if d.startswith(PACKAGES):
                assert (ROOT / d).exists(), f"dvc.yaml stage {name}: dep {d} does not exist"


def test_params_yaml_keeps_the_declared_folders():
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert Path(p["demo"]["out_dir"]) == paths.DEMO_DIR
    assert Path(p["data"]["manifest"]) == paths.MANIFEST
    assert Path(p["crop"]["out_dir"]) == paths.CROPS


def test_no_stage_imports_a_stage_and_no_library_imports_a_stage():
    offenders = []
    for name, f in _modules():
        for mod, _ in _imports(f):
            if mod.startswith("pipeline.stages") and mod != "pipeline.stages":
                offenders.append(f"{name} imports {mod}")
    assert offenders == []


def test_imports_are_at_the_top_except_the_marked_deferred_ones():
    offenders = []
    for name, f in _modules():
        for mod, top in _imports(f):
            if not top and not mod.split(".")[0] in DEFERRED + DEFERRED_IN.get(name, ()) and mod != "":
                offenders.append(f"{name}: import of {mod} inside a function")
    assert offenders == []


def test_the_always_run_scan_stage_imports_no_heavy_library():
    code = (f"import sys; import pipeline.stages.scan; "
            f"print(' '.join(m for m in {SCAN_MUST_NOT_IMPORT!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [], f"pipeline.stages.scan imports {out.stdout.strip()}"


def test_the_old_flat_stage_modules_are_gone():
    for old in ("demo_data", "manifest", "crop", "train_encoder", "cache_features", "train_relation",
                "evaluate", "workspace", "training", "detect"):
        assert not (ROOT / "pipeline" / f"{old}.py").exists(), f"pipeline/{old}.py should have moved"
