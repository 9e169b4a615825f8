"""The plugin's side of the engine's worker process (``cwsam_core.cli.worker``).

QGIS's own process never imports torch, ONNX Runtime or rasterio: each job (classify, train, retrain,
evaluate, the environment check...) is sent to a worker process started with the engine environment's own
Python, and its progress, log lines and result stream back. A worker that crashes, is killed or runs out of
memory takes only itself down: the job fails with a message that says what happened and where the worker's
log is, and what it left half-written is removed. Workers are kept for the next job (starting one costs
the engine's imports, seconds with PyTorch), one per job running at the same time.

Plain Python (no Qt): a ``QgsTask`` calls :func:`run_job` from its own thread.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from cwsam_core.common.plain import from_plain, to_plain

# How long a cancelled job has to stop by itself before its worker is killed, and a new worker to answer.
CANCEL_GRACE_S = 1.5
START_TIMEOUT_S = 120.0
IDLE_WORKERS = 2
KEPT_LOGS = 20  # the newest worker logs kept in the log folder
# Variables of QGIS's process that would point the engine's Python or its own GDAL and PROJ at QGIS's files.
_HOST_ONLY = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__", "GDAL_DATA",
              "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA", "DYLD_LIBRARY_PATH", "DYLD_FALLBACK_LIBRARY_PATH")


class WorkerError(Exception):
    """A job that did not give a result. ``cancelled``: the user stopped it; ``expected``: the engine's own
    message for the user (bad input, a file that cannot be read); ``details``: a traceback or log excerpt."""

    def __init__(self, message: str, kind: str = "", cancelled: bool = False, expected: bool = True,
                 details: Optional[str] = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.cancelled = cancelled
        self.expected = expected
        self.details = details


class WorkerDied(WorkerError):
    """The worker process ended while it ran a job (a crash, a kill, out of memory)."""


@dataclass(frozen=True)
class Engine:
    """Where the engine runs: the environment's Python and the folder ``cwsam_core`` is imported from."""

    python: Path
    source: Optional[Path] = None  # prepended to the worker's PYTHONPATH: the plugin's bundled cwsam_core
    log_folder: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "cwsam-worker-logs")

    def __post_init__(self) -> None:  # absolute: the same engine wherever QGIS's working folder moves
        object.__setattr__(self, "python", Path(os.path.abspath(self.python)))
        if self.source is not None:
            object.__setattr__(self, "source", Path(os.path.abspath(self.source)))

    def environment(self) -> Dict[str, str]:
        variables = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}
        if self.source is not None:
            variables["PYTHONPATH"] = str(self.source)
        variables["PYTHONIOENCODING"] = "utf-8"
        variables["PYTHONUNBUFFERED"] = "1"
        return variables


def describe_exit(code: Optional[int]) -> str:
    """"crashed (segmentation fault, signal 11)", "was killed (signal 9: out of memory, or stopped from
    outside)", "exited with status 1"..."""
    if code is None:
        return "stopped answering"
    if code < 0:
        number = -code
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number == getattr(signal, "SIGKILL", 9):
            return f"was killed ({name}: out of memory, or stopped from outside)"
        if number == getattr(signal, "SIGSEGV", 11):
            return f"crashed (segmentation fault, {name})"
        return f"crashed ({name})"
    if os.name == "nt" and code >= 0xC0000000:
        return f"crashed (Windows status {code:#x})"
    return f"exited with status {code}"


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _prune_logs(folder: Path) -> None:
    logs = sorted(folder.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-KEPT_LOGS]:
        try:
            old.unlink()
        except OSError:  # still open on Windows: next time
            pass


