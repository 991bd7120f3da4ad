"""Subprocess helper for test_store.py: a real separate process using the results store.

Modes (all print one JSON object per line on stdout):
  sweep STORE LOG [--n N] [--epochs E] [--sleep S] [--hang-at RUN:EPOCH] [--barrier DIR --parties P]
      run N specs through `get_or_run`; each run saves a checkpoint per epoch and resumes from it.
      Events go to the LOG file (one JSON line per event, appended atomically).
  lease STORE BARRIER_DIR PARTIES RELEASE_FILE
      wait for all parties, lease the shared spec, print whether it won; the winner waits for
      RELEASE_FILE and exits without finishing (its lease is left to a dead owner).
  own STORE
      lease the shared spec and obey stdin commands: "heartbeat" (prints ok/lost), "exit".
  zygote
      import torch once, then fork one fresh worker process per stdin command
      {"cmd": "spawn", "argv": [...], "stdout": PATH} (replies {"pid": N}) and reap it on
      {"cmd": "wait", "pid": N} (replies {"pid": N, "returncode": RC}, negative for a signal).
      Each forked worker is a separate process (its own pid, its own SQLite connections) that
      the test can SIGKILL; forking only saves every worker the seconds torch takes to import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mtlcheck.study.experiments import LeaseLost, ResultStore, RunResult, RunSpec

SHARED_SPEC = RunSpec("race", "ew", seed=0, budget="smoke")


def sweep_specs(n: int) -> list[RunSpec]:
    return [
        RunSpec("toy-sweep", "ew", {"seed": 0}, seed=i, budget="smoke", extra={"epochs_test": True}) for i in range(n)
    ]


def epoch_value(seed: int, epoch: int) -> float:
    return (seed + 1) * 10.0 + epoch + 0.25


def expected_acc(seed: int, epochs: int) -> float:
    return sum(epoch_value(seed, e) for e in range(epochs))


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def log_event(path: str, **event) -> None:
    line = (json.dumps({"pid": os.getpid(), "time": time.time(), **event}) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write per line: lines from several processes never interleave
    finally:
        os.close(fd)


def wait_barrier(directory: str, name: str, parties: int, timeout: float = 120.0) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.ready").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while len(list(d.glob("*.ready"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {directory}: not all {parties} parties arrived")
        time.sleep(0.005)


def run_sweep(args: argparse.Namespace) -> None:
    import torch  # noqa: F401 - imported before the barrier so both workers start computing together

    from mtlcheck.study.experiments import environment

    environment()
    store = ResultStore(args.store)
    hang = tuple(int(x) for x in args.hang_at.split(":")) if args.hang_at else None
    specs = sweep_specs(args.n)

    def make_fn(index: int, spec: RunSpec):
        def fn(lease):
            ckpt = lease.load_checkpoint()
            start = 0 if ckpt is None else ckpt["epoch"] + 1
            acc = 0.0 if ckpt is None else ckpt["acc"]
            curve = [] if ckpt is None else list(ckpt["curve"])
            log_event(args.log, event="start", key=spec.key, index=index, start=start, attempt=lease.attempt)
            for epoch in range(start, args.epochs):
                time.sleep(args.sleep)
                acc += epoch_value(spec.seed, epoch)
                curve.append(acc)
                lease.save_checkpoint({"epoch": epoch, "acc": acc, "curve": curve})
                log_event(args.log, event="epoch", key=spec.key, index=index, epoch=epoch)
                if hang == (index, epoch) and start == 0:
                    log_event(args.log, event="hanging", key=spec.key, index=index, epoch=epoch)
                    time.sleep(600)
            log_event(args.log, event="end", key=spec.key, index=index)
            return RunResult(
                {"acc": acc, "start_epoch": float(start)}, {"acc": curve}, {"epochs_run": args.epochs - start}
            )

        return fn

    if args.barrier:
        wait_barrier(args.barrier, f"w{os.getpid()}", args.parties)
    results = {}
    for i, spec in enumerate(specs):  # first pass: take only what nobody else is computing
        record = store.get_or_run(spec, make_fn(i, spec), wait=False, poll=0.02)
        if record is not None:
            results[spec.key] = record.metrics
    for i, spec in enumerate(specs):  # second pass: wait for (or take over) the rest
        if spec.key not in results:
            results[spec.key] = store.get_or_run(spec, make_fn(i, spec), poll=0.02, timeout=120).metrics
    emit({"pid": os.getpid(), "results": results})


def run_lease(args: argparse.Namespace) -> None:
    store = ResultStore(args.store)
    wait_barrier(args.barrier, f"c{os.getpid()}", args.parties)
    lease = store.lease(SHARED_SPEC)
    emit({"pid": os.getpid(), "won": lease is not None, "owner": None if lease is None else lease.owner})
    if lease is not None:
        deadline = time.monotonic() + 120
        while not os.path.exists(args.release) and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0)  # leave the lease behind, as a crashed worker would


def run_own(args: argparse.Namespace) -> None:
    store = ResultStore(args.store)
    lease = store.lease(SHARED_SPEC)
    emit({"pid": os.getpid(), "owner": None if lease is None else lease.owner})
    for line in sys.stdin:
        command = line.strip()
        if command == "heartbeat":
            try:
                lease.heartbeat()
                emit({"heartbeat": "ok"})
            except LeaseLost as exc:
                emit({"heartbeat": "lost", "message": str(exc)})
        elif command == "exit":
            break


def run_zygote() -> None:
    import torch  # noqa: F401 - the point of the zygote: imported once, inherited by every fork

    emit({"ready": os.getpid()})
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "spawn":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the worker: fresh stdin/stdout, then the requested mode
                code = 0
                try:
                    devnull = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(devnull, 0)
                    out = os.open(command["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(out, 1)
                    main(command["argv"])
                except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            emit({"pid": pid})
        elif command["cmd"] == "wait":
            _, status = os.waitpid(command["pid"], 0)
            emit({"pid": command["pid"], "returncode": os.waitstatus_to_exitcode(status)})
        else:
            raise ValueError(f"unknown zygote command {command!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("sweep")
    p.add_argument("store")
    p.add_argument("log")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sleep", type=float, default=0.05)
    p.add_argument("--hang-at", default=None)
    p.add_argument("--barrier", default=None)
    p.add_argument("--parties", type=int, default=1)
    p = sub.add_parser("lease")
    p.add_argument("store")
    p.add_argument("barrier")
    p.add_argument("parties", type=int)
    p.add_argument("release")
    p = sub.add_parser("own")
    p.add_argument("store")
    sub.add_parser("zygote")
    args = parser.parse_args(argv)
    if args.mode == "zygote":
        run_zygote()
    else:
        {"sweep": run_sweep, "lease": run_lease, "own": run_own}[args.mode](args)


if __name__ == "__main__":
    main()
