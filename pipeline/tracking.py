"""MLflow tracking shared by the stages.

Every DVC experiment is one MLflow **parent run** (named after the experiment) holding all its params and
its final test metrics; each training and evaluation stage opens one **child run** under it (the
``mlflow.parentRunId`` tag), named after the stage (``train_encoder``, ``train_relation``, ``evaluate``).
Stages are separate processes, so the parent is found by a tag, ``mrl.experiment_key``, or created by the
first stage that runs:

- inside ``dvc exp run`` (DVC sets DVC_EXP_NAME / DVC_EXP_BASELINE_REV): key ``<name>@<baseline rev>``,
  the parent is named after the DVC experiment;
- under a plain ``dvc repro`` or ``python -m pipeline.stages.X``: key ``repro@<git rev>:<params hash>``,
  name ``repro-<rev7>-<hash6>`` (the same commit and params give the same parent).

Every stage reads the whole params.yaml, so the parent gets all params even when a stage is reused
(a queued ``-S mask.rate`` experiment re-runs only train_relation and evaluate); ``evaluate`` logs the
test metrics to the parent too. The parent's ``run.<stage>`` tags name the run that produced each stage's
output (for a reused stage the one recorded in ``runs/<stage>/mlflow_run.json``, i.e. the baseline's), and
only ever a run that is in this store.

**The store follows the workspace, whatever DVC skipped** (:func:`sync_workspace`, run by the always-run
``track`` stage at the end of every ``dvc repro`` / ``dvc exp run``): DVC skips a stage whose inputs hash as
committed, so a fresh clone's store would lack the runs of the skipped stages, and the run ids recorded in
git (``runs/<stage>/mlflow_run.json``) name runs of another machine's store. The sync gives the parent the
test metrics and intervals of every ``metrics/*.json`` (``test_*`` from evaluate, ``<name>.test_*`` from the
others, e.g. ``baseline.test_auc``), and for each tracked stage whose run is not in this store it creates
the stage's child run from the committed outputs (metrics, per-epoch history, report files), tagged
``mrl.restored_from = committed outputs`` (no model: the model files are DVC's). It also sets the
experiment's shared view (``mlflow.sharedViewState.mrl``, opened by :func:`ui_url`'s link) whose columns
are the test AUC with its interval, the baseline's and the params that differ between the experiments.

The store: MLFLOW_TRACKING_URI, else params ``mlflow.tracking_uri``, else a sqlite file at the project root
(queued DVC experiments run in a copy under ``.dvc/tmp/exps/``; the root is the path above it). A sqlite
database is created or upgraded once, under a file lock (``mlflow.db.lock``), before any run: two stages
starting at once on a new database otherwise race in alembic's migrations. The experiment is tagged
``mlflow.experimentKind = custom_model_development`` so that the UI opens it on its runs, not on the GenAI
overview. A stage killed with SIGKILL cannot end its run: every run carries ``mrl.host``/``mrl.pid``, and
the next stage that starts marks RUNNING runs of a dead process on this host KILLED.

DVC's run cache would skip a stage whose deps and params were seen before, and the stage would then
log nothing. The tracked stages therefore declare a ``persist: true`` output (``runs/<stage>/mlflow_run.json``),
which DVC excludes from the run cache: each experiment really runs and really logs.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from filelock import FileLock

from pipeline import paths
from pipeline.params import flatten
from pipeline.runtime import write_json

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

__all__ = ["project_root", "tracking_uri", "start_run", "git_revision", "log_epoch_metrics", "log_final",
           "log_evaluation", "experiment_identity", "prepare_store", "sync_workspace", "workspace_metrics",
           "EXPERIMENT_KIND", "KEY_TAG", "RESTORED_TAG", "VIEW_KEY"]

# MLflow is imported inside the functions on purpose (deferred heavy import): importing it costs seconds,
# and the libraries and `mrl detect` import this module without tracking anything.

EXPERIMENT_KIND = "custom_model_development"  # MLflow 3 UI: a model-training experiment (runs page)
KEY_TAG = "mrl.experiment_key"
ROLE_TAG = "mrl.role"  # "experiment" (parent) or "stage" (child)
TRACKED_STAGES = ("train_encoder", "train_relation", "evaluate")
# the parent's headline metrics (copied from evaluate's test_* metrics)
PARENT_TEST_KEYS = ("auc", "auc_ci_low", "auc_ci_high", "acc", "eer", "ap", "n")
RESTORED_TAG = "mrl.restored_from"  # on a stage run made from the committed outputs (the stage did not run here)
RESTORED_FROM = "committed outputs"
VIEW_KEY = "mrl"  # the experiment's shared view: tag mlflow.sharedViewState.mrl, URL ?viewStateShareKey=mrl
VIEW_METRICS = ("test_auc", "test_auc_ci_low", "test_auc_ci_high", "baseline.test_auc")
VIEW_MAX_PARAMS = 8


def project_root(cwd: Optional[Path] = None) -> Path:
    """The repository whose MLflow store to use: the parent repository of a ``dvc exp`` temporary copy
    (``.dvc/tmp/exps/...``), else the project folder ``cwd`` is in (:func:`pipeline.paths.find_project_root`,
    so ``mrl`` finds it from a subdirectory), else ``cwd``."""
    cwd = Path(cwd or os.getcwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i] == ".dvc" and parts[i + 1] == "tmp" and parts[i + 2] == "exps":
            return Path(*parts[:i])
    return paths.find_project_root(cwd) or cwd


def tracking_uri(configured: Optional[str] = None) -> str:
    """MLFLOW_TRACKING_URI wins, then params ``mlflow.tracking_uri``, then sqlite at the project root."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def git_revision(cwd: Optional[Path] = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def params_hash(params: Any) -> str:
    """SHA-256 of the flattened params, the ``mlflow`` section left out (where runs go is not an identity)."""
    flat = {k: v for k, v in flatten(params).items() if not k.startswith("mlflow.")}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()


