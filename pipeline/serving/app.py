"""The FastAPI application of ``mrl serve``: the page, the API under it, and the job that scores a video.

A job calls ``mrl detect``'s own function (:func:`pipeline.scoring.detect.detect`: the crop stage's code
with the model's crop settings, the evaluate path's scoring, Grad-CAM) on the uploaded file, and writes the
JSON and CSV that ``mrl detect --out x.json`` writes (:func:`pipeline.scoring.detect.write_outputs`). In
what the server sends or writes, the server's own path of the upload is replaced by the client's file name.

API (OpenAPI at ``/docs``): ``POST /api/detect`` (multipart, field ``file``) -> 202 ``{id, ...}``; 413 over
``max_upload_mb``; 415 no multipart form; 422 not a video (the reason ``mrl detect`` gives); 429 queue
full. ``GET /api/jobs/{id}``: status (queued, running, done, rejected = the video cannot be scored, with
``reason`` and ``http_status`` 422, failed), progress 0-1, phase, result (the video's ``mrl detect``
entry plus ``heatmap_images`` and ``downloads``). ``GET /api/jobs``: the history, newest first.
``GET /api/health``: the model card, the device, the queue.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipeline.ingest.video import VideoError, probe
from pipeline.scoring.detect import VIDEO_EXTENSIONS, LoadedModel, detect, write_outputs
from pipeline.serving.jobs import Job, JobQueue, QueueFull
from pipeline.serving.uploads import UploadRefused, check_headers, receive_upload, safe_stem

__all__ = ["create_app", "ServeOptions", "STATIC"]

STATIC = Path(__file__).resolve().parent / "static"
# share of the progress bar per phase of detect_video (cropping is most of the time)
PHASES = {"crop": (0.0, 0.75), "score": (0.75, 0.85), "heatmaps": (0.85, 0.98)}
HEATMAP_NAME = r"^w(\d+)_s(\d+)_f(\d+)\.png$"
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                           "base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class ServeOptions:
    """The settings of ``mrl serve`` that shape a job (the ``mrl detect`` options it passes on)."""

    def __init__(self, max_upload_mb: float = 200, max_waiting: int = 4, keep: int = 50, heatmap_windows: int = 3,
                 threshold: Optional[float] = None, stride: Optional[int] = None, max_windows: Optional[int] = None,
                 max_frames: Optional[int] = None, batch_size: int = 8, allowed_hosts: Optional[list[str]] = None,
                 work_dir: Optional[str | Path] = None):
        self.max_upload_mb, self.max_waiting, self.keep = max_upload_mb, max_waiting, keep
        self.heatmap_windows, self.threshold, self.stride = heatmap_windows, threshold, stride
        self.max_windows, self.max_frames, self.batch_size = max_windows, max_frames, batch_size
        self.allowed_hosts, self.work_dir = allowed_hosts, work_dir

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def _scrub(value: Any, secret: str, shown: str) -> Any:
    """``value`` with every occurrence of the server's path ``secret`` replaced by ``shown``."""
    if isinstance(value, str):
        return value.replace(secret, shown)
    if isinstance(value, list):
        return [_scrub(v, secret, shown) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, secret, shown) for k, v in value.items()}
    return value


