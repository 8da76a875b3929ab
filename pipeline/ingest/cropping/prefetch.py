"""Decoding off the critical path: a background thread that reads frames ahead of the face detector."""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

__all__ = ["prefetch"]

_END = object()


def prefetch(frames: Iterable, depth: int = 32) -> Iterator:
    """Iterate ``frames`` in a background thread, at most ``depth`` items ahead (PyAV releases the GIL while it
    decodes, so decoding overlaps face detection). Exceptions of the producer are raised in the consumer;
    a consumer that stops early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        it = iter(frames)
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item = (_END, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            item = (_END, exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                close()
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    t = threading.Thread(target=produce, name="crop-decode", daemon=True)
    t.start()
    try:
        while True:
            x, exc = q.get()
            if x is _END:
                if exc is not None:
                    raise exc
                return
            yield x
    finally:
        stop.set()
        t.join()
