"""Read, render and preprocess source units ahead of the model, in background workers.

Two stages, each where it runs best:

- **load** (read + decode an image, or render a PDF page) runs in worker *processes*. pymupdf holds the
  GIL while it renders (measured: two threads render no faster than one) and its documentation says
  it must not be used from several threads; a page that renders forever can only be stopped by
  killing its process; and a decoder crash on a hostile file then takes down one worker, not the run.
- **preprocess** (the model's processor, e.g. ``processor.preprocess(image, keys)``) runs in a thread
  pool of this process: PIL resizes and torch ops release the GIL, and the callable need not be
  picklable.

``Prefetcher.map`` yields results in input order and keeps at most ``max_ahead`` units in flight, so
host memory stays flat however long the run. Every failure (error unit, decode error, timeout,
worker crash, preprocessing error) comes back as a value (``Prefetched.error``), never as an exception.
"""

import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import wait
from typing import Any

from PIL import Image

from .decoding import Decoded, decode_unit, error_unit, expand_file
from .sources import PageSelector, RenderSettings, SourceError, SourceFile, SourceUnit, UnitError

logger = logging.getLogger(__name__)

_READY = "ready"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# imported by each worker before it takes work, so the first task's timeout is not spent importing
DEFAULT_PRELOAD = ("PIL.Image", "pymupdf", "mova.batch.decoding")


