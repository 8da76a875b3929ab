"""A stage that refuses its input says so in one message, without a traceback.

:class:`InputRefused` is the error of an input a stage cannot use (an invalid params key, a manifest that
leaks, ...): its message names the key or the files, its ``fix`` what to do. The stages' package
(:mod:`pipeline.stages`) installs :func:`refusal_hook` as ``sys.excepthook``, so when one escapes a stage's
``main`` the process prints ``<stage>: <message>``, the fix and, under ``dvc repro``, which of the stage's
outputs DVC had already removed and how to get them back (``dvc checkout <stage>``; ``git checkout`` for the
ones kept in git), and exits with status 1. Every other exception keeps its traceback (a bug shows where it
is), and ``MRL_TRACEBACK=1`` shows it for a refusal too. Tests and scripts that call ``main`` get the
exception itself.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Callable, Optional

import yaml

__all__ = ["InputRefused", "refusal_message", "removed_outputs", "refusal_hook", "install_refusal_hook"]


class InputRefused(ValueError):
    """A stage's input is unusable: the message names the file or key, ``fix`` says what to do."""

    fix: str = ""

    def __init__(self, message: str, fix: Optional[str] = None):
        super().__init__(message)
        if fix is not None:
            self.fix = fix


def _stage_name() -> str:
    """The running stage: DVC's ``DVC_STAGE``, else the ``pipeline.stages.<name>`` module run as ``__main__``."""
    if os.environ.get("DVC_STAGE"):
        return os.environ["DVC_STAGE"].rsplit(":", 1)[-1]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (spec.name.rsplit(".", 1)[-1] if spec and spec.name else "") or Path(sys.argv[0]).stem


def removed_outputs(stage: str, root: str | Path) -> tuple[list[str], list[str]]:
    """The outputs of ``stage`` in ``root/dvc.yaml`` that DVC removes before running it (all but ``persist``)
    and that are missing now: (cached by DVC, kept in git: ``cache: false``)."""
    try:
        stages = yaml.safe_load((Path(root) / "dvc.yaml").read_text()).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return [], []
    cached, in_git = [], []
    for kind in ("outs", "metrics", "plots"):
        for item in (stages.get(stage) or {}).get(kind) or []:
            path, opts = (next(iter(item.items())) if isinstance(item, dict) else (item, None))
            opts = opts if isinstance(opts, dict) else {}
            if opts.get("persist") or (Path(root) / str(path)).exists():
                continue
            (in_git if opts.get("cache", True) is False else cached).append(str(path))
    return cached, in_git


def refusal_message(exc: InputRefused, stage: str, dvc_root: Optional[str | Path] = None) -> str:
    """What a stage prints when it refuses its input (see the module docstring)."""
    lines = [f"{stage}: {exc}"]
    if exc.fix:
        lines.append(f"fix: {exc.fix}")
    if dvc_root is not None:
        cached, in_git = removed_outputs(stage, dvc_root)
        back = ([f"`dvc checkout {stage}` brings back {', '.join(cached)}"] if cached else []) + \
               ([f"`git checkout -- {' '.join(in_git)}` brings back {', '.join(in_git)}"] if in_git else [])
        if back:
            lines.append("dvc repro removed this stage's outputs before running it; until it runs again, "
                         + " and ".join(back) + " (the last committed ones)")
    return "\n".join(lines) + "\n"


ExceptHook = Callable[[type, BaseException, Optional[TracebackType]], None]


def refusal_hook(previous: ExceptHook = sys.__excepthook__) -> ExceptHook:
    """A ``sys.excepthook`` that prints an :class:`InputRefused` as :func:`refusal_message` and hands every
    other exception to ``previous``."""
    def hook(kind: type, exc: BaseException, tb: Optional[TracebackType]) -> None:
        if not isinstance(exc, InputRefused) or os.environ.get("MRL_TRACEBACK"):
            previous(kind, exc, tb)
            return
        sys.stderr.write(refusal_message(exc, _stage_name(), os.environ.get("DVC_ROOT") or None))
        sys.stderr.flush()
    return hook


def install_refusal_hook() -> None:
    """Install :func:`refusal_hook` (once) in front of the current ``sys.excepthook``."""
    if not getattr(sys.excepthook, "_mrl_refusal", False):
        hook = refusal_hook(sys.excepthook)
        hook._mrl_refusal = True  # type: ignore[attr-defined]
        sys.excepthook = hook
