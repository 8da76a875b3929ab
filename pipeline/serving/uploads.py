"""Receiving an upload: the multipart body is streamed into a file of the server's naming, and stopped as
soon as it passes the size limit (nothing larger is ever written in full).

The client's file name is kept as a string for display; it never becomes part of a path. The file's suffix
is taken from :data:`pipeline.scoring.detect.VIDEO_EXTENSIONS` when the client's name ends with one of them
(a hint for the demuxer), else ``.bin``.
"""
from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional

from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["Upload", "UploadRefused", "check_headers", "receive_upload", "display_name", "safe_stem", "FIELD"]

FIELD = "file"                 # the form field that carries the video
_OTHER_FIELD_LIMIT = 64 * 1024  # bytes of any other form field we are willing to read (and then ignore)


class UploadRefused(Exception):
    """An upload that is not accepted: ``status`` (HTTP) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    path: Path          # where the bytes are (a name the server made)
    filename: str       # the client's file name, for display only
    size: int


def display_name(raw: str, limit: int = 200) -> str:
    """The client's file name as shown on the page and in the API: its last path component (a browser sends
    only that; a hand-made request may send ``../../etc/passwd.mp4``), control characters removed, at most
    ``limit`` characters. Still only a string: the page shows it with ``textContent``."""
    name = re.split(r"[\\/]", raw or "")[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return (name or "upload")[:limit]


def safe_stem(filename: str) -> str:
    """A download-name stem: letters, digits, ``-_.`` only (as ``mrl detect`` names its outputs)."""
    stem = Path(display_name(filename)).stem
    stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in stem).strip("._")
    return stem[:80] or "video"


def _suffix(filename: str, allowed: set[str]) -> str:
    ext = os.path.splitext(display_name(filename))[1].lower()
    for a in sorted(allowed):          # the suffix written is one of ours, never the client's string
        if ext == a:
            return a
    return ".bin"


def check_headers(headers, max_bytes: int) -> bytes:
    """Refuse before reading the body: no multipart form (415), a declared length over the limit (413).
    Returns the multipart boundary."""
    ctype, params = parse_options_header(headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadRefused(415, "send the video as multipart/form-data with the file in the field 'file' "
                                 "(e.g. curl -F file=@clip.mp4 http://127.0.0.1:8000/api/detect)")
    limit_mb = max_bytes / 2**20
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + _OTHER_FIELD_LIMIT:   # + room for the form
        raise UploadRefused(413, f"the upload is {int(length) / 2**20:.1f} MB; this server accepts videos of at "
                                 f"most {limit_mb:g} MB (mrl serve --max-upload-mb)")
    return params[b"boundary"]


async def receive_upload(headers, stream: AsyncIterator[bytes], dest_dir: Path, max_bytes: int,
                         allowed_suffixes: set[str]) -> Upload:
    """Stream the ``multipart/form-data`` body into ``dest_dir/upload<suffix>``; :class:`UploadRefused`
    (413) as soon as the file passes ``max_bytes`` (the partial file is deleted), (400/415/422) when the body
    is no multipart form or has no ``file`` field (:func:`check_headers` first). ``dest_dir`` is made by the
    server."""
    boundary = check_headers(headers, max_bytes)
    limit_mb = max_bytes / 2**20
    state = {"headers": {}, "field": b"", "value": b"", "in_file": False, "other": 0, "name": None,
             "size": 0, "found": False}
    out: dict = {"f": None, "path": None}

    def on_part_begin():
        state["headers"] = {}

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, opts = parse_options_header(state["headers"].get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        state["in_file"] = name == FIELD and b"filename" in opts and not state["found"]
        if state["in_file"]:
            state["found"] = True
            state["name"] = display_name(opts[b"filename"].decode("utf-8", "replace"))
            out["path"] = dest_dir / f"upload{_suffix(state['name'], allowed_suffixes)}"
            out["f"] = open(out["path"], "xb")           # exclusive: never overwrites

    def on_part_data(data, start, end):
        n = end - start
        if state["in_file"]:
            state["size"] += n
            if state["size"] > max_bytes:
                raise UploadRefused(413, f"the video is larger than {limit_mb:g} MB, the most this server accepts "
                                         f"(mrl serve --max-upload-mb); the upload was stopped")
            out["f"].write(data[start:end])
        else:
            state["other"] += n
            if state["other"] > _OTHER_FIELD_LIMIT:
                raise UploadRefused(413, f"form fields other than '{FIELD}' are limited to "
                                         f"{_OTHER_FIELD_LIMIT // 1024} kB")

    def on_part_end():
        if state["in_file"] and out["f"] is not None:
            out["f"].close()
        state["in_file"] = False

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except UploadRefused:
        _discard(out)
        raise
    except Exception as exc:  # malformed multipart body, client gone
        _discard(out)
        raise UploadRefused(400, f"the upload could not be read as a multipart form: {type(exc).__name__}: {exc}")
    if out["f"] is not None and not out["f"].closed:
        out["f"].close()
    if not state["found"]:
        raise UploadRefused(422, f"no file in the form field '{FIELD}': send the video as "
                                 f"multipart/form-data, field '{FIELD}'")
    return Upload(out["path"], state["name"], state["size"])


def _discard(out: dict) -> None:
    if out["f"] is not None and not out["f"].closed:
        out["f"].close()
    if out["path"] is not None:
        Path(out["path"]).unlink(missing_ok=True)