def default_workers() -> int:
    """CPUs this process may use, at most 8 (more rarely helps one model keep up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class WorkerTimeout(Exception):
    """A call ran longer than its timeout; its worker process was killed."""


class WorkerCrashed(Exception):
    """A worker process died during a call (e.g. a segfault in a decoder)."""


# --- worker processes -----------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when its parent dies, also by SIGKILL and also before the first task.

    The pipe's EOF only tells a worker waiting for work; one still importing (start-up) would live on.
    On Linux the kernel sends SIGKILL when the parent's spawning thread ends (``PR_SET_PDEATHSIG``);
    a parent that died before that was set is seen by the parent pid having changed.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # an unusual libc: the checks below still hold
            pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _worker_main(conn, preload: tuple[str, ...], parent_pid: int) -> None:
    """Run ``fn(arg)`` for each ``(fn, arg)`` received and send back ``(ok, result or exception)``."""
    _die_with_parent(parent_pid)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # the parent handles these and then ends its workers
    for name in preload:
        importlib.import_module(name)
    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return
        fn, arg = task
        try:
            reply = (True, fn(arg))
        except Exception as exc:  # any failure of the call goes back to the caller as a value
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # the result or the exception does not pickle
            conn.send((False, RuntimeError(f"{type(exc).__name__} sending the result back: {exc}")))


def _settle(future: Future, ok: bool, payload: Any) -> None:
    if ok:
        future.set_result(payload)
    else:
        future.set_exception(payload)


@dataclass
class _Task:
    fn: Callable[[Any], Any]
    arg: Any
    timeout: float | None
    future: Future


@dataclass
class _Worker:
    process: Any
    conn: Any
    ready: bool = False
    task: _Task | None = None
    deadline: float | None = None
    done: int = 0


class WorkerPool:
    """A fixed number of worker processes running picklable calls, each with its own timeout.

    Unlike ``concurrent.futures.ProcessPoolExecutor``, one call that hangs or crashes its process fails
    only that call: the worker is killed and replaced, and the other calls go on.

    Args:
        workers: number of processes.
        max_tasks_per_worker: replace a worker after this many calls (bounds leaks in native code);
            None keeps workers for the whole run.
        start_method: ``spawn`` (default; safe beside threads, CUDA and a loaded model) or
            ``forkserver`` / ``fork``.
        preload: modules each worker imports before taking work.
    """

    def __init__(
        self,
        workers: int,
        *,
        max_tasks_per_worker: int | None = None,
        start_method: str = "spawn",
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.max_tasks_per_worker = max_tasks_per_worker
        self._context = multiprocessing.get_context(start_method)
        self._preload = preload
        self._queue: deque[_Task] = deque()
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()
        self._closing = False
        self._broken: str | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="mova-worker-pool", daemon=True)
        self._thread.start()

    # -- public API

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, timeout: float | None = None) -> Future:
        """Run ``fn(arg)`` in a worker; the future fails with ``WorkerTimeout`` after ``timeout`` seconds.

        ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one).
        """
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the worker pool is closed")
            if self._broken is not None:
                future.set_exception(WorkerCrashed(self._broken))
                return future
            self._queue.append(_Task(fn, arg, timeout, future))
        self._wake()
        return future

    def close(self) -> None:
        """Stop every worker (running calls are killed) and fail calls not yet started."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake()
        self._thread.join()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- monitor thread

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # already woken (buffer full) or closing
            pass

    def _spawn(self) -> None:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child_conn, self._preload, os.getpid()), name="mova-loader", daemon=True
        )
        process.start()
        child_conn.close()  # so the parent sees EOF when the child dies
        self._pool.append(_Worker(process, parent_conn))

    def _stop(self, worker: _Worker, *, kill: bool) -> None:
        self._pool.remove(worker)
        if kill:
            worker.process.kill()
        else:
            try:
                worker.conn.send(None)
            except OSError:
                worker.process.kill()
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()

    def _dispatch(self, settle: list[tuple[Future, bool, Any]]) -> None:
        """Give queued calls to idle workers; start workers while calls wait. Called under the lock."""
        while self._queue:
            idle = next((w for w in self._pool if w.ready and w.task is None), None)
            if idle is None:
                starting = sum(1 for w in self._pool if not w.ready)
                if len(self._pool) < self.workers and starting < len(self._queue):
                    self._spawn()
                    continue
                return
            task = self._queue.popleft()
            if not task.future.set_running_or_notify_cancel():
                continue
            try:
                idle.conn.send((task.fn, task.arg))  # pickles first, so a pickling error sends nothing
            except OSError:
                pass  # the worker just died: its EOF fails this call as a crash
            except Exception as exc:  # the call does not pickle
                settle.append((task.future, False, exc))
                continue
            idle.task = task
            idle.deadline = None if task.timeout is None else time.monotonic() + task.timeout

    def _finish(self, worker: _Worker, settle: list[tuple[Future, bool, Any]]) -> None:
        """Read one message from a worker whose connection is ready. Called under the lock."""
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._on_death(worker, settle)
            return
        except Exception as exc:  # the result does not unpickle here
            message = (False, exc)
        if message == _READY:
            worker.ready = True
            return
        task, worker.task, worker.deadline = worker.task, None, None
        worker.done += 1
        if task is not None:
            settle.append((task.future, *message))
        if self.max_tasks_per_worker is not None and worker.done >= self.max_tasks_per_worker:
            self._stop(worker, kill=False)

    def _on_death(self, worker: _Worker, settle: list[tuple[Future, bool, Any]]) -> None:
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        task, ready = worker.task, worker.ready
        self._stop(worker, kill=True)
        if task is not None:
            settle.append((task.future, False, WorkerCrashed(f"worker process died (exit code {code})")))
        elif not ready:
            # a worker that cannot even start (a failing import) would be restarted forever
            self._broken = f"worker process failed to start (exit code {code})"
            while self._queue:
                settle.append((self._queue.popleft().future, False, WorkerCrashed(self._broken)))

    def _expire(self, settle: list[tuple[Future, bool, Any]]) -> None:
        now = time.monotonic()
        for worker in [w for w in self._pool if w.deadline is not None and w.deadline <= now]:
            task = worker.task
            self._stop(worker, kill=True)
            error = WorkerTimeout(f"no result after {task.timeout:g} s; the worker was stopped")
            settle.append((task.future, False, error))

    @staticmethod
    def _flush(settle: list[tuple[Future, bool, Any]]) -> None:
        # futures are settled outside the lock: their callbacks may submit new calls
        for future, ok, payload in settle:
            _settle(future, ok, payload)
        settle.clear()

    def _run(self) -> None:
        settle: list[tuple[Future, bool, Any]] = []
        try:
            while True:
                with self._lock:
                    if self._closing:
                        break
                    self._dispatch(settle)
                    conns = {w.conn: w for w in self._pool}
                    deadlines = [w.deadline for w in self._pool if w.deadline is not None]
                self._flush(settle)
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = wait([*conns, self._wake_r], timeout)
                with self._lock:
                    for conn in ready:
                        if conn is self._wake_r:
                            self._wake_r.recv(4096)
                        else:
                            self._finish(conns[conn], settle)
                    self._expire(settle)
                self._flush(settle)
        finally:
            with self._lock:
                for worker in list(self._pool):
                    if worker.task is not None:
                        settle.append((worker.task.future, False, CancelledError()))
                    self._stop(worker, kill=worker.task is not None)
                while self._queue:
                    settle.append((self._queue.popleft().future, False, CancelledError()))
            for future, ok, payload in settle:
                if not future.done():
                    _settle(future, ok, payload)


