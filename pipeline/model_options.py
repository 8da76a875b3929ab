"""The model options ``mrl detect`` and ``mrl serve`` share: which model to load (the pipeline's model files or
an MLflow model), and where the project's files are when the command runs from a folder below the project.

Light on purpose (argparse and :mod:`pipeline.paths` only): ``pipeline/cli.py`` builds ``mrl serve``'s parser
with it on every ``mrl`` call, and ``mrl --help`` imports nothing heavy (``bench/cli_startup.py``). The model
itself is loaded from these options by :func:`pipeline.scoring.detect.models.load_from_options`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from pipeline.paths import ENCODER, RELATION, find_project_root

__all__ = ["PROJECT_DEFAULTS", "add_model_arguments", "mlflow_uri", "project_defaults"]

#: options whose default is one of the project's files: from a folder below the project, taken from its root
PROJECT_DEFAULTS = {"encoder": str(ENCODER), "relation": str(RELATION), "params": "params.yaml"}


def add_model_arguments(ap: argparse.ArgumentParser, title: str = "model (default: the pipeline's model files)",
                        run_help: str = "the model of a train_relation or train_encoder MLflow run "
                                        "(runs:/RUN_ID/model)") -> argparse._ArgumentGroup:
    """``--encoder``, ``--relation``, ``--mlflow-run`` | ``--mlflow-model``, ``--trust-pickle``, ``--tracking-uri``
    and ``--params`` in a group titled ``title``; returns the group (``mrl serve`` adds its own to it)."""
    m = ap.add_argument_group(title)
    m.add_argument("--encoder", default=PROJECT_DEFAULTS["encoder"], help="encoder file (default %(default)s)")
    m.add_argument("--relation", default=PROJECT_DEFAULTS["relation"], help="relation file (default %(default)s)")
    src = m.add_mutually_exclusive_group()
    src.add_argument("--mlflow-run", metavar="RUN_ID", help=run_help)
    src.add_argument("--mlflow-model", metavar="URI", help="a registered model, models:/NAME/VERSION or models:/NAME@ALIAS")
    m.add_argument("--trust-pickle", action="store_true",
                   help="allow loading an MLflow model, which is a pickle: loading it runs code from the file")
    m.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: as the pipeline)")
    m.add_argument("--params", default=PROJECT_DEFAULTS["params"],
                   help="fallback crop settings for model files that do not carry them (default %(default)s)")
    return m


def mlflow_uri(args: argparse.Namespace) -> Optional[str]:
    """The MLflow model the options name (``runs:/RUN_ID/model`` or the ``models:/`` URI), None for the files."""
    if args.mlflow_run:
        return f"runs:/{args.mlflow_run}/model"
    return args.mlflow_model or None


def project_defaults(args: argparse.Namespace, command: str, defaults: Optional[dict] = None) -> None:
    """Run from a folder below the project (:func:`pipeline.paths.find_project_root`), each option of
    ``defaults`` (default :data:`PROJECT_DEFAULTS`) still at its default path, which does not exist here, takes
    that file from the project's root instead; says so on stderr. Paths given on the command line stay as given."""
    root = find_project_root()
    if root is None or root == Path.cwd().resolve():
        return
    moved = []
    for key, default in (defaults or PROJECT_DEFAULTS).items():
        if getattr(args, key, None) == default and not Path(default).exists():
            setattr(args, key, str(root / default))
            moved.append(default)
    if moved:
        print(f"{command}: project {root} (found above {Path.cwd()}): reading {', '.join(moved)} there",
              file=sys.stderr)
