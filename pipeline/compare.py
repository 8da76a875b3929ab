"""``mrl compare``: the experiments side by side in a terminal (80 columns and up).

``dvc exp show`` prints one column per param and per metric leaf (260 columns here, "…" in every cell at
80 or 200), and ``dvc metrics show`` 4,000-character lines. This reads ``dvc exp show --json`` and prints
the columns that matter for this project: the experiment, the params it changed from its baseline
commit, the model's test AUC with its bootstrap interval, the baseline's test AUC, and the test AUC of
any other ``metrics/<name>.json`` with a ``test`` section (e.g. a peer model); ``--families`` adds the
AUC of each fake family with its interval (read from the committed metrics file: ``dvc exp show`` drops
values that are not numbers, such as an ``auc_ci`` pair). Long cells wrap inside their column.

The readers of ``dvc exp show --json`` (DVC 3.x: a list of baseline revisions, the first the workspace,
each with ``experiments``: ``{name, executor: {state}, revs: [{rev, name, data}]}``) live here and are
shared with ``scripts/grids.py``.
"""
from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["Row", "exp_show", "finished_experiments", "metric", "committed", "params_of", "rows_of",
           "changed_params", "table", "families_table", "compare"]

MODEL_FILE = "metrics/evaluate.json"
BASELINE_FILE = "metrics/baseline.json"


def exp_show(all_commits: bool = False, cwd: Optional[Path] = None) -> list:
    """``dvc exp show --json`` (``--all-commits``: the experiments of every commit) in ``cwd``."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`dvc exp show --json` failed in {Path(cwd or '.').resolve()} (run mrl compare in the "
                           f"project's DVC repository): {(res.stderr or res.stdout).strip()[-800:]}")
    return json.loads(res.stdout or "[]")


def metric(data: dict, file: str) -> dict:
    """The content of metrics ``file`` in one revision's ``data`` of ``dvc exp show --json``."""
    return ((data.get("metrics") or {}).get(file) or {}).get("data") or {}


def params_of(data: dict) -> dict:
    """params.yaml of one revision's ``data`` of ``dvc exp show --json``."""
    return ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}


def committed(data: dict, file: str, cwd: Optional[Path] = None) -> dict:
    """``file`` as the revision committed it (``git show <rev>:<file>``; the workspace: the file itself):
    ``dvc exp show`` drops the values of a metrics file that are not numbers (e.g. a family's ``auc_ci``
    pair). Falls back to :func:`metric` when git cannot give the file."""
    rev = data.get("rev")
    if rev == "workspace":
        try:
            return json.loads(Path(cwd or ".", file).read_text())
        except (OSError, ValueError):
            return metric(data, file)
    if rev:
        res = subprocess.run(["git", "show", f"{rev}:{file}"], cwd=cwd, capture_output=True, text=True)
        if res.returncode == 0:
            try:
                return json.loads(res.stdout)
            except json.JSONDecodeError:
                pass
    return metric(data, file)


def finished_experiments(show: list) -> dict:
    """name -> data of every FINISHED experiment in ``dvc exp show --json`` output (queued, running and
    failed ones are left out; of two experiments with one name, the newer)."""
    out = {}
    for base in show:
        for exp in base.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            if state in ("queued", "running", "failed") or not exp.get("revs"):
                continue
            rev = exp["revs"][0]
            if rev.get("error") or not isinstance(rev.get("data"), dict):
                continue
            name = exp.get("name") or rev.get("name")
            if name not in out or str(rev["data"].get("timestamp") or "") > str(out[name].get("timestamp") or ""):
                out[name] = rev["data"]  # a name queued again (on another commit): the newest run counts
    return out


