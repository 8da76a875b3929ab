"""``mrl serve`` as a client meets it: a real uvicorn on a free loopback port serving the app with a real
(tiny) model; uploads over HTTP, scores compared with ``mrl detect``'s own functions on the same file.

The API tests run the server in a thread of the test process (so the test can look into the server's
temporary folder); the slow test starts ``mrl serve`` as a subprocess with a small model trained in the
test and drives the page in headless Chromium through the DevTools protocol (websocket-client): a file is
set on the page's file input exactly as a user's pick, the verdict is read from the page and compared with
``mrl detect``'s JSON for the same file, and a screenshot is kept in ``test-artifacts/serve_page.png``.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from pipeline.params import parse_params
from pipeline.scoring.detect import detect, load_model_files
from test_detect import TINY, _sources, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from pipeline.ingest.video import read_frames, write_video
    from PIL import Image

    src = _sources()
    d = tmp_path_factory.mktemp("serve")
    params = parse_params(TINY)
    ep, rp = save_tiny_model(d, params)
    v = d / "videos"
    v.mkdir()
    frames = read_frames(src["carphone_pristine.mp4"], max_frames=160)
    face = write_video(v / "carphone.mp4", frames[:20], fps=30)
    later = write_video(v / "later.mp4", frames[40:64], fps=30)          # another video: other windows
    long = write_video(v / "long.mp4", frames[:160], fps=30)             # seconds of face detection
    noface = write_video(v / "noface.mp4", [np.asarray(Image.fromarray(f).resize((240, 136)))
                                            for f in read_frames(src["no_face.mp4"], max_frames=10)], fps=24)
    short = write_video(v / "short.mp4", frames[:5], fps=30)
    text = v / "notes.mp4"
    text.write_text("these are meeting notes, not a video\n" * 20)
    model = load_model_files(ep, rp, "cpu", fallback_params=None)
    return {"dir": d, "encoder": ep, "relation": rp, "model": model, "face": face, "later": later, "long": long,
            "noface": noface, "short": short, "text": text}


class Served:
    """The app on a real uvicorn in a thread, on a free loopback port."""

    def __init__(self, model, **options):
        import uvicorn

        from pipeline.serving.app import ServeOptions, create_app
        from pipeline.serving.card import model_card

        self.app = create_app(model, "cpu", model_card(model, "nonexistent.json"),
                              ServeOptions(allowed_hosts=["127.0.0.1"], **options))
        self.root: Path = self.app.state.root
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"

    def post(self, path: Path, filename: str | None = None) -> requests.Response:
        with open(path, "rb") as f:
            return requests.post(f"{self.base}/api/detect", files={"file": (filename or path.name, f)}, timeout=60)

    def wait(self, job_id: str, timeout: float = 180) -> dict:
        t0 = time.time()
        while time.time() - t0 < timeout:
            job = requests.get(f"{self.base}/api/jobs/{job_id}", timeout=10).json()
            if job["status"] in ("done", "rejected", "failed"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not finished after {timeout} s")

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def served(work):
    s = Served(work["model"], max_upload_mb=1, max_waiting=4, heatmap_windows=1)
    yield s
    s.close()
    assert not s.root.exists(), "the server's temporary folder outlived it"


def _detect_entry(work, path: Path) -> dict:
    """``mrl detect``'s entry for ``path`` with the same model (its own function, a fresh face detector)."""
    return detect([path], work["model"], "cpu", progress=False)["videos"][0]


