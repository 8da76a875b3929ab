"""Jobs of ``mrl serve``: one worker thread scores one video at a time; a bounded number may wait.

A client reserves a place (:meth:`JobQueue.reserve`) BEFORE its upload is read, so a full queue is refused
at once (HTTP 429) and uploads in flight count against the limit; the place is handed back when the upload
fails or when the worker takes the job. The model is used by the worker thread only.
"""
from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

__all__ = ["Job", "JobQueue", "QueueFull", "FINISHED"]

FINISHED = ("done", "rejected", "failed")


class QueueFull(RuntimeError):
    """Every place in the queue is taken."""


@dataclass
class Job:
    """One uploaded video. ``status``: queued -> running -> done | rejected (the video cannot be scored,
    ``reason`` says why, as ``mrl detect`` says it) | failed (an error of the server)."""

    filename: str                      # the name the client gave, for display only (never a path)
    stem: str                          # a safe name derived from it, for download file names
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "queued"
    phase: str = "queued"
    progress: float = 0.0
    reason: Optional[str] = None
    result: Optional[dict] = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    data: dict = field(default_factory=dict)   # server-side state (paths): never sent to clients

    def public(self, with_result: bool = True) -> dict[str, Any]:
        d = {"id": self.id, "filename": self.filename, "status": self.status, "phase": self.phase,
             "progress": round(self.progress, 4), "reason": self.reason, "created": self.created,
             "started": self.started, "finished": self.finished}
        if self.status == "rejected":
            d["http_status"] = 422
        if with_result:
            d["result"] = self.result
        elif self.result is not None:
            d["summary"] = {k: self.result.get(k) for k in ("score", "decision", "threshold", "n_windows")}
        return d


class JobQueue:
    """At most ``max_waiting`` jobs wait (uploads in flight included) while one runs.

    ``run(job)`` does the work in the worker thread, updating ``job.progress`` / ``job.phase``; it sets
    ``job.status`` to ``done`` or ``rejected`` (anything it raises marks the job ``failed``). ``cleanup(job)``
    runs after it whatever happened, and ``forget(job)`` when the job drops out of the history (the oldest of
    more than ``keep`` finished jobs)."""

    def __init__(self, run: Callable[[Job], None], max_waiting: int = 4, keep: int = 50,
                 cleanup: Callable[[Job], None] = lambda j: None, forget: Callable[[Job], None] = lambda j: None):
        if max_waiting < 1:
            raise ValueError("max_waiting must be >= 1")
        self._run, self._cleanup, self._forget = run, cleanup, forget
        self.max_waiting, self.keep = max_waiting, keep
        self._places = threading.BoundedSemaphore(max_waiting)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []
        self._thread: Optional[threading.Thread] = None

    # ---- places in the queue
    def reserve(self) -> None:
        """Take a place or raise :class:`QueueFull`; give it back with :meth:`release` or :meth:`submit`."""
        if not self._places.acquire(blocking=False):
            raise QueueFull(f"the queue is full: {self.max_waiting} videos are waiting while one is scored; "
                            f"try again when one has finished")

    def release(self) -> None:
        self._places.release()

    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> int:
        """Queue ``job`` on a reserved place; returns how many jobs are ahead of it."""
        with self._lock:
            ahead = self._queue.qsize() + sum(self._jobs[i].status == "running" for i in self._order)
            self._jobs[job.id] = job
            self._order.append(job.id)
        self._queue.put(job)
        return ahead

    # ---- reading
    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(job_id)

    def history(self) -> list[Job]:
        """Every job still known, newest first."""
        with self._lock:
            return [self._jobs[i] for i in reversed(self._order)]

    # ---- the worker
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mrl-serve-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._places.release()                 # it no longer waits
            job.status, job.phase, job.started = "running", "starting", time.time()
            try:
                self._run(job)
                if job.status == "running":
                    raise RuntimeError("the job ended without a result")
            except Exception as exc:  # one broken job never stops the server
                job.status, job.reason = "failed", f"server error: {type(exc).__name__}: {exc}"
            finally:
                try:
                    self._cleanup(job)
                finally:
                    job.finished = time.time()
                    job.phase = job.status
                    if job.status == "done":
                        job.progress = 1.0
                    self._evict()

    def _evict(self) -> None:
        with self._lock:
            done = [i for i in self._order if self._jobs[i].status in FINISHED]
            drop = done[:max(0, len(done) - self.keep)]
            gone = []
            for i in drop:
                self._order.remove(i)
                gone.append(self._jobs.pop(i))
        for job in gone:
            self._forget(job)
