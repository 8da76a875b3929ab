"""DVC stage ``demo``: generate the embedded demo dataset into ``params.demo.out_dir``.

    python -m pipeline.stages.demo [--params params.yaml]

The dataset is generated into a temporary folder next to the output and renamed into place, so an
interrupted run never leaves a half-written dataset. With ``demo.enabled: false`` an empty folder
holding only ``DISABLED`` is written (DVC still gets its output).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from pipeline.ingest.demo.generate import generate_demo
from pipeline.params import load_params
from pipeline.runtime import exit_now

__all__ = ["main"]


def _replace_dir(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{int(time.time() * 1000)}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.stages.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    demo = params.demo
    out = Path(demo.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    t0 = time.time()
    try:
        if not demo.enabled:
            (tmp / "DISABLED").write_text("demo.enabled is false; no demo data generated\n")
            _replace_dir(tmp, out)
            print(f"demo: disabled, wrote empty marker {out}/DISABLED")
            return 0

        bar = tqdm(desc="demo", unit="step", file=sys.stderr)

        def progress(msg: str) -> None:
            bar.set_postfix_str(msg[:60])
            bar.update(1)

        try:
            df = generate_demo(demo, demo.seed, tmp, progress=progress)
        finally:
            bar.close()
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    parts = []
    for s in ("train", "val", "test"):
        d = df[df.split == s]
        parts.append(f"{s} {int((d.label == 0).sum())}r/{int((d.label == 1).sum())}f")
    meth = ", ".join(f"{m} {n}" for m, n in df[df.label == 1].method.value_counts().sort_index().items())
    print(f"demo: {len(df)} videos in {out} ({'; '.join(parts)}; fakes: {meth}) in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    exit_now(main())