class EngineWorker:
    """One worker process: started, given jobs one at a time, closed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        engine.log_folder.mkdir(parents=True, exist_ok=True)
        _prune_logs(engine.log_folder)
        handle, name = tempfile.mkstemp(prefix=f"worker-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log",
                                        dir=engine.log_folder)
        self.log_path = Path(name)
        self._log = os.fdopen(handle, "w")
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window on Windows
        try:
            self.process = subprocess.Popen(
                [str(engine.python), "-m", "cwsam_core.cli.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._log, env=engine.environment(), creationflags=flags,
                text=True, encoding="utf-8", bufsize=1)
        except OSError as exc:
            self._log.close()
            raise WorkerError(f"the engine's Python {engine.python} cannot be started ({exc}): choose another "
                              "environment in the CWSAM dock's Setup tab") from None
        self.pid = self.process.pid
        self.messages: "queue.Queue[Optional[dict]]" = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True, name=f"cwsam-worker-{self.pid}").start()
        self.ready = self._wait_ready()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self.messages.put(json.loads(line))
            except ValueError:
                continue
        self.messages.put(None)  # end of the stream: the process is gone

    def _wait_ready(self) -> dict:
        try:
            message = self.messages.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.kill()
            raise WorkerDied(f"the engine's worker did not start within {START_TIMEOUT_S:.0f} s; its log: "
                             f"{self.log_path}") from None
        if message is None or message.get("event") != "ready":
            code = self.process.wait()
            tail = _log_tail(self.log_path)
            hint = (" (cwsam_core cannot be imported there: reinstall the plugin)" if "No module named" in tail
                    and "cwsam_core" in tail else "")
            raise WorkerDied(f"the engine's worker {describe_exit(code)} while starting{hint}; its log: "
                             f"{self.log_path}", details=tail)
        return message

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # the worker is gone: the reader thread reports it
            pass

    def call(self, op: str, args: Dict[str, Any], progress: Optional[Callable[..., None]] = None,
             log: Optional[Callable[[int, str], None]] = None, should_cancel: Optional[Callable[[], bool]] = None,
             outputs: Iterable[Optional[Path]] = (), cancel_grace: float = CANCEL_GRACE_S) -> Any:
        """Run one job and return its result (``common.plain`` records); ``WorkerError`` otherwise.

        ``outputs`` are the files the job writes: where the worker dies, those it created are removed.
        Whatever the job left beside them under its process id (temporaries, the previous file kept aside)
        is removed or put back in any case. A cancelled job that has not stopped after ``cancel_grace``
        seconds is stopped by killing its worker.
        """
        self._next_id += 1
        job_id = self._next_id
        targets = [Path(p) for p in outputs if p]
        existed = {p for p in targets if p.exists()}
        self._send({"job": {"id": job_id, "op": op, "args": to_plain(args)}})
        deadline: Optional[float] = None
        while True:
            if deadline is None and should_cancel is not None and should_cancel():
                self._send({"cancel": job_id})
                deadline = time.monotonic() + cancel_grace
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                self.clean_after_death(targets, existed)
                raise WorkerError("cancelled; nothing was written", kind="Cancelled", cancelled=True)
            try:
                message = self.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            if message is None:
                code = self.process.wait()
                self.clean_after_death(targets, existed)
                if deadline is not None:
                    raise WorkerError("cancelled; nothing was written", kind="Cancelled", cancelled=True)
                raise WorkerDied(f"the engine's worker process {describe_exit(code)} during {op}; QGIS is not "
                                 f"affected and nothing half-written was kept. The worker's log: {self.log_path}",
                                 kind="WorkerDied", expected=False, details=_log_tail(self.log_path))
            if message.get("id") != job_id:
                continue
            event = message.get("event")
            if event == "progress" and progress is not None:
                progress(*from_plain(message.get("args") or []))
            elif event == "log" and log is not None:
                log(int(message.get("level", 20)), str(message.get("message", "")))
            elif event == "done":
                return from_plain(message.get("result"))
            elif event == "error":
                raise WorkerError(str(message.get("message")), kind=str(message.get("kind", "")),
                                  cancelled=bool(message.get("cancelled")) or deadline is not None,
                                  expected=bool(message.get("expected")), details=message.get("traceback"))

    def clean_after_death(self, targets: Sequence[Path], existed: Iterable[Path]) -> None:
        """What a dead worker left at or beside ``targets``: its temporaries (named with its process id)
        removed, a previous file it had moved aside put back, and files it created removed."""
        existed = set(existed)
        for target in targets:
            folder = target.parent
            if not folder.is_dir():
                continue
            for prefix in {f".{target.name}.{self.pid}.", f".{target.stem}.{self.pid}."}:
                for leftover in folder.glob(glob_escape(prefix) + "*"):
                    if leftover.name.endswith(".previous"):
                        os.replace(leftover, target)
                        existed.add(target)
                    elif leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
            if target not in existed and target.is_file():
                target.unlink()

    def close(self) -> None:
        """End the worker: it exits when its standard input closes."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
            self.process.wait()


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


class WorkerPool:
    """Idle workers kept per engine, so that the next job starts at once; thread-safe."""

    def __init__(self, idle: int = IDLE_WORKERS) -> None:
        self.idle_limit = idle
        self._idle: List[EngineWorker] = []
        self._lock = threading.Lock()

    def acquire(self, engine: Engine) -> EngineWorker:
        with self._lock:
            for worker in list(self._idle):
                if worker.engine == engine and worker.alive:
                    self._idle.remove(worker)
                    return worker
        return EngineWorker(engine)

    def release(self, worker: EngineWorker) -> None:
        if not worker.alive:
            worker.close()
            return
        with self._lock:
            if len(self._idle) < self.idle_limit:
                self._idle.append(worker)
                return
        worker.close()

    def shutdown(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.close()


POOL = WorkerPool()
atexit.register(POOL.shutdown)


def run_job(engine: Engine, op: str, args: Dict[str, Any], progress: Optional[Callable[..., None]] = None,
            log: Optional[Callable[[int, str], None]] = None, should_cancel: Optional[Callable[[], bool]] = None,
            outputs: Iterable[Optional[Path]] = (), cancel_grace: float = CANCEL_GRACE_S) -> Any:
    """One job on a worker of ``engine`` (an idle one, or a new one); see :meth:`EngineWorker.call`."""
    if should_cancel is not None and should_cancel():
        raise WorkerError("cancelled; nothing was written", kind="Cancelled", cancelled=True)
    worker = POOL.acquire(engine)
    try:
        return worker.call(op, args, progress, log, should_cancel, outputs, cancel_grace)
    finally:
        POOL.release(worker)


def default_python_names() -> List[str]:
    """Where an environment keeps its Python: venv and conda on Linux and macOS, venv (Scripts) and conda
    (the folder itself) on Windows."""
    if os.name == "nt":
        return ["Scripts/python.exe", "python.exe"]
    return ["bin/python3", "bin/python"]


def environment_python(environment: Path) -> Optional[Path]:
    """The Python of an environment folder (or the interpreter itself when a file is given), or None."""
    environment = Path(environment).expanduser()
    if environment.is_file():
        return environment if os.access(environment, os.X_OK) else None
    for name in default_python_names():
        candidate = environment / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None