def experiment_identity(params: Any, git_rev: Optional[str] = None) -> tuple[str, str]:
    """(key, display name) of the experiment a stage belongs to (see the module docstring)."""
    name = os.environ.get("DVC_EXP_NAME", "")
    if name:
        return f"{name}@{os.environ.get('DVC_EXP_BASELINE_REV', '')[:12]}", name
    rev, h = (git_rev or git_revision())[:12], params_hash(params)
    return f"repro@{rev}:{h}", f"repro-{rev[:7]}-{h[:6]}"


def prepare_store(uri: str) -> None:
    """Create or upgrade a sqlite tracking database once, under a file lock (``<db>.lock``); the store
    built here is cached by MLflow for the rest of the process. Other stores are left to their server."""
    if not uri.startswith("sqlite:///"):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.store.db import utils as db_utils
    from mlflow.tracking import MlflowClient

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=600):
        try:
            MlflowClient(uri)._tracking_client.store  # creates the tables of a new database
        except MlflowException as e:  # an older MLflow's database: upgrade it (mlflow db upgrade)
            if "out-of-date database schema" not in str(e):
                raise
            engine = db_utils.create_sqlalchemy_engine(uri)
            try:
                db_utils._upgrade_db(engine)
            finally:
                engine.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_dead_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs started on this host by a process that no longer exists (a stage killed
    with SIGKILL, or the parent it had opened); returns their ids."""
    host = socket.gethostname().replace("'", "")
    runs = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`mrl.host` = '{host}'",
                              max_results=1000)
    dead = [r.info.run_id for r in runs if r.data.tags.get("mrl.pid", "").isdigit()
            and not _alive(int(r.data.tags["mrl.pid"]))]
    for run_id in dead:
        client.set_terminated(run_id, "KILLED")
    return dead


def _experiment_id(client: Any, name: str) -> str:
    """The MLflow experiment ``name`` (created with its artifact root at the project root), tagged as a
    model-training experiment."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        exp_id = client.create_experiment(name, artifact_location=(project_root() / "mlruns").as_uri(),
                                          tags={"mlflow.experimentKind": EXPERIMENT_KIND})
    else:
        exp_id = exp.experiment_id
        if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
            client.set_experiment_tag(exp_id, "mlflow.experimentKind", EXPERIMENT_KIND)
    return exp_id


def _log_params(client: Any, run_id: str, params: Any) -> None:
    from mlflow.entities import Param

    items = [Param(k, "" if v is None else str(v)) for k, v in flatten(params).items()]
    for i in range(0, len(items), 90):  # MLflow caps a batch at 100 params
        client.log_batch(run_id, params=items[i:i + 90])


