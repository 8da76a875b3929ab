"""The layout: stages on top, libraries below, declared outputs defined once (pipeline/paths.py)."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml

from pipeline import paths

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGES = ("pipeline", "graph_models", "feature_cache", "peer_models")
# imports that may stay inside a function: heavy or optional on purpose, each marked where it happens
DEFERRED = ("mlflow", "captum", "facenet_pytorch", "torch_geometric_temporal")
# ... and per module: the shared helpers the always-run `scan` stage imports must not import torch at load;
# the `mrl` command imports each command's code when that command runs (`mrl --help` in well under a second)
# the scoring metrics draw the ROC figure with matplotlib, which train_relation (a masking experiment's first stage)
# never does: its start-up must not pay for it
DEFERRED_IN = {"pipeline.runtime": ("torch",), "pipeline.cli": ("pipeline",), "pipeline.scoring.metrics": ("matplotlib",)}
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
    top = {id(n) for n in tree.body}  # module level, also inside a module-level `with` (a warnings filter)
    top |= {id(n) for w in tree.body if isinstance(w, ast.With) for n in w.body}
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
            allowed = DEFERRED + DEFERRED_IN.get(name, ())
            if not top and not any(mod == d or mod.startswith(d + ".") for d in allowed) and mod != "":
                offenders.append(f"{name}: import of {mod} inside a function")
    assert offenders == []


def test_the_relation_stage_does_not_import_matplotlib():
    code = "import sys; import pipeline.stages.train_relation; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_always_run_scan_stage_imports_no_heavy_library():
    code = (f"import sys; import pipeline.stages.scan; "
            f"print(' '.join(m for m in {SCAN_MUST_NOT_IMPORT!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [], f"pipeline.stages.scan imports {out.stdout.strip()}"


def test_the_mrl_command_imports_no_heavy_library_until_a_command_runs():
    code = ("import sys; from pipeline.cli import build_parser; build_parser(None).parse_args(['results']); "
            f"print(' '.join(m for m in {SCAN_MUST_NOT_IMPORT + ('pydantic',)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [], f"pipeline.cli imports {out.stdout.strip()}"


def test_the_old_flat_stage_modules_are_gone():
    for old in ("demo_data", "manifest", "crop", "train_encoder", "cache_features", "train_relation",
                "evaluate", "workspace", "training", "detect"):
        assert not (ROOT / "pipeline" / f"{old}.py").exists(), f"pipeline/{old}.py should have moved"


# --------------------------------------------------------------------------- floors and stage code deps
def _floors() -> list[tuple[int, str]]:
    """(floor, path prefix) from the ```floors block of docs/ARCHITECTURE.md (higher floor = higher up)."""
    text = (ROOT / "docs/ARCHITECTURE.md").read_text()
    block = text.split("```floors\n", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        if line.strip():
            floor, *prefixes = line.split()
            out += [(int(floor), p) for p in prefixes]
    return out


def _floor_of(rel: str, floors: list[tuple[int, str]]) -> int:
    hits = [(len(p), fl) for fl, p in floors if rel == p or rel.startswith(p.rstrip("/") + "/")]
    assert hits, f"{rel} is on no floor of docs/ARCHITECTURE.md"
    return max(hits)[1]


def _module_file(name: str) -> Optional[Path]:
    """The file of project module ``name`` (``a.b`` -> a/b.py or a/b/__init__.py), None if not ours."""
    if not name or name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f
    return None


def _project_imports(f: Path) -> set[Path]:
    """Files of the project modules ``f`` imports, function-local imports included: for ``from a import b``
    the module ``a.b`` when it is one, else ``a`` (its package runs either way: see :func:`_import_closure`)."""
    tree = ast.parse(f.read_text())
    parts = f.relative_to(ROOT).parts if f.is_relative_to(ROOT) else (f.name,)
    pkg = ".".join(parts[:-1])  # a package's __init__ is in the package; a module, in its folder's package
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")]
            names += subs if len(subs) == len(node.names) else subs + [base]
    out = {_module_file(n) for n in names}
    return {g for g in out if g is not None and g != f}


def _import_closure(f: Path) -> set[Path]:
    """Every project file that runs when ``f`` is imported: its imports, their packages' ``__init__``, and so on."""
    seen: set[Path] = set()
    todo = [f]
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        nxt = set(_project_imports(cur))
        for g in list(nxt) + [cur]:  # importing a.b.c runs a/__init__ and a/b/__init__
            parts = g.relative_to(ROOT).parts
            for k in range(1, len(parts)):
                init = ROOT.joinpath(*parts[:k], "__init__.py")
                if init.exists():
                    nxt.add(init)
        todo += [g for g in nxt if g not in seen]
    return seen


