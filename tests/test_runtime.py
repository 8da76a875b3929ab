"""pipeline.runtime.exit_now: a finished stage ends without the interpreter's teardown, but only after its
atexit handlers ran and its buffered output reached the pipe; while a non-daemon thread runs it exits normally."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_exit_now_runs_atexit_flushes_output_and_skips_the_teardown(tmp_path):
    marker = tmp_path / "atexit.txt"
    out = _run(f"""
        import atexit, sys
        from pipeline.runtime import exit_now
        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
        print("last line of the stage")          # block-buffered: stdout is a pipe
        sys.stderr.write("to stderr\\n")
        try:
            exit_now(3)
        finally:
            print("the interpreter's normal exit path")  # sys.exit would run this; os._exit does not
        """, tmp_path)
    assert out.returncode == 3
    assert out.stdout == "last line of the stage\n"
    assert "to stderr" in out.stderr
    assert marker.read_text() == "ran"


def test_exit_now_exits_normally_while_a_non_daemon_thread_runs(tmp_path):
    done = tmp_path / "thread.txt"
    out = _run(f"""
        import threading, time
        from pipeline.runtime import exit_now
        def work():
            time.sleep(0.5)
            open({str(done)!r}, "w").write("finished")
        threading.Thread(target=work).start()
        try:
            exit_now(None)
        finally:
            print("normal exit")
        """, tmp_path)
    assert out.returncode == 0
    assert out.stdout == "normal exit\n"
    assert done.read_text() == "finished"  # the interpreter joined the thread before exiting


def test_every_stage_module_ends_with_exit_now():
    for f in sorted((ROOT / "pipeline" / "stages").glob("*.py")):
        if f.name == "__init__.py":
            continue
        assert f.read_text().rstrip().endswith('if __name__ == "__main__":\n    exit_now(main())'), f.name


def test_exit_now_refuses_a_value_that_is_not_an_exit_status():
    from pipeline.runtime import exit_now

    with pytest.raises(TypeError, match="exit status"):
        exit_now("a DataFrame, say")
