"""Face crops of every video in the manifest, as fixed-length windows: the library behind the ``crop`` stage.

Per video (``crop.out_dir/<dataset>/<method>/<video_id>.h5``, written atomically, see docs/CONTRACTS.md):
decode (PyAV) -> batched, downscaled MTCNN -> main-face track (IoU, gaps bridged) -> smoothed boxes -> windows
of ``clip.frames`` consecutive frames inside one track segment (stride ``crop.stride``, default ``clip.frames``,
at most ``crop.max_windows_per_video``, evenly spread) -> square crops ``image_size``.

A video whose output exists with the current params hash and manifest row is not recomputed (a killed run
restarts where it stopped). A skipped video (broken, empty, no face, too short) also gets a file, with no
windows and the reason in its attrs, so it is not retried either until its row (size) or the params change:
those are results of the file's bytes. A file the system cannot read now (permission denied, I/O error,
gone) is not a result: nothing is cached for it, it is reported with ``status: "failed"`` and tried again on
the next run (the stage then fails, so ``dvc repro`` runs it again; see ``pipeline/stages/crop.py``).
A video whose windows cannot hold ``clip.frames`` frames by its header's frame count is skipped as too short
before any face detection.

The stage's ``--shard i/n`` processes the videos at positions ``i-1 (mod n)`` of the sorted manifest and writes
``<out_dir>.shard-i-of-n.json`` beside the folder (:func:`.reports.shard_report_path`); ``--merge`` (and a run without
``--shard``) builds ``index.csv`` and ``report.json`` from the per-video files. The stage fails only when no
window at all is left.

Everything inside ``crop.out_dir`` is a function of the videos and the params (the per-video files, ``index.csv``,
``report.json``), so a re-run that recomputes or reuses crops leaves the folder's DVC hash unchanged and the
stages after it are not re-run. What a run did (each video computed, cached or failed, and its seconds) goes
to ``<out_dir>.run.json`` beside the folder (:data:`.identity.RUN_FIELDS`; :func:`.reports.run_record_path`), outside DVC, as do
the shard reports: a sharded run and its merge leave the same folder as one unsharded run.

One job per module: what identifies an output (:mod:`.identity`), one video's crop (:mod:`.video_crop`), the
decoding thread (:mod:`.prefetch`), the HDF5 file (:mod:`.h5file`), many videos and the worker pool
(:mod:`.pool`), the index and reports (:mod:`.reports`).
"""
from pipeline.ingest.datasets import MANIFEST_COLUMNS

from pipeline.ingest.crop_settings import SCHEMA_VERSION, params_hash

from .identity import RUN_FIELDS, output_path, read_report, row_signature
from .pool import FAILED, process
from .prefetch import prefetch
from .reports import (INDEX_COLUMNS, content_totals, load_manifest, merge, prune, run_record_path, run_totals,
                      shard_report_path, totals)
from .video_crop import KEEP_FRAMES_BYTES, TransientReadError, crop_video, select_windows

__all__ = ["SCHEMA_VERSION", "MANIFEST_COLUMNS", "INDEX_COLUMNS", "params_hash", "row_signature", "output_path",
           "select_windows", "crop_video", "read_report", "process", "prefetch", "merge", "prune",
           "load_manifest", "totals", "content_totals", "run_totals", "TransientReadError", "KEEP_FRAMES_BYTES",
           "FAILED", "RUN_FIELDS", "run_record_path", "shard_report_path"]