def _in_store(client: Any, run_id: Optional[str]) -> bool:
    """``run_id`` names a live (not deleted) run of this store."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return False
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def recorded_run(stage: str) -> Optional[str]:
    """The run id in ``runs/<stage>/mlflow_run.json`` (None when absent or unreadable): the run that made
    the stage's outputs, on the machine that made them."""
    try:
        return str(json.loads(paths.run_record(stage).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _parent_run(client: Any, experiment_id: str, key: str, name: str, params: Any, tags: dict) -> str:
    """The id of the experiment's parent run: found by its key tag, else created with all params and a
    ``run.<stage>`` tag for each stage output already recorded by a run of this store (the runs a reused
    stage comes from; a record naming a run of another machine's store is left to :func:`sync_workspace`)."""
    found = client.search_runs([experiment_id], f"tags.`{KEY_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'experiment'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={**tags, KEY_TAG: key, ROLE_TAG: "experiment"})
    _log_params(client, run.info.run_id, params)
    for stage in TRACKED_STAGES:  # in a queued experiment's copy these are the baseline's records
        record = recorded_run(stage)
        if _in_store(client, record):
            client.set_tag(run.info.run_id, f"run.{stage}", record)
    return run.info.run_id


def _open_experiment(params: Any, mlflow_params: Any) -> tuple[Any, str, str, str, dict]:
    """(client, experiment id, parent run id, experiment key, run tags) of the current experiment, with the
    store prepared, the tracking URI set and the RUNNING runs of dead processes closed."""
    import mlflow  # deferred: see the note at the top
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(getattr(mlflow_params, "tracking_uri", None))
    prepare_store(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    rev = git_revision()
    key, exp_label = experiment_identity(params, rev)
    tags = {
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", "") or "workspace",
        "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "git_rev": rev,
        "mrl.host": socket.gethostname(),
        "mrl.pid": str(os.getpid()),
    }
    name = getattr(mlflow_params, "experiment", None) or "mrl"
    lock_file = project_root() / "mlruns" / ".experiments.lock"  # experiments of a parallel queue
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file), timeout=600):
        exp_id = _experiment_id(client, name)
        close_dead_runs(client, exp_id)
        parent = _parent_run(client, exp_id, key, exp_label, params, tags)
    return client, exp_id, parent, key, tags


@contextlib.contextmanager
def start_run(stage: str, params: Any, mlflow_params: Any = None, extra_tags: Optional[dict] = None) -> Iterator[Any]:
    """Open the MLflow child run of ``stage`` under its experiment's parent run (found or created), with all
    params flattened and the DVC/git tags set; the parent is RUNNING meanwhile, FINISHED or FAILED after."""
    import mlflow  # deferred: see the note at the top

    client, exp_id, parent, key, tags = _open_experiment(params, mlflow_params)
    client.update_run(parent, status="RUNNING")
    client.set_tag(parent, "mrl.pid", str(os.getpid()))
    child_tags = {**tags, "stage": stage, KEY_TAG: key, ROLE_TAG: "stage", "mlflow.parentRunId": parent,
                  **(extra_tags or {})}
    try:
        with mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=child_tags) as run:
            _log_params(client, run.info.run_id, params)
            yield run
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_tag(parent, f"run.{stage}", run.info.run_id)
    client.set_terminated(parent, "FINISHED")


def log_to_parent(metrics: dict) -> None:
    """``metrics`` into the active run's parent (the experiment's run), so that its row shows them."""
    import mlflow  # deferred: see the note at the top
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    run = mlflow.active_run()
    parent = run.data.tags.get("mlflow.parentRunId") if run else None
    if parent and metrics:
        now = int(time.time() * 1000)
        MlflowClient().log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def model_requirements() -> list[str]:
    """The pip requirements of a logged model (the pickle needs torch, PyG and this project's classes):
    the installed versions, as MLflow would infer them."""
    out = []
    for dist in ("torch", "torch-geometric", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{dist}=={version(dist)}")
    return out


class _DropPickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")


@contextlib.contextmanager
def _quiet_pickle_warning() -> Iterator[None]:
    """Without MLflow's warning that a pickled model runs code when loaded, printed at every logged model.
    The pickle is chosen on purpose: MLflow's alternative (``pt2``, torch.export) needs an input example,
    costs ~26 s a model and fixes the input shapes (a model exported with T=3 fails on T=5). The risk is
    handled where the model is loaded: ``mrl detect --mlflow-run`` refuses it without ``--trust-pickle``
    (README, "Tracking"); the pipeline's own model files load with ``torch.load(weights_only=True)``."""
    log = logging.getLogger("mlflow.pytorch")
    drop = _DropPickleWarning()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def log_epoch_metrics(metrics: dict, epoch: int) -> None:
    """Per-epoch metrics of a training loop (NaN values left out) into the active run."""
    import mlflow  # deferred: see the note at the top

    mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}, step=epoch)