def _only_hands_names_on(f: Path) -> bool:
    """A package ``__init__`` made of a docstring, imports and ``__all__`` only (no code of its own)."""
    if f.name != "__init__.py":
        return False
    for node in ast.parse(f.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            continue
        return False
    return True


def _violations(f: Path, rel: str, floors: list[tuple[int, str]]) -> list[str]:
    """Imports of ``f`` (on the floor of path ``rel``) from a higher floor."""
    bad = []
    mine = _floor_of(rel, floors)
    for target in sorted(_project_imports(f)):
        if _only_hands_names_on(target) and target.parent in (ROOT / rel).parents:
            continue  # a module importing its own package's re-exports
        theirs = _floor_of(target.relative_to(ROOT).as_posix(), floors)
        if theirs > mine:
            bad.append(f"{rel} (floor {mine}) imports {target.relative_to(ROOT).as_posix()} (floor {theirs})")
    return bad


def _import_violations() -> list[str]:
    floors = _floors()
    return [v for _, f in _modules() for v in _violations(f, f.relative_to(ROOT).as_posix(), floors)]


def test_every_module_is_on_a_floor_and_imports_point_down():
    assert _import_violations() == []


def test_the_floor_check_sees_an_upward_import(tmp_path):
    """The check itself: a function-local import of a higher floor is caught, one of a lower floor is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from pipeline.runtime import atomic_write\n\n\ndef f():\n"
                     "    from pipeline.scoring import metrics\n    return metrics, atomic_write\n")
    assert _violations(probe, "pipeline/ingest/probe.py", _floors()) == [
        "pipeline/ingest/probe.py (floor 2) imports pipeline/scoring/metrics.py (floor 4)"]
    assert _violations(probe, "pipeline/learning/probe.py", _floors()) == []


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if d.startswith(PACKAGES)]


def _stage_code(name: str) -> set[Path]:
    """The project files stage ``name``'s command runs: the import closure of its module, less the package
    ``__init__`` files that only hand names on."""
    return {f for f in _import_closure(ROOT / f"pipeline/stages/{name}.py") if not _only_hands_names_on(f)}


def _covers(dep: str, f: Path) -> bool:
    rel = f.relative_to(ROOT).as_posix()
    return rel == dep or rel.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("name", paths.STAGES)
def test_stage_deps_cover_every_module_the_stage_imports(name):
    deps = _code_deps(DVC[name])
    missing = sorted(f.relative_to(ROOT).as_posix() for f in _stage_code(name)
                     if not any(_covers(d, f) for d in deps))
    assert missing == [], f"dvc.yaml stage {name}: deps miss modules its command imports: {missing}"


@pytest.mark.parametrize("name", paths.STAGES)
def test_stage_code_deps_are_all_imported(name):
    """No code dep the stage does not run (it would re-run the stage for nothing)."""
    code = _stage_code(name)
    unused = [d for d in _code_deps(DVC[name]) if not any(_covers(d, f) for f in code)]
    assert unused == [], f"dvc.yaml stage {name}: code deps the stage never imports: {unused}"


def test_the_closure_follows_function_local_imports_and_packages():
    code = _stage_code("evaluate")
    rel = {f.relative_to(ROOT).as_posix() for f in code}
    # evaluate -> scoring.evaluation -> model_io -> graph_models (package) -> graph_models/mrl.py ...
    assert {"pipeline/stages/evaluate.py", "graph_models/mrl.py", "graph_models/masking.py",
            "pipeline/params.py"} <= rel
    # a package __init__ that only hands names on is left out; graph_models' also silences PyG's import warning,
    # so it is code the stage runs and is in (feature_cache's only hands names on)
    assert "graph_models/__init__.py" in rel and "feature_cache/__init__.py" not in rel


def test_no_library_function_takes_the_whole_params():
    """Each library gets the sections it needs (pipeline/params.py's promise); the stages hand them on."""
    offenders = []
    for name, f in _modules():
        if name.startswith("pipeline.stages"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for a in node.args.args + node.args.kwonlyargs:
                    if a.annotation is not None and ast.unparse(a.annotation).strip("'\"") == "Params":
                        offenders.append(f"{name}.{node.name}({a.arg}: Params)")
    assert offenders == []