# --------------------------------------------------------------------------- the API
def test_health_names_the_model_and_the_limits_and_docs_are_served(served):
    h = requests.get(f"{served.base}/api/health", timeout=10).json()
    assert h["status"] == "ok" and h["device"] == "cpu" and h["max_upload_mb"] == 1
    assert h["model"]["name"].startswith("MRL small3d") and h["model"]["threshold"] == 0.5
    assert h["model"]["test_auc"] is None and "nonexistent.json does not exist" in h["model"]["note"]
    assert h["queue"] == {"waiting": 0, "max_waiting": 4, "running": 0}
    spec = requests.get(f"{served.base}/openapi.json", timeout=10).json()
    assert {"/api/detect", "/api/jobs/{job_id}", "/api/health"} <= set(spec["paths"])
    body = spec["paths"]["/api/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["format"] == "binary"
    assert "swagger" in requests.get(f"{served.base}/docs", timeout=10).text.lower()
    page = requests.get(f"{served.base}/", timeout=10)
    assert page.status_code == 200 and "<title>MRL DeepFake detector</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for f in ("app.js", "style.css"):
        assert requests.get(f"{served.base}/static/{f}", timeout=10).status_code == 200
    # a request naming another host (DNS rebinding from a web page) is refused
    assert requests.get(f"{served.base}/api/health", headers={"Host": "evil.example"}, timeout=10).status_code == 400


def test_a_video_gets_the_score_mrl_detect_gives_and_its_json_and_csv(served, work):
    r = served.post(work["face"])
    assert r.status_code == 202, r.text
    job = served.wait(r.json()["id"])
    assert job["status"] == "done" and job["progress"] == 1.0 and job["reason"] is None
    res = job["result"]
    ref = _detect_entry(work, work["face"])
    assert res["score"] == ref["score"] and res["decision"] == ref["decision"] and res["threshold"] == 0.5
    assert [w["prob"] for w in res["windows"]] == [w["prob"] for w in ref["windows"]]
    assert res["n_windows"] == ref["n_windows"] == 2 and res["frames_used"] == ref["frames_used"]
    assert res["video"] == "carphone.mp4" and res["name"] == "carphone"
    # heatmaps: the 1 highest-scored window (--heatmap-windows 1), one PNG per snippet (T = 2)
    top = max(ref["windows"], key=lambda w: w["prob"])["window"]
    assert [h["window"] for h in res["heatmap_images"]] == [top, top]
    for h in res["heatmap_images"]:
        png = requests.get(served.base + h["url"], timeout=10)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # the files mrl detect --out x.json writes, under the client's name
    js = requests.get(served.base + res["downloads"]["json"], timeout=10)
    assert 'filename="carphone.json"' in js.headers["content-disposition"]
    doc = js.json()
    assert doc["format"] == "mrl-detect/1" and doc["videos"][0]["score"] == ref["score"]
    assert str(served.root) not in js.text                        # no server path leaks
    csv = requests.get(served.base + res["downloads"]["csv"], timeout=10).text.splitlines()
    assert csv[0] == "name,video,status,score,decision,threshold,n_windows,frames_used,frames_read,reason"
    assert csv[1].startswith("carphone,carphone.mp4,ok,")
    # the upload itself is gone once the job ended; only the results stay
    assert not [f for f in served.files() if Path(f).name.startswith("upload.")], served.files()


def test_a_file_that_is_not_a_video_is_refused_with_422_and_detects_reason(served, work):
    before = served.files()
    r = served.post(work["text"])
    assert r.status_code == 422
    ref = _detect_entry(work, work["text"])                       # what mrl detect says of the same file
    assert ref["status"] == "skipped"
    assert r.json()["detail"] == ref["reason"].replace(str(work["text"]), "notes.mp4")
    assert r.json()["detail"].startswith("unreadable: notes.mp4: cannot open as a video")
    assert str(served.root) not in r.text
    assert served.files() == before                               # nothing of it kept


@pytest.mark.parametrize("kind", ["noface", "short"])
def test_no_face_and_too_short_are_rejected_with_the_reasons_mrl_detect_gives(served, work, kind):
    r = served.post(work[kind])
    assert r.status_code == 202
    job = served.wait(r.json()["id"])
    ref = _detect_entry(work, work[kind])
    assert job["status"] == "rejected" and job["http_status"] == 422
    assert job["reason"] == ref["reason"].replace(str(work[kind]), f"{kind}.mp4")
    assert ("no face found in noface.mp4" if kind == "noface" else "too short: short.mp4 has 5 frames") in job["reason"]
    assert job["result"]["status"] == "skipped" and job["result"]["score"] is None


def _raw_request(port: int, head: bytes, chunks, read_between: bool) -> tuple[bytes, int]:
    """Send ``head`` then the ``chunks`` on a raw socket, watching for an early answer; (response, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent, resp = 0, b""
    try:
        sock.sendall(head)
        for c in chunks:
            if read_between and select.select([sock], [], [], 0)[0]:
                break                                            # the server has answered already
            try:
                sock.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(c)
        sock.settimeout(30)
        try:
            while True:
                b = sock.recv(65536)
                if not b:
                    break
                resp += b
                if b"\r\n\r\n" in resp and b'"}' in resp:
                    break
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        sock.close()
    return resp, sent


def test_an_oversized_upload_is_refused_with_413_before_it_is_written_in_full(served, work):
    boundary = "b0undary"
    # 1) the declared length is over the limit: refused on the headers alone, before any body byte is read
    head = (f"POST /api/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {50 * 2**20}\r\n\r\n").encode()
    resp, _ = _raw_request(served.port, head, [], read_between=False)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    assert b"this server accepts videos of at most 1 MB" in resp
    # 2) no length declared (chunked): the stream is read until it passes 1 MB, then refused and deleted
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode()
    head = (f"POST /api/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    block = b"\0" * 65536
    chunks = [f"{len(part):x}\r\n".encode() + part + b"\r\n"] + [
        f"{len(block):x}\r\n".encode() + block + b"\r\n" for _ in range(30 * 16)]     # 30 MB offered
    resp, sent = _raw_request(served.port, head, chunks, read_between=True)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:300]
    assert b"larger than 1 MB" in resp and b"the upload was stopped" in resp
    assert sent < 20 * 2**20, f"the server read {sent} bytes of a 30 MB upload before refusing it"
    time.sleep(0.3)
    assert not [f for f in served.files() if Path(f).name.startswith("upload.")], served.files()  # deleted
    h = requests.get(f"{served.base}/api/health", timeout=10).json()
    assert h["queue"]["waiting"] == 0                                          # its place was given back


def _post_named(s: "Served", path: Path, name: bytes) -> requests.Response:
    """A multipart upload whose file name is exactly the bytes ``name`` (as a hand-made client may send)."""
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
            b"Content-Type: video/mp4\r\n\r\n" + path.read_bytes() + b"\r\n--XyZ--\r\n")
    return requests.post(f"{s.base}/api/detect", data=body, timeout=60,
                         headers={"Content-Type": "multipart/form-data; boundary=XyZ"})


@pytest.mark.parametrize("name, shown, download", [
    ("../../etc/passwd.mp4", "passwd.mp4", "passwd.json"),
    ("/tmp/abs.mp4", "abs.mp4", "abs.json"),
    ("C:\\fakepath\\evil.mp4", "evil.mp4", "evil.json"),
    ("<img src=x onerror=alert(1)>.mp4", "<img src=x onerror=alert(1)>.mp4", "img_src_x_onerror_alert_1.json")])
def test_path_like_file_names_never_reach_the_file_system(served, work, name, shown, download):
    r = _post_named(served, work["face"], name.encode())
    assert r.status_code == 202, r.text
    seen = served.files()                                         # while it waits or runs
    job = served.wait(r.json()["id"])
    seen += served.files()
    assert job["status"] == "done" and job["filename"] == shown and job["result"]["video"] == shown
    # every file the server made has a name the server chose; none carries the client's name
    allowed = ("job-", "upload.mp4", "heatmaps", "detections.json", "detections.csv")
    for f in seen:
        parts = Path(f).parts
        assert parts[0].startswith("job-") and all(p.startswith(allowed) or p == "upload"
                                                   or (parts[-2] == "upload" and p.startswith("w")) for p in parts), f
    assert not Path("/tmp/abs.mp4").exists() and not (served.root / ".." / ".." / "etc" / "passwd.mp4").exists()
    cd = requests.get(served.base + job["result"]["downloads"]["json"], timeout=10).headers["content-disposition"]
    assert cd == f'attachment; filename="{download}"'


def test_two_clients_at_once_each_get_their_own_result(served, work):
    out = {}

    def client(key):
        r = served.post(work[key])
        out[key] = (r.status_code, r.json())

    threads = [threading.Thread(target=client, args=(k,)) for k in ("face", "later")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {k: v[0] for k, v in out.items()} == {"face": 202, "later": 202}
    assert out["face"][1]["id"] != out["later"][1]["id"]
    for key in ("face", "later"):
        job = served.wait(out[key][1]["id"])
        ref = _detect_entry(work, work[key])
        assert job["status"] == "done" and job["filename"] == work[key].name
        assert [w["prob"] for w in job["result"]["windows"]] == [w["prob"] for w in ref["windows"]]
    history = requests.get(f"{served.base}/api/jobs", timeout=10).json()["jobs"]
    assert {out["face"][1]["id"], out["later"][1]["id"]} <= {j["id"] for j in history}
    assert all("result" not in j for j in history)                # the history is a summary


def test_a_full_queue_answers_429_with_a_clear_message(work):
    s = Served(work["model"], max_upload_mb=5, max_waiting=1)
    try:
        a = s.post(work["long"])                                   # runs for seconds (160 frames of MTCNN)
        assert a.status_code == 202
        t0 = time.time()
        while time.time() - t0 < 60:                               # wait until the worker has taken it
            if requests.get(f"{s.base}/api/jobs/{a.json()['id']}", timeout=10).json()["status"] == "running":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the worker did not start the first job within 60 s")
        b = s.post(work["face"])                                   # the one place in the queue
        assert b.status_code == 202 and b.json()["ahead"] == 1
        c = s.post(work["face"])
        t429 = time.time()
        assert c.status_code == 429
        assert c.json()["detail"] == ("the queue is full: 1 videos are waiting while one is scored; try again "
                                      "when one has finished")
        ja, jb = s.wait(a.json()["id"]), s.wait(b.json()["id"])
        assert ja["finished"] > t429, "the first job ended before the third request: the test proved nothing"
        assert ja["status"] == jb["status"] == "done"
        assert s.post(work["face"]).status_code == 202             # places come back
    finally:
        s.close()


# --------------------------------------------------------------------------- the model card, the command
def test_the_test_auc_is_shown_only_for_the_model_files_evaluate_scored(work, tmp_path):
    import hashlib

    import yaml

    from pipeline.serving.card import model_card

    md5 = lambda p: hashlib.md5(Path(p).read_bytes()).hexdigest()  # noqa: E731
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps({"test": {"auc": 0.8125, "auc_ci_low": 0.5, "auc_ci_high": 1.0, "ci": 0.95,
                                            "n": 12}}))
    lock = tmp_path / "dvc.lock"

    def write_lock(enc_md5):
        lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate": {
            "cmd": "python -m pipeline.stages.evaluate",
            "deps": [{"path": "models/encoder.pt", "md5": enc_md5}, {"path": "models/relation.pt",
                                                                    "md5": md5(work["relation"])}],
            "outs": [{"path": "metrics/evaluate.json", "md5": md5(metrics)}]}}}))

    write_lock(md5(work["encoder"]))
    card = model_card(work["model"], metrics, lock)
    assert (card["test_auc"], card["auc_ci"], card["n_test"], card["note"]) == (0.8125, [0.5, 1.0], 12, None)
    write_lock("0" * 32)                                            # evaluate scored another encoder
    card = model_card(work["model"], metrics, lock)
    assert card["test_auc"] is None and "computed for other model files" in card["note"]
    write_lock(md5(work["encoder"]))
    metrics.write_text(json.dumps({"test": {"auc": 0.99}}))         # edited after evaluate wrote it
    card = model_card(work["model"], metrics, lock)
    assert card["test_auc"] is None and "is not the file the evaluate stage wrote" in card["note"]


def test_serve_refuses_a_pickle_unasked_and_knows_loopback(tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.serving.server import is_loopback

    assert main(["serve", "--mlflow-run", "abc123", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and "weights_only" in err
    assert main(["serve", "--encoder", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert f"serve: cannot load the model: {tmp_path / 'none.pt'}: model file not found" in err
    assert "warning: listening on" not in err
    assert main(["serve", "--host", "0.0.0.0", "--encoder", str(tmp_path / "none.pt")]) == 2
    assert ("serve: warning: listening on 0.0.0.0, not on this machine only: anyone who can reach it can upload "
            "videos and read every result") in capsys.readouterr().err
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.10"))


def test_the_page_escapes_what_it_shows_and_loads_nothing_from_elsewhere():
    """Static check of the page's code: strings go through textContent; no innerHTML, no outside URL."""
    from pipeline.serving.app import STATIC

    js = (STATIC / "app.js").read_text()
    html = (STATIC / "index.html").read_text()
    assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js
    assert "document.write" not in js and "eval(" not in js
    for text in (js, html, (STATIC / "style.css").read_text()):
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text


# --------------------------------------------------------------------------- the page in a browser (slow)
def _train_small_model(project: Path) -> Path:
    """A tiny MRL model trained here by the encoder stage's own code (pipeline.learning.encoder) on generated
    clips (tests/test_learning.py's flicker task), saved as the pipeline saves it: models/encoder.pt, and its
    jointly trained relation head as models/relation.pt (the relation stage's file format)."""
    import torch

    from feature_cache import sha256_file
    from helpers import write_crop_dir
    from pipeline.learning.encoder import encoder_payload, train_encoder
    from pipeline.runtime import atomic_torch_save
    from test_learning import _clip

    rng = np.random.default_rng(0)
    crops = write_crop_dir(project / "crops", [(split, "flicker" if i % 2 else "real", i % 2, _clip(rng, bool(i % 2)))
                                               for split, n in (("train", 16), ("val", 8)) for i in range(n)])
    raw = json.loads(json.dumps(TINY))
    raw.update(seed=0, device="cpu")
    raw["train_encoder"] = {"epochs": 3, "batch_size": 8, "lr": 3e-3, "relation": {"hidden": 8, "mlp_hidden": 8}}
    p = parse_params(raw)
    torch.set_num_threads(2)
    res = train_encoder(p.encoder, p.clip, p.train_encoder, crops, project / "run", seed=p.seed, device=p.device,
                        image_size=p.crop.image_size)
    models = project / "models"
    models.mkdir()
    payload = encoder_payload(res, p.crop)
    atomic_torch_save(payload, models / "encoder.pt")
    atomic_torch_save({"format": "mrl-relation/1", "state_dict": payload["head_state_dict"],
                       "in_dim": payload["out_dim"], "heads": p.encoder.heads, "snippets": p.clip.snippets,
                       "relation": p.train_encoder.relation.model_dump(), "mask": p.train_encoder.mask.model_dump(),
                       "threshold": 0.5, "encoder_sha256": sha256_file(models / "encoder.pt"),
                       "best_epoch": payload["best_epoch"]}, models / "relation.pt")
    return models


def _card_files(project: Path) -> dict:
    """metrics/evaluate.json (the fixture's numbers, in evaluate's format) and the dvc.lock entry that ties it
    to the model files, so the page has a test AUC to show."""
    import hashlib

    import yaml

    test = {"auc": 0.8214, "auc_ci_low": 0.5536, "auc_ci_high": 1.0, "ci": 0.95, "n": 16}   # no rounding ties
    (project / "metrics").mkdir()
    (project / "metrics" / "evaluate.json").write_text(json.dumps({"test": test}))
    md5 = lambda p: hashlib.md5((project / p).read_bytes()).hexdigest()  # noqa: E731
    (project / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate": {
        "cmd": "python -m pipeline.stages.evaluate",
        "deps": [{"path": p, "md5": md5(p)} for p in ("models/encoder.pt", "models/relation.pt")],
        "outs": [{"path": "metrics/evaluate.json", "md5": md5("metrics/evaluate.json")}]}}}))
    return test