def log_final(run: Any, summary: dict, *, artifacts: Iterable[Path] = (), model: Any = None,
              run_dir: Optional[Path] = None, metrics: Optional[dict] = None) -> None:
    """End of a training stage: ``best_val_*`` metrics of ``summary``, extra ``metrics``, the artifact files,
    the model (MLflow's pickle format, with :func:`model_requirements`; torch.export would fix the input
    shapes) and the run id in
    ``run_dir/mlflow_run.json``; ``<stage>.best_val_auc``/``best_val_loss`` also into the parent run."""
    import mlflow  # deferred: see the note at the top
    import mlflow.pytorch

    mlflow.log_metrics({f"best_{k}": v for k, v in summary.items()
                        if isinstance(v, float) and k.startswith("val_") and v == v})
    if metrics:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and v == v})
    stage = mlflow.active_run().data.tags.get("stage", "stage")
    log_to_parent({f"{stage}.best_{k}": v for k, v in summary.items()
                   if isinstance(v, float) and k in ("val_auc", "val_loss") and v == v})
    for f in artifacts:
        mlflow.log_artifact(str(f))
    if model is not None:  # requirements given: MLflow's inference of them costs ~4 s (a subprocess)
        with _quiet_pickle_warning():
            mlflow.pytorch.log_model(model.cpu(), name="model", serialization_format="pickle",
                                     pip_requirements=model_requirements())
    if run_dir is not None:
        write_json({"run_id": run.info.run_id}, Path(run_dir) / "mlflow_run.json")  # = paths.run_record


def evaluation_metrics(result: dict) -> dict:
    """The evaluate stage's MLflow metrics: ``test_*``, per dataset/method AUC (with its interval)/ACC/EER/AP, localisation, and
    the paired differences to the baseline and the peer (``vs_baseline.diff``, ``.ci_low``, ``.ci_high``,
    ``.p_above``; ``vs_peer.*``)."""
    out = {f"test_{k}": float(v) for k, v in result["test"].items() if isinstance(v, (int, float)) and v is not None}
    for group in ("per_dataset", "per_method"):
        for name, m in result[group].items():
            out.update({f"{group}.{name}.{k}".replace(" ", "_"): v for k, v in _test_numbers(m).items()
                        if k in ("auc", "auc_ci_low", "auc_ci_high", "acc", "eer", "ap")})
    loc = result["localisation"]
    out.update({f"localisation_{k}": float(v) for k, v in loc.items()
                if k in ("pointing_game", "energy_inside", "mask_area", "snippets") and v is not None})
    for name, m in (loc.get("per_method") or {}).items():
        out.update({f"localisation.{name}.{k}".replace(" ", "_"): float(m[k])
                    for k in ("pointing_game", "energy_inside") if m.get(k) is not None})
    for name in ("vs_baseline", "vs_peer"):  # MRL minus the other detector, paired (pipeline.scoring.paired)
        c = result.get(name) or {}
        lo, hi = c.get("ci") or (None, None)
        out.update({f"{name}.{k}": float(v) for k, v in (("diff", c.get("diff")), ("ci_low", lo), ("ci_high", hi),
                                                        ("p_above", c.get("p_above"))) if v is not None})
    return out


def log_evaluation(result: dict, artifacts: Iterable[Path] = ()) -> None:
    """The evaluate stage's metrics (:func:`evaluation_metrics`) and artifact files into the active run; the
    test and per-method metrics also into the experiment's parent run."""
    import mlflow  # deferred: see the note at the top

    metrics = evaluation_metrics(result)
    mlflow.log_metrics(metrics)
    log_to_parent(_parent_share(metrics))
    for f in artifacts:
        mlflow.log_artifact(str(f))