# --- the prefetcher -------------------------------------------------------------------------------


@dataclass
class Prefetched:
    """One unit, loaded and preprocessed, or the reason it could not be.

    Attributes:
        unit: the source unit, as given.
        image: the decoded or rendered image (its own PIL mode); None on error.
        value: ``preprocess(image)``; None without a preprocess callable or on error.
        error: what went wrong, or None.
        load_seconds: time from handing the unit to a worker to having its image (includes waiting for
            a free worker).
        preprocess_seconds: time spent in ``preprocess``.
        warnings: what the decoder warned about (``decoding.Decoded.warnings``).
    """

    unit: SourceUnit
    image: Image.Image | None = None
    value: Any = None
    error: UnitError | None = None
    load_seconds: float = 0.0
    preprocess_seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the image, for the record's render fields."""
        return None if self.image is None else self.image.size


def _as_error(exc: BaseException, stage: str) -> UnitError:
    if isinstance(exc, SourceError):
        return exc.error
    if isinstance(exc, WorkerTimeout):
        return UnitError(stage, "timeout", str(exc))
    if isinstance(exc, WorkerCrashed):
        return UnitError(stage, "worker_crashed", str(exc))
    if isinstance(exc, CancelledError):
        return UnitError(stage, "cancelled", "stopped before it finished")
    return UnitError(stage, type(exc).__name__, str(exc) or type(exc).__name__)


def read_inline(unit: SourceUnit, preprocess: Callable[[Image.Image], Any] | None = None) -> Prefetched:
    """Load (and preprocess) one unit in this process, as the prefetcher's workers and threads would
    (``workers=0``: no reader process, so no timeout); it never raises."""
    if unit.error is not None:
        return Prefetched(unit, error=unit.error)
    start = time.perf_counter()
    try:
        decoded = decode_unit(unit)
    except SourceError as exc:
        return Prefetched(unit, error=exc.error)
    image, notes, load_seconds = decoded.image, decoded.warnings, time.perf_counter() - start
    if preprocess is None:
        return Prefetched(unit, image, load_seconds=load_seconds, warnings=notes)
    began = time.perf_counter()
    try:
        value = preprocess(image)
    except Exception as exc:  # the processor's failure on this image, as in the prefetcher's threads
        return Prefetched(unit, image=image, error=_as_error(exc, "preprocess"), warnings=notes)
    seconds = time.perf_counter() - began
    return Prefetched(unit, image, value, load_seconds=load_seconds, preprocess_seconds=seconds, warnings=notes)


