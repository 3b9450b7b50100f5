"""A small process pool for per-cell extraction that survives dying workers and dies with its parent.

:class:`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one
worker is killed (``BrokenProcessPool`` for every pending cell), keeps running
queued work after Ctrl-C and leaves its workers alive when the parent is
killed.  This pool:

* knows which task each worker runs, so a task whose worker dies (e.g. killed
  by the out-of-memory killer) is retried once in a fresh worker and then
  reported as lost, while the other tasks go on;
* makes workers die with the parent: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on
  Linux, plus a watchdog thread that exits when the parent process changes
  (any platform); workers ignore SIGINT, so a Ctrl-C in the terminal reaches
  the parent only, which then kills the workers and re-raises;
* on any exception in the parent (KeyboardInterrupt included) kills every
  worker at once: queued tasks are never started.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Sequence

__all__ = ["LostTask", "run_tasks", "set_parent_death_signal"]

#: Attempts per task: the first run plus one retry in a fresh worker.
MAX_ATTEMPTS = 2
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass(frozen=True)
class LostTask:
    """A task whose worker died on every attempt.

    Attributes
    ----------
    task : tuple
        The task's arguments.
    exitcodes : tuple of int
        The dead workers' exit codes (negative: killed by that signal).
    """

    task: tuple
    exitcodes: tuple

    def describe(self) -> str:
        """One line for the failures table."""
        parts = []
        for code in self.exitcodes:
            if code is not None and code < 0:
                try:
                    parts.append(signal.Signals(-code).name)
                except ValueError:
                    parts.append(f"signal {-code}")
            else:
                parts.append(f"exit code {code}")
        return (f"the worker process died while extracting this cell ({', '.join(parts)}; SIGKILL is what the "
                f"out-of-memory killer sends), on the first attempt and on the retry in a fresh worker")


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return False


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(interval)


def _worker_main(conn, fn, initializer, initargs, parent_pid: int) -> None:
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            break
        if task is None:
            break
        conn.send(fn(*task))
    conn.close()


@dataclasses.dataclass
class _Worker:
    process: Any
    conn: Any
    task: Any = None  # (index, args) while busy
    n_done: int = 0


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_tasks(fn: Callable, tasks: Sequence[tuple], n_workers: int, on_result: Callable[[Any], None],
              on_lost: Callable[[LostTask], None], initializer: Callable | None = None,
              initargs: tuple = ()) -> None:
    """Run ``fn(*task)`` for every task in ``n_workers`` worker processes.

    Parameters
    ----------
    fn : callable
        Module-level function (picklable for the spawn start method). Its
        exceptions are the caller's business: it should return, not raise.
    tasks : sequence of tuple
        Arguments of each call.
    n_workers : int
        Worker processes (at most one per task).
    on_result : callable
        Called in the parent with each return value, as results arrive.
    on_lost : callable
        Called with a :class:`LostTask` for a task whose worker died on both
        attempts; the other tasks go on.
    initializer, initargs
        Run once in each worker before its first task.

    Raises
    ------
    KeyboardInterrupt, Exception
        Whatever interrupts the parent; every worker is killed first.
    """
    pending = collections.deque((k, tuple(t), 0, ()) for k, t in enumerate(tasks))  # (index, args, attempts, codes)
    retry = collections.deque()  # tasks whose worker died: each goes to a fresh worker
    ctx = _context()
    workers: list[_Worker] = []

    def start() -> _Worker:
        parent_conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=_worker_main, daemon=True,
                              args=(child_conn, fn, initializer, initargs, os.getpid()))
        process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn)
        workers.append(worker)
        return worker

    def kill_all() -> None:
        for w in workers:
            if w.process.is_alive():
                w.process.kill()
        for w in workers:
            w.process.join(timeout=5)
            w.conn.close()

    def retire(w: _Worker) -> None:
        try:
            w.conn.send(None)
        except OSError:
            pass
        w.process.join(timeout=5)
        w.conn.close()
        workers.remove(w)

    n_workers = max(1, int(n_workers))
    startup_deaths = 0
    try:
        while True:
            for w in [w for w in workers if w.task is None and not w.process.is_alive()]:
                w.process.join()  # died without a task: at start-up (initializer) or between tasks
                w.conn.close()
                workers.remove(w)
                startup_deaths += 1
            if startup_deaths > n_workers + 3:
                raise RuntimeError("extraction worker processes exit before taking a cell; "
                                   "run with --workers 1 to see the error")
            busy = [w for w in workers if w.task is not None]
            if not busy and not pending and not retry:
                break
            target = min(n_workers, len(busy) + len(pending) + len(retry))
            while len(workers) < target:
                start()
            idle = [w for w in workers if w.task is None]
            if retry and not any(w.n_done == 0 for w in idle):
                used = [w for w in idle if w.n_done > 0]
                if used:  # replace a used idle worker by a fresh one for the retry
                    retire(used[0])
                    start()
                    idle = [w for w in workers if w.task is None]
            for w in idle:
                if retry and w.n_done == 0:
                    w.task = retry.popleft()
                elif pending:
                    w.task = pending.popleft()
                else:
                    continue
                try:
                    w.conn.send(w.task[1])
                except OSError:  # died meanwhile: noticed below through its sentinel
                    pass
            busy = [w for w in workers if w.task is not None]
            if not busy:
                continue
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for w in busy:
                if w.conn in ready:
                    try:
                        result = w.conn.recv()
                    except (EOFError, OSError):
                        result = _DIED
                    if result is not _DIED:
                        w.task, w.n_done = None, w.n_done + 1
                        on_result(result)
                        continue
                if w.process.sentinel in ready or not w.process.is_alive():
                    w.process.join()
                    index, args, attempts, codes = w.task
                    codes = codes + (w.process.exitcode,)
                    w.conn.close()
                    workers.remove(w)
                    if attempts + 1 >= MAX_ATTEMPTS:
                        on_lost(LostTask(args, codes))
                    else:
                        retry.append((index, args, attempts + 1, codes))
        for w in list(workers):
            retire(w)
    finally:
        kill_all()


_DIED = object()