def _flat(d: Any, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def changed_params(params: dict, baseline: dict) -> list[str]:
    """``key=value`` for every params.yaml value of ``params`` that differs from ``baseline``'s."""
    a, b = _flat(params), _flat(baseline)
    show = lambda v: json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)  # noqa: E731
    return [f"{k}={show(a.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


@dataclass
class Row:
    name: str
    kind: str                     # "workspace", "commit" or "experiment"
    state: str                    # "done", or DVC's executor state (queued, running, failed)
    data: dict = field(default_factory=dict)
    changed: list = field(default_factory=list)


def rows_of(show: list, patterns: Sequence[str] = (), bare_commits: bool = True,
            head_rev: Optional[str] = None) -> list[Row]:
    """The rows of the comparison: the workspace (its changed params: against ``head_rev``, default the first
    commit listed), each baseline commit and its experiments (as DVC lists them). ``patterns`` (shell globs)
    keep the experiments whose name matches one; ``bare_commits=False`` leaves out the commits without an
    experiment to show."""
    rows: list[Row] = []
    commits = [b for b in show if b.get("rev") != "workspace" and isinstance(b.get("data"), dict)]
    head = next((b for b in commits if head_rev and b.get("rev") == head_rev), commits[0] if commits else None)
    for base in show:
        data = base.get("data") if isinstance(base.get("data"), dict) else {}
        rev = base.get("rev") or ""
        if rev == "workspace":
            changed = changed_params(params_of(data), params_of(head["data"])) if head else []
            rows.append(Row("workspace", "workspace", "done", data, changed))
            continue
        name = f"{base.get('name')}@{rev[:7]}" if base.get("name") else rev[:7]
        rows.append(Row(name, "commit", "error" if base.get("error") else "done", data))
        for exp in base.get("experiments") or []:
            revs = exp.get("revs") or [{}]
            r = revs[0]
            ename = exp.get("name") or r.get("name") or (r.get("rev") or "")[:7]
            if patterns and not any(fnmatch.fnmatch(ename, p) for p in patterns):
                continue
            state = (exp.get("executor") or {}).get("state") or "done"
            edata = r.get("data") if isinstance(r.get("data"), dict) else {}
            if r.get("error"):
                state = "error"
            rows.append(Row(ename, "experiment", "done" if state == "success" else state, edata,
                            changed_params(params_of(edata), params_of(data)) if edata else []))
    if not bare_commits:
        rows = [r for i, r in enumerate(rows) if r.kind != "commit"
                or (i + 1 < len(rows) and rows[i + 1].kind == "experiment")]
    return rows


def _fmt(v: Any) -> str:
    return "n/a" if not isinstance(v, (int, float)) or v != v else f"{v:.3f}"


def _auc_ci(t: dict) -> str:
    if t.get("auc") is None:
        return "n/a"
    if t.get("auc_ci_low") is None:
        return _fmt(t.get("auc"))
    return f"{_fmt(t.get('auc'))} [{_fmt(t.get('auc_ci_low'))}, {_fmt(t.get('auc_ci_high'))}]"


def _other_files(rows: list[Row]) -> list[str]:
    """The metrics files besides the model's and the baseline's that have a test AUC (e.g. a peer model)."""
    files = {f for r in rows for f, v in (r.data.get("metrics") or {}).items()
             if f not in (MODEL_FILE, BASELINE_FILE) and isinstance(metric(r.data, f).get("test"), dict)
             and "auc" in metric(r.data, f)["test"]}
    return sorted(files)


def _render(header: list[str], body: list[list[str]], widths: list[int]) -> list[str]:
    """Fixed-width columns two spaces apart; a cell longer than its column wraps onto more lines."""
    def wrap(cell: str, w: int, first: bool) -> list[str]:
        indent = " " * (len(cell) - len(cell.lstrip(" ")))  # an experiment under its commit stays indented
        return textwrap.wrap(cell.strip(), w, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=first) or [""]

    def lines_of(cells: list[str]) -> list[str]:  # names break at hyphens, params only between key=value pairs
        parts = [wrap(c, w, i == 0) for i, (c, w) in enumerate(zip(cells, widths))]
        return ["  ".join(p[i].ljust(w) if i < len(p) else " " * w for p, w in zip(parts, widths)).rstrip()
                for i in range(max(len(p) for p in parts))]
    out = lines_of(header) + ["  ".join("-" * w for w in widths)]
    for cells in body:
        out += lines_of(cells)
    return out


def table(rows: list[Row], width: int = 80) -> list[str]:
    """The comparison table, every line at most ``width`` characters."""
    others = _other_files(rows)
    ci = next((metric(r.data, MODEL_FILE).get("test", {}).get("ci") for r in rows
               if metric(r.data, MODEL_FILE).get("test", {}).get("ci")), 0.95)
    header = ["experiment", "changed params", f"test AUC [{ci:.0%} CI]", "baseline"] + [Path(f).stem for f in others]
    body = []
    for r in rows:
        name = r.name if r.kind != "experiment" else f"  {r.name}"
        if r.state != "done":
            auc, base, extra = f"({r.state})", "", ["" for _ in others]
        else:
            auc = _auc_ci(metric(r.data, MODEL_FILE).get("test") or {})
            base = _fmt((metric(r.data, BASELINE_FILE).get("test") or {}).get("auc"))
            extra = [_fmt((metric(r.data, f).get("test") or {}).get("auc")) for f in others]
        body.append([name, " ".join(r.changed) or "-", auc, base] + extra)
    fixed = [max(len(header[i]), *(len(b[i]) for b in body)) if body else len(header[i])
             for i in range(2, len(header))]
    avail = width - sum(fixed) - 2 * (len(header) - 1)   # for the name and the params columns
    name_w = min(max([len(header[0])] + [len(b[0]) for b in body]), 24, max(12, avail - 21))
    return _render(header, body, [name_w, max(12, avail - name_w)] + fixed)


def families_table(rows: list[Row], width: int = 80, cwd: Optional[Path] = None) -> list[str]:
    """Each row's test AUC per fake family with its interval, and the baseline's for that family."""
    body = []
    for r in rows:
        if r.state != "done":
            continue
        per = (committed(r.data, MODEL_FILE, cwd) or {}).get("per_method") or {}
        base = metric(r.data, BASELINE_FILE).get("test_per_method") or {}
        for i, fam in enumerate(sorted(per)):
            m = per[fam] if isinstance(per[fam], dict) else {"auc": per[fam]}
            lo, hi = (m.get("auc_ci") or (None, None)) if isinstance(m.get("auc_ci"), (list, tuple)) else (None, None)
            body.append([r.name if i == 0 else "", fam, _auc_ci({"auc": m.get("auc"), "auc_ci_low": lo,
                                                                 "auc_ci_high": hi}), _fmt(base.get(fam))])
    header = ["experiment", "family", "test AUC [CI]", "baseline"]
    if not body:
        return ["(no per-family results)"]
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) for i in range(4)]
    widths[0] = min(widths[0], max(10, width - sum(widths[1:]) - 6))
    return _render(header, body, widths)


def compare(patterns: Sequence[str] = (), all_commits: bool = False, families: bool = False, width: int = 80,
            cwd: Optional[Path] = None) -> str:
    """The text ``mrl compare`` prints."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True).stdout.strip()
    rows = rows_of(exp_show(all_commits, cwd), patterns, bare_commits=not (all_commits or patterns), head_rev=head)
    out = table(rows, width)
    if families:
        out += ["", "per fake family (test split):"] + families_table(rows, width, cwd)
    return "\n".join(out)