def _parent_share(metrics: dict) -> dict:
    """The part of evaluate's metrics that its experiment's parent run also carries."""
    return {k: v for k, v in metrics.items()
            if k in {f"test_{t}" for t in PARENT_TEST_KEYS} or k.startswith(("per_method.", "per_dataset."))}


# --------------------------------------------------------------------------- the store follows the workspace

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _test_numbers(section: dict) -> dict:
    """The numbers of a ``test`` section (``auc``, ``auc_ci_low``...), a two-number ``*_ci`` list as
    ``*_ci_low``/``*_ci_high``."""
    out = {}
    for k, v in section.items():
        if _number(v):
            out[k] = float(v)
        elif k.endswith("_ci") and isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_number, v)):
            out[f"{k}_low"], out[f"{k}_high"] = float(v[0]), float(v[1])
    return out


def metrics_of_file(name: str, data: Any) -> dict:
    """The parent run's metrics from ``metrics/<name>.json``: evaluate's as :func:`log_evaluation` gives them
    (``test_*``, ``per_method.*``, ``per_dataset.*``); any other file's ``test`` section as
    ``<name>.test_*``, its per-family AUCs (``per_method`` or ``test_per_method``) as
    ``<name>.per_method.<family>.auc``, and a training stage's best ``val_auc``/``val_loss`` as
    ``<name>.best_val_*``."""
    if not isinstance(data, dict):
        return {}
    if name == "evaluate" and isinstance(data.get("test"), dict):
        full = {"per_dataset": {}, "per_method": {}, "localisation": {}, **data}
        return _parent_share(evaluation_metrics(full))
    out = {f"{name}.test_{k}": v for k, v in _test_numbers(data.get("test") or {}).items()}
    for key in ("per_method", "test_per_method"):
        for fam, m in (data.get(key) or {}).items():
            auc = m.get("auc") if isinstance(m, dict) else m
            if _number(auc):
                out[f"{name}.per_method.{fam}.auc".replace(" ", "_")] = float(auc)
    out.update({f"{name}.best_{k}": float(data[k]) for k in ("val_auc", "val_loss") if _number(data.get(k))})
    return out