class Prefetcher:
    """Loads (in processes) and preprocesses (in threads) units ahead of their use, in order.

    The worker processes start before the model loads (they render pages while inputs are discovered);
    the model's preprocessing is given to ``map`` once it exists.

    Args:
        workers: worker processes, and preprocessing threads (default ``default_workers()``).
        max_ahead: units in flight at most (loading, preprocessing, or done and waiting to be
            consumed); default ``2 * workers``. This bounds host memory.
        timeout: seconds one load (or one file expansion) may take; None waits forever.
        max_items_per_worker: replace a worker process after this many loads (None: never).
        load: the picklable load function: ``unit -> decoding.Decoded`` (or a plain image: tests and
            benchmarks substitute their own).
        start_method: multiprocessing start method of the workers.
        preload: modules each worker imports before its first unit (pymupdf takes seconds to import).
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        max_ahead: int | None = None,
        timeout: float | None = 120.0,
        max_items_per_worker: int | None = None,
        load: Callable[[SourceUnit], Decoded | Image.Image] = decode_unit,
        start_method: str = "spawn",
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
    ) -> None:
        self.workers = workers or default_workers()
        self.max_ahead = max_ahead or 2 * self.workers
        if self.max_ahead < 1:
            raise ValueError(f"max_ahead must be at least 1, got {self.max_ahead}")
        self.timeout = timeout
        self._load = load
        self._pool = WorkerPool(
            self.workers, max_tasks_per_worker=max_items_per_worker, start_method=start_method, preload=preload
        )
        self._threads = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mova-preprocess")

    def close(self) -> None:
        """Stop the workers and threads; units still in flight are dropped."""
        self._pool.close()
        self._threads.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ordered(self, items: Iterable[Any], start: Callable[[Any], Future]) -> Iterator[Any]:
        """Start each item, yield the results in input order, with at most ``max_ahead`` started."""
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(start(item))
                if len(pending) >= self.max_ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            # a consumer that stops early leaves at most max_ahead units to finish unseen
            pending.clear()

    def map(
        self, units: Iterable[SourceUnit], *, preprocess: Callable[[Image.Image], Any] | None = None
    ) -> Iterator[Prefetched]:
        """Load and preprocess ``units``; yield one ``Prefetched`` per unit, in input order.

        Units are pulled from ``units`` lazily, at most ``max_ahead`` ahead of the consumer.

        Args:
            preprocess: ``image -> value`` run on each loaded image in a thread (e.g. the model's
                processor for the keys known before routing); None passes the images through.
        """
        return self._ordered(units, partial(self._start, preprocess=preprocess))

    def expand(
        self, files: Iterable[SourceFile], *, settings: RenderSettings, pages: PageSelector | None = None
    ) -> Iterator[SourceUnit]:
        """``decoding.expand_file`` on each file in the workers (with the timeout), units in order.

        A file whose expansion times out or crashes its worker yields one error unit.
        """
        expand = partial(expand_file, settings=settings, pages=pages)

        def start(source: SourceFile) -> Future:
            out: Future = Future()
            if source.error is not None:
                out.set_result([error_unit(source, source.error, settings)])
                return out

            def done(future: Future) -> None:
                try:
                    out.set_result(future.result())
                except (Exception, CancelledError) as exc:
                    out.set_result([error_unit(source, _as_error(exc, "read"), settings)])

            self._pool.submit(expand, source, timeout=self.timeout).add_done_callback(done)
            return out

        for units in self._ordered(files, start):
            yield from units

    def _start(self, unit: SourceUnit, *, preprocess: Callable[[Image.Image], Any] | None) -> Future:
        """A future of the unit's ``Prefetched``; it never fails."""
        out: Future = Future()
        if unit.error is not None:
            out.set_result(Prefetched(unit, error=unit.error))
            return out
        stage = "render" if unit.kind == "pdf" else "read"
        started = time.perf_counter()

        def prepare(image: Image.Image, load_seconds: float, notes: tuple[str, ...]) -> None:
            began = time.perf_counter()
            try:
                value = preprocess(image)
            except Exception as exc:  # the processor's failure on this image (e.g. an unsupported mode)
                out.set_result(Prefetched(unit, image=image, error=_as_error(exc, "preprocess"), warnings=notes))
                return
            seconds = time.perf_counter() - began
            out.set_result(
                Prefetched(unit, image, value, load_seconds=load_seconds, preprocess_seconds=seconds, warnings=notes)
            )

        def loaded(future: Future) -> None:
            try:
                decoded = future.result()
            except (Exception, CancelledError) as exc:
                out.set_result(Prefetched(unit, error=_as_error(exc, stage)))
                return
            load_seconds = time.perf_counter() - started
            image, notes = (decoded.image, decoded.warnings) if isinstance(decoded, Decoded) else (decoded, ())
            if preprocess is None:
                out.set_result(Prefetched(unit, image, load_seconds=load_seconds, warnings=notes))
                return
            try:
                self._threads.submit(prepare, image, load_seconds, notes)
            except RuntimeError as exc:  # shut down while this unit was loading
                out.set_result(Prefetched(unit, error=_as_error(exc, "preprocess")))

        self._pool.submit(self._load, unit, timeout=self.timeout).add_done_callback(loaded)
        return out


__all__ = [
    "DEFAULT_PRELOAD",
    "Prefetched",
    "Prefetcher",
    "WorkerCrashed",
    "WorkerPool",
    "WorkerTimeout",
    "default_workers",
    "read_inline",
]
