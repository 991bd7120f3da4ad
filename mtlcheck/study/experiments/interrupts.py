"""Sweeps that stop when told, on worker processes that never outlive them.

- The first SIGINT (Ctrl-C, to the process group or to the sweep's process alone) or SIGTERM
  stops the sweep: no new run starts, every run in progress is interrupted at once and released
  to 'pending' with its last checkpoint (`ResultStore.get_or_run`), the workers are ended, and
  the command says where it stopped. It exits 130 after SIGINT and 143 after SIGTERM: 128 + the
  signal, as a shell reports a process killed by it, so that whoever sent SIGTERM (`timeout`,
  systemd, a batch scheduler) sees a termination rather than a user's Ctrl-C.
- A second signal exits at once: workers still releasing their runs are killed (the next sweep
  on this host takes those runs over from their checkpoints), and once the command is tearing
  down, the signal ends it (a shell sees 130 either way).
- A worker dies with its parent, however the parent died (SIGKILL included): at once on Linux
  (PR_SET_PDEATHSIG), within a second elsewhere (it polls its parent's pid). While it starts or
  waits for a run, Ctrl-C only tells it to start no run (the parent decides; no traceback);
  SIGTERM ends it as by default, but only once its run (if any) is released.
- A signal the sweep's process ignores (SIGINT in a job started with `cmd &` from a
  non-interactive shell, or by some schedulers) is ignored by the command and by its workers alike: it neither
  stops the sweep nor makes the workers stop starting runs. SIGTERM still stops it (unless it
  is ignored too).
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import multiprocessing.context
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

__all__ = [
    "STOP_GRACE",
    "Terminated",
    "exit_code",
    "interruptible",
    "second_signal_exits",
    "terminate_as_interrupt",
    "where_it_stopped",
    "worker_pool",
]

STOP_GRACE = 5.0
"""Seconds the runs in progress get to be released once the sweep stops; then the workers are ended."""
_LEAVE = 1.0  # seconds the workers get to leave once their runs are released
_PR_SET_PDEATHSIG = 1
_STOPPING = (signal.SIGINT, signal.SIGTERM)
_MASKS = hasattr(signal, "pthread_sigmask")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (see `terminate_as_interrupt`)."""

    exit_code = 143


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The command's exit code after `interrupt`: 143 for SIGTERM, 130 for Ctrl-C."""
    return getattr(interrupt, "exit_code", 130)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` in the main thread while the block runs (unless it is ignored)."""
    if threading.current_thread() is not threading.main_thread() or _ignored(signal.SIGTERM):
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminated)}
    try:
        yield
    finally:
        _restore(previous)


@contextlib.contextmanager
def second_signal_exits(code: int) -> Iterator[None]:
    """SIGINT or SIGTERM ends the process at once with exit `code` while the block runs (saying
    where an interrupted command stopped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = {s: signal.signal(s, lambda signum, frame: _leave(code)) for s in _STOPPING if not _ignored(s)}
    try:
        yield
    finally:
        _restore(previous)


def exit_at_next_signal(code: int) -> None:
    """From now on SIGINT or SIGTERM ends the process at once with exit `code` (after flushing):
    for a command that was interrupted and is on its way out (one that is ignored stays ignored)."""
    if threading.current_thread() is threading.main_thread():
        for signum in _STOPPING:
            if not _ignored(signum):
                signal.signal(signum, lambda signum, frame: _leave(code))


def _leave(code: int) -> None:
    for child in multiprocessing.active_children():  # a worker still starting has no parent-death signal yet
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # e.g. a reentrant write: leave all the same
            stream.flush()
    os._exit(code)


def _ignored(signum: int) -> bool:
    return signal.getsignal(signum) == signal.SIG_IGN


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


# -- the sweep's process --------------------------------------------------------------------------
@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` spawned processes running `interruptible` work. An exception out of the
    block (KeyboardInterrupt, `Terminated`, an error) stops the runs in progress, waits up to
    `STOP_GRACE` seconds for them to be released and then ends the workers; another one
    meanwhile ends them at once. The workers ignore the signals that this process ignores now."""
    context = _Spawn()
    stop, busy = context.Event(), context.Value("i", 0)
    ignored = tuple(s for s in _STOPPING if _ignored(s))
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(stop, busy, os.getpid(), ignored)
    )
    try:
        yield pool
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        started = [process for process in context.processes if process.pid is not None]
        try:  # until the runs are released (`busy` read without its lock, which a dead worker may hold)
            deadline = time.monotonic() + STOP_GRACE
            while busy.get_obj().value and time.monotonic() < deadline:
                time.sleep(0.02)
            deadline = time.monotonic() + _LEAVE  # then they report and leave (killed mid-report, one
            for process in started:  # would leave the pool waiting for the rest of its report for ever)
                process.join(max(0.0, deadline - time.monotonic()))
        finally:  # still there (e.g. still starting), or a second signal: SIGKILL
            for process in started:
                process.kill()
            for process in started:
                process.join()
        raise
    pool.shutdown()


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """Starts with SIGINT blocked (`_start_worker` unblocks it), and holds back a Ctrl-C or SIGTERM
    to its parent until it has started: either would print a traceback from its start-up (and if
    it then raises, the new worker is killed: the pool never got it). Exits at once when the pool
    lets it go."""

    def start(self) -> None:
        came: list[int] = []
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {
                s: signal.signal(s, lambda signum, _: came.append(signum)) for s in _STOPPING if not _ignored(s)
            }
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if _MASKS else None
        started = False
        try:
            super().start()
            started = True
        finally:
            try:  # a signal held back, or one landing as the mask and handlers come back, raises here
                if blocked is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                _restore(handlers)
                if came and started:  # now as it would have been
                    signal.raise_signal(came[0])
            except BaseException:  # the pool never got this worker: it would outlive the pool's queues
                if started:
                    self.kill()
                    self.join()
                raise

    def run(self) -> None:
        super().run()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)  # its results are all sent: skip tearing the interpreter down (seconds with torch)


class _Spawn(multiprocessing.context.SpawnContext):
    """The spawn context, with `_WorkerProcess`es that it keeps in `processes`."""

    def __init__(self) -> None:
        self.processes: list[_WorkerProcess] = []

    def Process(self, *args, **kwargs) -> _WorkerProcess:  # noqa: N802 - multiprocessing's name
        process = _WorkerProcess(*args, **kwargs)
        self.processes.append(process)
        return process


# -- a worker -------------------------------------------------------------------------------------
_stop = None  # the sweep's stop event
_busy = None  # the sweep's count of runs in progress (shared)
_ignoring: tuple = ()  # the signals the sweep's process ignores (SIGINT: unless `_stopped`)
_stopped = False  # the sweep stopped: the stop-watch's SIGINT is on its way
_told = False  # SIGINT, SIGTERM or the stop event came: start no run
_ending = False  # SIGTERM came: end once no run is in progress
# "idle", "counting" (updating `_busy`: a signal only takes note), "running" (a signal interrupts
# the run) or "stopping" (the run's release goes on)
_state = "idle"


def _start_worker(stop, busy, parent: int, ignoring: tuple = ()) -> None:
    global _stop, _busy, _ignoring
    _stop, _busy, _ignoring = stop, busy, tuple(ignoring)
    for signum in _STOPPING:  # SIGINT is handled all the same: the stop-watch sends it
        ignore = signum in _ignoring and signum != signal.SIGINT
        signal.signal(signum, signal.SIG_IGN if ignore else _on_signal)
    if _MASKS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C during start-up lands now
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL))
    if os.getppid() != parent:  # it died before we asked to die with it
        os._exit(1)
    threading.Thread(target=_watch, args=(stop, parent), name="mtlcheck-stop-watch", daemon=True).start()


def _on_signal(signum, frame) -> None:
    global _told, _ending, _state
    if signum in _ignoring and not _stopped:  # from outside, and ignored by the sweep's process
        return
    _told = True
    _ending = _ending or signum == signal.SIGTERM
    if _state == "running":
        _state = "stopping"  # once: a second signal does not interrupt the run's release
        raise KeyboardInterrupt
    if _state == "idle" and _ending:
        _end()


def _end() -> None:
    """Terminate as SIGTERM does by default."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def _watch(stop, parent: int) -> None:
    """Interrupts the main thread when the sweep stops; exits when the parent is gone."""
    global _stopped
    while not stop.wait(1.0):
        if os.getppid() != parent:
            os._exit(1)
    _stopped = True  # before the signal: `_on_signal` must not take it for one from outside
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        _thread.interrupt_main()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """In a worker of `worker_pool`: a run that SIGINT, SIGTERM or the sweep's stop interrupts with
    KeyboardInterrupt, raised at once if this worker was told to stop before."""
    global _state
    _state = "counting"
    _count(+1)
    try:
        _state = "running"
        if _told or (_stop is not None and _stop.is_set()):
            raise KeyboardInterrupt
        yield
    finally:
        _state = "counting"
        _count(-1)
        _state = "idle"
        if _ending:
            _end()


def _count(change: int) -> None:
    if _busy is not None:
        with _busy.get_lock():
            _busy.value += change


def where_it_stopped(location: str, specs) -> str:
    """For Ctrl-C: which of a command's `specs` are finished in the store at `location`, which
    were stopped (`RunRecord.was_interrupted`, by this process or its workers), and how to resume."""
    if not specs:
        return "Nothing was stored by this command."
    try:
        from mtlcheck.study.experiments.store import ResultStore

        store = ResultStore(location, readonly=True)
        records = [store.get(s) for s in specs]
    except Exception as exc:  # noqa: BLE001 - the message must still come out
        return f"Could not read the store {location} ({exc}); run the same command again to resume."
    finished = sum(1 for r in records if r is not None and r.is_finished)
    parts = [f"{finished} of {len(specs)} run(s) finished and stored in {location}."]
    for r in records:
        if r is not None and r.was_interrupted:
            parts.append(
                f"Stopped in {r.spec.label} ({r.key}), released "
                + (
                    "with its checkpoint: it resumes from there."
                    if store.has_checkpoint(r.key)
                    else "before its first checkpoint."
                )
            )
    parts.append("Run the same command again to resume.")
    return " ".join(parts)