def workspace_metrics(metrics_dir: Path = Path("metrics")) -> dict:
    """:func:`metrics_of_file` of every ``metrics/*.json`` of the workspace (a file that is not JSON is
    left out with a note on stderr)."""
    out: dict = {}
    for f in sorted(Path(metrics_dir).glob("*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            print(f"track: {f} left out of MLflow: not readable JSON ({e})", file=sys.stderr)
            continue
        out.update(metrics_of_file(f.stem, data))
    return out


def _epoch_history(csv_file: Path) -> list:
    """Per-epoch metrics of a training stage's ``plots/<stage>.csv`` as MLflow Metric entities (step = epoch)."""
    from mlflow.entities import Metric

    out, now = [], int(time.time() * 1000)
    with contextlib.suppress(OSError):
        with open(csv_file, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    step = int(float(row.get("epoch") or 0))
                except ValueError:
                    continue
                for k, v in row.items():
                    with contextlib.suppress(TypeError, ValueError):
                        x = float(v)
                        if k != "epoch" and x == x:
                            out.append(Metric(k, x, now, step))
    return out


def _restore_stage_run(client: Any, exp_id: str, parent: str, stage: str, params: Any, tags: dict,
                       key: str) -> Optional[str]:
    """A child run of ``stage`` made from its committed outputs (metrics, per-epoch history, report files;
    not the model), tagged :data:`RESTORED_TAG`; None when the stage has no metrics file here."""
    from mlflow.entities import Metric

    metrics_file = paths.metrics_file(stage)
    try:
        data = json.loads(metrics_file.read_text())
    except (OSError, ValueError):
        return None
    run_tags = {**{k: v for k, v in tags.items() if k != "mrl.pid"}, "stage": stage, KEY_TAG: key,
                ROLE_TAG: "stage", "mlflow.parentRunId": parent, RESTORED_TAG: RESTORED_FROM,
                "mrl.committed_run_id": recorded_run(stage) or ""}
    run = client.create_run(exp_id, run_name=stage, tags=run_tags)
    run_id = run.info.run_id
    _log_params(client, run_id, params)
    if stage == "evaluate":
        values = evaluation_metrics({"per_dataset": {}, "per_method": {}, "localisation": {}, **data})
    else:
        values = {f"best_{k}": v for k, v in data.items() if k.startswith("val_") and isinstance(v, float) and v == v}
        if _number(data.get("threshold")):
            values["threshold"] = float(data["threshold"])
    now = int(time.time() * 1000)
    entities = [Metric(k, v, now, 0) for k, v in values.items()]
    entities += _epoch_history(paths.plots_file(stage)) if stage != "evaluate" else []
    for i in range(0, len(entities), 900):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run_id, metrics=entities[i:i + 900])
    for f in paths.STAGE_OUTPUTS[stage]:
        if f.suffix in (".json", ".csv", ".png") and f != paths.run_record(stage) and f.is_file():
            client.log_artifact(run_id, str(f))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _varied_params(client: Any, exp_id: str) -> list[str]:
    """The params whose values differ between the experiment's parent runs (``mlflow.*`` left out)."""
    parents = client.search_runs([exp_id], f"tags.`{ROLE_TAG}` = 'experiment'", max_results=500)
    values: dict[str, set] = {}
    for r in parents:
        for k, v in r.data.params.items():
            values.setdefault(k, set()).add(v)
    keys = set(values)
    return sorted(k for k in keys if not k.startswith("mlflow.")
                  and (len(values[k]) > 1 or sum(k in r.data.params for r in parents) < len(parents)))


def _set_view(client: Any, exp_id: str) -> None:
    """The experiment's shared view (``?viewStateShareKey=mrl``): the runs list with the test AUC, its
    interval, the baseline's and the params that differ between experiments as columns."""
    cols = [f"metrics.`{m}`" for m in VIEW_METRICS]
    cols += [f"params.`{k}`" for k in _varied_params(client, exp_id)[:VIEW_MAX_PARAMS]]
    state = json.dumps({"selectedColumns": cols})
    tag = f"mlflow.sharedViewState.{VIEW_KEY}"
    if client.get_experiment(exp_id).tags.get(tag) != state:
        client.set_experiment_tag(exp_id, tag, state)


def sync_workspace(params: Any, mlflow_params: Any = None, metrics_dir: Path = Path("metrics")) -> dict:
    """Make the store hold what the workspace holds (see the module docstring): the current experiment's
    parent carries :func:`workspace_metrics`, each tracked stage with outputs has a child run in this store
    (its own, the recorded one, or one restored from the committed outputs) named by the parent's
    ``run.<stage>`` tag, and the experiment's shared view is set. Returns ``{"parent": id, "restored":
    [stages], "stages": {stage: run id}, "metrics": n}``."""
    from mlflow.entities import Metric

    client, exp_id, parent, key, tags = _open_experiment(params, mlflow_params)
    run = client.get_run(parent)
    restored, stages = [], {}
    for stage in TRACKED_STAGES:
        if not paths.metrics_file(stage).exists():
            continue
        run_id = run.data.tags.get(f"run.{stage}")
        if not _in_store(client, run_id):
            run_id = recorded_run(stage)
        if not _in_store(client, run_id):
            run_id = _restore_stage_run(client, exp_id, parent, stage, params, tags, key)
            if run_id is None:
                continue
            restored.append(stage)
        stages[stage] = run_id
        if run.data.tags.get(f"run.{stage}") != run_id:
            client.set_tag(parent, f"run.{stage}", run_id)
    for k, v in run.data.tags.items():  # a tag naming a run of another store (older versions set them)
        if k.startswith("run.") and k[4:] not in stages and not _in_store(client, v):
            client.delete_tag(parent, k)
    have = run.data.metrics
    now = int(time.time() * 1000)
    todo = [Metric(k, v, now, 0) for k, v in workspace_metrics(metrics_dir).items() if have.get(k) != v]
    for i in range(0, len(todo), 900):
        client.log_batch(parent, metrics=todo[i:i + 900])
    client.set_tag(parent, "mrl.synced", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if run.info.status != "FINISHED":
        client.set_terminated(parent, "FINISHED")
    _set_view(client, exp_id)
    return {"parent": parent, "name": run.info.run_name, "restored": restored, "stages": stages,
            "metrics": len(todo)}
