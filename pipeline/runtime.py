"""Small runtime helpers shared by the stages: seeds, devices, mixed precision, atomic writes, file hashes,
worker counts.

torch is imported inside the functions that use it: the ``scan`` stage (always run, so on the path of every
``dvc exp run``) and the light ``mrl`` commands use the writers here, and importing torch costs them 1.5-3 s.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["seed_everything", "resolve_device", "autocast", "atomic_write", "atomic_path", "publish",
           "atomic_torch_save",
           "write_text", "write_json", "write_csv", "sha256_file", "resolve_workers", "usable_cpus", "params_digest", "epoch_generator", "parse_shard", "exit_now"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for one epoch's shuffling and augmentation.

    Derived from (seed, epoch) only, so a run resumed at an epoch boundary draws exactly what an
    uninterrupted run would have drawn."""
    import torch

    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but CUDA is not available; use device: auto or cpu")
    return dev


def autocast(device: torch.device):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); a no-op on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temp file the usual permissions (mkstemp makes it 0600) and rename it over ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file name beside ``path`` for writers that need a name (h5py, savefig); published on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` atomically (newlines as given)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (the project's one file hash: model files, videos,
    downloaded sources)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def params_digest(obj: Any) -> str:
    """A short stable digest of a JSON-able object (used to match checkpoints to params)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_csv(df, path: str | Path) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_write(path, "w") as f:
        df.to_csv(f, index=False)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity set (what ``taskset``, a cgroup cpuset or a batch
    scheduler's ``--cpus-per-task`` leave it), not every core of the machine as :func:`os.cpu_count` says."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def resolve_workers(num_workers, device: Optional[str] = "cpu") -> int:
    """``num_workers`` (``crop.num_workers``, ``demo.num_workers``) as a number of processes: an int as given;
    ``"auto"``: the CPUs this process may use (:func:`usable_cpus`), at most 8, on CPU and GPU alike (each
    process decodes, detects and crops its own videos with a fixed number of torch threads,
    ``pipeline.ingest.cropping.pool.DETECT_THREADS``, so that the crops do not depend on the worker count; with a
    GPU they share it). Measured on the
    shared 2-core CPU (bench/README.md): 2 processes x 1 thread crop 1.6-2.4x faster than 1 process x 2 threads
    once a few videos amortise the ~5 s start of a worker (importing torch and MTCNN); ``device`` is kept for
    callers that may tune it per device."""
    if num_workers != "auto":
        return max(1, int(num_workers))
    return min(8, usable_cpus())


def parse_shard(s: str) -> tuple[int, int]:
    """``--shard i/n`` (argparse type): the i-th of n independent jobs, 1 <= i <= n."""
    try:
        i, n = (int(x) for x in s.strip().split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects i/n with 1 <= i <= n (e.g. 1/4), got {s!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard expects i/n with 1 <= i <= n (e.g. 1/4), got {s!r}")
    return i, n


def exit_now(code: Optional[int] = 0) -> None:
    """End a finished stage process at once, without the interpreter's teardown of its modules.

    A stage that imported torch, PyG and MLflow spends 1.5-2.5 s after its last line on that teardown
    (measured on the 2-core machine: ``evaluate`` 8.5 s to its last line, 11.0 s to its exit), on every
    stage of every ``dvc repro`` and ``dvc exp run``. Its outputs are complete by then (written atomically
    and fsync'd), so this runs the ``atexit`` handlers (MLflow ends its runs, ``logging`` flushes,
    multiprocessing joins its children, h5py closes its files), flushes stdout/stderr and calls
    :func:`os._exit`. It falls back to a normal :func:`sys.exit` while a non-daemon thread still runs.
    Only for ``if __name__ == "__main__":`` blocks (an exception there still takes the normal path).
    """
    if code is not None and not isinstance(code, int):
        raise TypeError(f"exit_now takes an exit status (int or None), got {type(code).__name__}")
    status = 0 if code is None else code
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(t.is_alive() and not t.daemon for t in others):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
