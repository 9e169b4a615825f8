"""The engine's worker process: the QGIS plugin runs the engine here, never in QGIS's own process.

Started as ``python -m cwsam_core.cli.worker`` with the engine environment's own Python, it reads jobs from
standard input and answers on standard output, one JSON object a line::

    in:   {"job": {"id": 1, "op": "classify", "args": {...}}}      {"cancel": 1}
    out:  {"event": "ready", "pid": ..., "version": ...}
          {"id": 1, "event": "progress", "args": [0.5, "tile 3 of 6"]}
          {"id": 1, "event": "log", "level": 30, "message": "..."}
          {"id": 1, "event": "done", "result": ...}   (``common.plain`` data)
          {"id": 1, "event": "error", "message": "...", "kind": "...", "cancelled": false, "expected": true}

Jobs run one at a time, with the same ``cwsam_core`` functions as the command line (``worker_jobs``);
a cancel makes the job's ``should_cancel`` true, and the engine stops cleanly at its next check. Anything
the engine or a library prints goes to standard error, which the plugin keeps as the worker's log file, so
the answers on standard output stay one JSON object a line. When standard input closes (QGIS quit or
crashed) the running job is cancelled and the worker exits.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import traceback
from typing import Any, Callable, Dict, Optional, TextIO

from .. import __version__
from ..common.plain import from_plain, to_plain
from ..errors import Cancelled, CwsamError


class Channel:
    """The answers on the protocol stream, one JSON line each, from any thread."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def send(self, message: Dict[str, Any]) -> None:
        line = json.dumps(message, allow_nan=False)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class _JobLog(logging.Handler):
    """The engine's log records (logger "cwsam", information and above) as "log" events of the running job."""

    def __init__(self, channel: Channel) -> None:
        super().__init__(logging.INFO)
        self.channel = channel
        self.job_id: Optional[int] = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.job_id is None:
            return
        try:
            self.channel.send({"id": self.job_id, "event": "log", "level": record.levelno,
                               "message": record.getMessage()})
        except Exception:  # noqa: BLE001 - logging must never break a job
            self.handleError(record)


def _protocol_stream() -> TextIO:
    """Standard output kept for the answers; file descriptor 1 and ``sys.stdout`` then point at standard error,
    so that a print in the engine or a library (or a C library's) cannot break the protocol."""
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _read_requests(jobs: "queue.Queue[Optional[dict]]", cancelled: Dict[int, threading.Event]) -> None:
    """Standard input, in a thread of its own, so that a cancel arrives while a job runs."""
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            print(f"worker: ignored a line that is not JSON: {line[:200]!r}", file=sys.stderr)
            continue
        if "job" in message:
            job_id = int(message["job"]["id"])
            cancelled.setdefault(job_id, threading.Event())
            jobs.put(message["job"])
        elif "cancel" in message:
            cancelled.setdefault(int(message["cancel"]), threading.Event()).set()
    for event in list(cancelled.values()):  # QGIS went away: stop the running job, then exit
        event.set()
    jobs.put(None)


def _failure(job_id: int, exc: BaseException) -> Dict[str, Any]:
    """An "error" answer: the engine's own message for its errors (and the file system's and bad values'),
    the type and a traceback for anything unexpected."""
    expected = isinstance(exc, (CwsamError, OSError, ValueError))
    message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
    return {"id": job_id, "event": "error", "message": message, "kind": type(exc).__name__,
            "cancelled": isinstance(exc, Cancelled), "expected": expected,
            "traceback": None if expected else traceback.format_exc()}


def run_job(job: Dict[str, Any], channel: Channel, should_cancel: Callable[[], bool]) -> Dict[str, Any]:
    """One job's answer ("done" or "error"); its progress and log events are sent while it runs."""
    from .worker_jobs import JOBS  # the jobs import the engine's parts each needs, when it runs

    job_id = int(job["id"])
    op = job.get("op")
    if op not in JOBS:
        return {"id": job_id, "event": "error", "message": f"unknown worker job {op!r}: the plugin and its engine "
                "are of different versions; reinstall the plugin", "kind": "WorkerProtocolError",
                "cancelled": False, "expected": True, "traceback": None}

    def progress(*args: Any) -> None:
        channel.send({"id": job_id, "event": "progress", "args": to_plain(list(args))})

    try:
        result = JOBS[op](dict(from_plain(job.get("args") or {})), progress, should_cancel)
    except BaseException as exc:  # noqa: BLE001 - every failure is an answer; the worker lives on
        return _failure(job_id, exc)
    return {"id": job_id, "event": "done", "result": to_plain(result)}


def serve() -> int:
    """Answer jobs until standard input closes."""
    channel = Channel(_protocol_stream())
    engine_log = logging.getLogger("cwsam")
    job_log = _JobLog(channel)
    engine_log.addHandler(job_log)
    engine_log.setLevel(logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    jobs: "queue.Queue[Optional[dict]]" = queue.Queue()
    cancelled: Dict[int, threading.Event] = {}
    threading.Thread(target=_read_requests, args=(jobs, cancelled), daemon=True, name="requests").start()
    channel.send({"event": "ready", "pid": os.getpid(), "version": __version__, "python": sys.version.split()[0],
                  "executable": sys.executable})
    while True:
        job = jobs.get()
        if job is None:
            return 0
        job_id = int(job["id"])
        event = cancelled.setdefault(job_id, threading.Event())
        print(f"worker: job {job_id} {job.get('op')} started", file=sys.stderr, flush=True)
        job_log.job_id = job_id
        try:
            answer = run_job(job, channel, event.is_set)
        finally:
            job_log.job_id = None
            cancelled.pop(job_id, None)
        print(f"worker: job {job_id} {job.get('op')} {answer['event']}", file=sys.stderr, flush=True)
        if answer.get("traceback"):
            print(answer["traceback"], file=sys.stderr, flush=True)
        channel.send(answer)


if __name__ == "__main__":
    sys.exit(serve())