def _refusal(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def create_app(model: LoadedModel, device: torch.device | str, card: dict, options: Optional[ServeOptions] = None
               ) -> FastAPI:
    """The application; the worker starts with it (lifespan) and its temporary folder goes with it."""
    opts = options or ServeOptions()
    device = torch.device(device)
    root = Path(tempfile.mkdtemp(prefix="mrl-serve-", dir=opts.work_dir))
    heat_re = re.compile(HEATMAP_NAME)

    def run_job(job: Job) -> None:
        upload: Path = job.data["upload"]
        jobdir: Path = job.data["dir"]

        def on_progress(phase: str, done: int, total: int) -> None:
            lo, hi = PHASES.get(phase, (job.progress, job.progress))
            frac = min(done / total, 1.0) if total else 0.5
            job.phase, job.progress = phase, max(job.progress, lo + (hi - lo) * frac)

        try:
            result = detect([upload], model, device, opts.threshold, opts.stride, opts.max_windows,
                            opts.max_frames, jobdir / "heatmaps", progress=False, batch_size=opts.batch_size,
                            on_progress=on_progress, heatmap_windows=opts.heatmap_windows)
        except Exception as exc:         # said to the client without the server's paths
            raise RuntimeError(_scrub(f"{type(exc).__name__}: {exc}", str(upload), job.filename)) from None
        job.phase = "writing"
        entry = result["videos"][0]
        heatmaps = {Path(p).name: Path(p) for p in entry["heatmaps"]}
        result = _scrub(result, str(upload), job.filename)
        result["videos"][0].update(name=job.stem, video=job.filename, heatmaps=sorted(heatmaps))
        write_outputs(result, jobdir / "detections.json")          # + detections.csv, as mrl detect --out x.json
        entry = result["videos"][0]
        probs = {w["window"]: w for w in entry["windows"]}
        images = []
        for name in sorted(heatmaps):
            m = heat_re.match(name)
            w = probs.get(int(m.group(1))) if m else None
            if w is not None:
                images.append({"url": f"/api/jobs/{job.id}/heatmaps/{name}", "window": w["window"],
                               "snippet": int(m.group(2)), "frame": int(m.group(3)), "prob": w["prob"],
                               "first_frame": w["first_frame"], "last_frame": w["last_frame"]})
        job.data["heatmaps"] = heatmaps
        job.result = {**entry, "threshold_source": result["threshold_source"], "device": result["device"],
                      "model": card["name"], "heatmap_images": images,
                      "downloads": {"json": f"/api/jobs/{job.id}/detections.json",
                                    "csv": f"/api/jobs/{job.id}/detections.csv"}}
        if entry["status"] == "ok":
            job.status = "done"
        else:
            job.status, job.reason = "rejected", entry["reason"]

    def cleanup(job: Job) -> None:                 # the uploaded video never outlives its job
        job.data["upload"].unlink(missing_ok=True)

    def forget(job: Job) -> None:                  # results leave with the job's place in the history
        shutil.rmtree(job.data["dir"], ignore_errors=True)

    jobs = JobQueue(run_job, opts.max_waiting, opts.keep, cleanup, forget)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.start()
        try:
            yield
        finally:
            jobs.stop()
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="MRL DeepFake detector", version="1", lifespan=lifespan,
                  description="Score a video with the trained Masked Relation Learning model, as `mrl detect` does. "
                              "Upload with POST /api/detect, poll GET /api/jobs/{id}.")
    app.state.jobs, app.state.root, app.state.card = jobs, root, card
    if opts.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=opts.allowed_hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        if not request.url.path.startswith(("/docs", "/redoc", "/openapi.json")):   # FastAPI's docs use a CDN
            response.headers.update(PAGE_HEADERS)
        return response

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", summary="The model, the device and the queue")
    def health() -> dict:
        running = [j for j in jobs.history() if j.status == "running"]
        return {"status": "ok", "model": card, "device": str(device), "max_upload_mb": opts.max_upload_mb,
                "heatmap_windows": opts.heatmap_windows,
                "queue": {"waiting": jobs.waiting(), "max_waiting": opts.max_waiting, "running": len(running)}}

    @app.post("/api/detect", status_code=202, summary="Upload a video to score (multipart, field 'file')",
              responses={413: {"description": "larger than --max-upload-mb"},
                         415: {"description": "not a multipart form"},
                         422: {"description": "not a video (the reason mrl detect gives)"},
                         429: {"description": "the queue is full"}},
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"],
                  "properties": {"file": {"type": "string", "format": "binary"}}}}}}})
    async def post_detect(request: Request):
        try:
            check_headers(request.headers, opts.max_bytes)
        except UploadRefused as exc:
            return _refusal(exc.status, exc.message)
        try:
            jobs.reserve()
        except QueueFull as exc:
            return _refusal(429, str(exc))
        jobdir = Path(tempfile.mkdtemp(prefix="job-", dir=root))
        submitted = False
        try:
            up = await receive_upload(request.headers, request.stream(), jobdir, opts.max_bytes, VIDEO_EXTENSIONS)
            try:
                await run_in_threadpool(probe, up.path)     # the first check crop_video makes, at once
            except VideoError as exc:
                return _refusal(422, _scrub(f"unreadable: {exc}", str(up.path), up.filename))
            job = Job(up.filename, safe_stem(up.filename), data={"dir": jobdir, "upload": up.path})
            ahead = jobs.submit(job)
            submitted = True
        except UploadRefused as exc:
            return _refusal(exc.status, exc.message)
        finally:
            if not submitted:                              # refused or failed: nothing of it stays
                jobs.release()
                shutil.rmtree(jobdir, ignore_errors=True)
        return JSONResponse({"id": job.id, "status": job.status, "filename": job.filename, "ahead": ahead,
                             "size_bytes": up.size, "url": f"/api/jobs/{job.id}"}, status_code=202)

    def _job(job_id: str) -> Optional[Job]:
        return jobs.get(job_id)

    @app.get("/api/jobs", summary="The videos scored since the server started, newest first")
    def list_jobs() -> dict:
        return {"jobs": [j.public(with_result=False) for j in jobs.history()]}

    @app.get("/api/jobs/{job_id}", summary="A job's status, progress and result")
    def get_job(job_id: str):
        job = _job(job_id)
        if job is None:
            return _refusal(404, f"no job {job_id!r} (the history keeps the last {opts.keep})")
        return job.public()

    def _download(job_id: str, kind: str):
        job = _job(job_id)
        if job is None or job.result is None:
            return _refusal(404, f"no result for job {job_id!r}")
        path = job.data["dir"] / f"detections.{kind}"
        return FileResponse(path, filename=f"{job.stem}.{kind}",
                            media_type="application/json" if kind == "json" else "text/csv")

    @app.get("/api/jobs/{job_id}/detections.json", summary="The JSON mrl detect writes for this video")
    def download_json(job_id: str):
        return _download(job_id, "json")

    @app.get("/api/jobs/{job_id}/detections.csv", summary="The CSV mrl detect writes for this video")
    def download_csv(job_id: str):
        return _download(job_id, "csv")

    @app.get("/api/jobs/{job_id}/heatmaps/{name}", summary="A Grad-CAM overlay PNG of the job")
    def heatmap(job_id: str, name: str):
        job = _job(job_id)
        path = (job.data.get("heatmaps") or {}).get(name) if job is not None else None
        if path is None:                     # only names the job itself wrote: nothing is joined to a path
            return _refusal(404, f"no heatmap {name!r} for job {job_id!r}")
        return FileResponse(path, media_type="image/png")

    return app