class CDP:
    """A minimal Chrome DevTools protocol client over one websocket (websocket-client)."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.n, self.events = 0, []

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def eval(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float = 180):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.25)
        raise AssertionError(f"not true after {timeout} s: {expr}")


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_the_page_in_headless_chromium_shows_what_mrl_detect_says(tmp_path):
    from PIL import Image

    from pipeline.ingest.video import read_frames, write_video

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: apt-get install -y chromium (.ci/run does it)"
    project = tmp_path / "project"
    project.mkdir()
    _train_small_model(project)
    card = _card_files(project)
    name = "<img src=x onerror=alert(1)>.mp4"                      # a file name the page must not interpret
    video = write_video(tmp_path / name, read_frames(_sources()["carphone_pristine.mp4"], max_frames=48), fps=30)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}

    det = subprocess.run([sys.executable, "-m", "pipeline.cli", "detect", str(video), "--out", str(tmp_path / "det.json"),
                          "--device", "cpu", "--no-progress"], cwd=project, env=env, capture_output=True, text=True,
                         timeout=300)
    assert det.returncode == 0, det.stderr
    ref = json.loads((tmp_path / "det.json").read_text())["videos"][0]
    assert ref["status"] == "ok" and ref["n_windows"] == 6

    port, cport = _free_port(), _free_port()
    slog, clog = tmp_path / "serve.log", tmp_path / "chromium.log"
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port), "--device", "cpu"],
                              cwd=project, env=env, stdout=open(slog, "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/api/health", server, slog)
        browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                    "--disable-background-networking", "--no-first-run", "--disable-extensions",
                                    f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000",
                                    f"--remote-debugging-port={cport}", "--remote-allow-origins=*", "about:blank"],
                                   stdout=open(clog, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(f"http://127.0.0.1:{cport}/json/version", browser, clog)
        page = next(t for t in requests.get(f"http://127.0.0.1:{cport}/json/list", timeout=10).json()
                    if t["type"] == "page")
        cdp = CDP(page["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=f"{base}/")
        cdp.wait("document.readyState === 'complete' && document.getElementById('model-line').textContent"
                 ".startsWith('Model:')")
        assert "test AUC 0.821 [0.554, 1.000] (95 % interval, 16 test videos)" in cdp.eval(
            "document.getElementById('model-line').textContent")

        # pick the file on the page's file input, as a user does; the page uploads it and follows the job
        root = cdp.call("DOM.getDocument")["root"]["nodeId"]
        node = cdp.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        cdp.call("DOM.setFileInputFiles", nodeId=node, files=[str(video)])
        cdp.wait("!document.getElementById('progress-box').hidden || !document.getElementById('result').hidden", 30)
        cdp.wait("!document.getElementById('result').hidden && document.getElementById('verdict').textContent")
        cdp.wait("[...document.querySelectorAll('#heatmaps img')].every(i => i.complete && i.naturalWidth > 0)", 30)
        cdp.wait("document.querySelectorAll('#history tbody tr').length === 1", 30)
        shown = cdp.eval("""(() => { const t = (id) => document.getElementById(id).textContent; return {
            verdict: t('verdict'), score: t('score'), threshold: t('threshold'), windows: t('n-windows'),
            file: t('result-file'), auc: t('model-auc'), error: document.getElementById('error').hidden,
            probs: [...document.querySelectorAll('#chart rect.win')].map(r => r.getAttribute('data-prob')),
            heat: document.querySelectorAll('#heatmaps img').length,
            json: document.getElementById('dl-json').getAttribute('href'),
            injected: document.querySelectorAll('#result-file *, #history td *, img[src="x"]').length,
            history: document.querySelector('#history tbody tr td').textContent}; })()""")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "serve_page.png"
        size = cdp.call("Page.getLayoutMetrics")["cssContentSize"]
        png = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                       clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        shot.write_bytes(base64.b64decode(png["data"]))

        # the numbers on the page are mrl detect's for the same file
        assert shown["verdict"] == ref["decision"].upper()
        assert shown["score"] == f"{ref['score']:.4f}"
        assert shown["threshold"] == f"{ref['threshold']:.4f} (model (validation EER))"
        assert shown["windows"] == str(ref["n_windows"])
        assert [float(p) for p in shown["probs"]] == [w["prob"] for w in ref["windows"]]
        assert shown["auc"] == f"{card['auc']:.3f} [{card['auc_ci_low']:.3f}, {card['auc_ci_high']:.3f}] (95 % interval, 16 test videos)"
        assert shown["heat"] == 3 * 2                                   # 3 windows (the default) x T = 2 snippets
        assert shown["error"] is True
        # the file name is shown as text, never as markup
        assert shown["file"] == name and shown["history"] == name and shown["injected"] == 0
        assert not [e for e in cdp.events if e.get("method") == "Page.javascriptDialogOpening"]
        page_json = requests.get(base + shown["json"], timeout=10).json()["videos"][0]
        assert page_json["score"] == ref["score"] and page_json["windows"] == ref["windows"]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # a video without a face: the page says why, in mrl detect's words, and the history lists it too
        noface = write_video(tmp_path / "noface.mp4", [np.asarray(Image.fromarray(f).resize((240, 136)))
                                                     for f in read_frames(_sources()["no_face.mp4"], max_frames=10)])
        cdp.call("DOM.setFileInputFiles", nodeId=node, files=[str(noface)])
        msg = cdp.wait("!document.getElementById('error').hidden && document.getElementById('error').textContent")
        assert msg == "noface.mp4 cannot be scored: no face found in noface.mp4 (10 frames read)"
        assert cdp.eval("document.getElementById('verdict').textContent") == "not scored"
        cdp.wait("document.querySelectorAll('#history tbody tr').length === 2", 30)
        cdp.ws.close()
    finally:
        if browser is not None:
            _stop(browser)
        _stop(server)
    assert "open http://127.0.0.1:" in slog.read_text() and "warning: listening on" not in slog.read_text()
