"""What a results store holds, for people: run summaries, exports, and the comparison of two stores.

`summary(record)` is one flat row per run (its spec, status, attempts, failures, last error and
timings). `export_json` writes every run in full (spec, per-seed metrics, trajectories, timings,
environment, history); `export_csv` writes one row per run with a column per metric and, next to
it, ``<name>-trajectories.csv`` in long form (key, label, seed, series, index, value).
`compare` matches the runs of two stores by key (same spec and code epoch) and lists the metrics
that differ; `explain` says whether the code, the data, the kernel settings or only the machine
differ between two runs' recorded environments, and `prediction` what that predicts.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlcheck.study.experiments.codec import encode_json
from mtlcheck.study.experiments.store import RunRecord

SPEC_COLUMNS = ("key", "benchmark", "method", "level", "seed", "budget", "steps", "config", "options")
RUN_COLUMNS = ("status", "attempts", "failures", "train_seconds", "ms_per_step", "finished", "last_error")


def last_error(record: RunRecord) -> str:
    """The last line of the stored error (the exception), or ''."""
    lines = (record.error or "").strip().splitlines()
    return lines[-1] if lines else ""


def summary(record: RunRecord) -> dict[str, Any]:
    """One flat row: the spec's fields, status, attempts, failures, timings and the last error."""
    spec, timings = record.spec, record.timings or {}
    per_step = timings.get("seconds_per_step")
    return {
        "key": record.key,
        "benchmark": spec.benchmark,
        "method": spec.method,
        "level": spec.level,
        "seed": spec.seed,
        "budget": spec.budget,
        "steps": spec.steps,
        "config": json.dumps(spec.config, sort_keys=True) if spec.config else "",
        "options": json.dumps(spec.options, sort_keys=True) if spec.options else "",
        "status": record.status,
        "attempts": record.attempts,
        "failures": record.failures,
        "train_seconds": timings.get("train_seconds"),
        "ms_per_step": None if per_step is None else per_step * 1e3,
        "finished": record.finished,
        "last_error": last_error(record),
    }


def full(record: RunRecord) -> dict[str, Any]:
    """Everything stored about a run, as JSON data."""
    return {
        "key": record.key,
        "label": record.spec.label,
        "spec": record.spec.to_dict(),
        "code_epoch": record.code_epoch,
        "status": record.status,
        "attempts": record.attempts,
        "failures": record.failures,
        "created": record.created,
        "started": record.started,
        "finished": record.finished,
        "metrics": record.metrics,
        "trajectory": record.trajectory,
        "timings": record.timings,
        "env": record.env,
        "error": record.error,
        "history": record.history,
    }


def export_json(records: Iterable[RunRecord], path: str | Path) -> Path:
    """Every run in full; NaN/inf as ``{"__float__": "nan"}`` (the store's own encoding)."""
    path = Path(path)
    path.write_text(encode_json({"runs": [full(r) for r in records]}, "export") + "\n")
    return path


def _cell(value: Any) -> Any:
    return "" if value is None else value


def export_csv(records: Iterable[RunRecord], path: str | Path) -> tuple[Path, Path]:
    """One row per run (spec, status, timings, a column per metric) at `path`, and the
    trajectories in long form at ``<stem>-trajectories.csv``; returns both paths."""
    records = list(records)
    path = Path(path)
    metrics = sorted({k for r in records for k in (r.metrics or {})})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*SPEC_COLUMNS, *RUN_COLUMNS, *metrics])
        for r in records:
            row = summary(r)
            writer.writerow(
                [_cell(row[c]) for c in (*SPEC_COLUMNS, *RUN_COLUMNS)]
                + [_cell((r.metrics or {}).get(m)) for m in metrics]
            )
    traj_path = path.with_name(f"{path.stem}-trajectories.csv")
    with traj_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label", "seed", "series", "index", "value"])
        for r in records:
            for series, values in sorted((r.trajectory or {}).items()):
                for i, value in enumerate(values):
                    writer.writerow([r.key, r.spec.label, r.spec.seed, series, i, _cell(value)])
    return path, traj_path


@dataclass
class Comparison:
    """Runs of store A and store B matched by key, and the metrics that differ by more than `tol`."""

    only_a: list[RunRecord] = field(default_factory=list)
    only_b: list[RunRecord] = field(default_factory=list)
    same: list[tuple[RunRecord, RunRecord]] = field(default_factory=list)
    different: list[tuple[RunRecord, RunRecord, dict[str, tuple[Any, Any]]]] = field(default_factory=list)
    unfinished: list[tuple[RunRecord, RunRecord]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.different


def _differs(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return not (math.isnan(a) and math.isnan(b))
        return not abs(a - b) <= tol
    return a != b


def compare(records_a: Iterable[RunRecord], records_b: Iterable[RunRecord], tol: float = 0.0) -> Comparison:
    """Match runs by key; for runs finished in both, the metrics whose values differ by more
    than `tol` (absolute; NaN equals NaN; a metric present on one side only differs)."""
    a = {r.key: r for r in records_a}
    b = {r.key: r for r in records_b}
    result = Comparison(only_a=[a[k] for k in a if k not in b], only_b=[b[k] for k in b if k not in a])
    for key in (k for k in a if k in b):
        ra, rb = a[key], b[key]
        if not (ra.is_finished and rb.is_finished):
            result.unfinished.append((ra, rb))
            continue
        ma, mb = ra.metrics or {}, rb.metrics or {}
        diffs = {m: (ma.get(m), mb.get(m)) for m in sorted(set(ma) | set(mb)) if _differs(ma.get(m), mb.get(m), tol)}
        if ra.status != rb.status:
            diffs["status"] = (ra.status, rb.status)
        (result.different.append((ra, rb, diffs)) if diffs else result.same.append((ra, rb)))
    return result


# where a recorded difference of two runs' environments comes from (`explain`)
_CODE = ("git_revision", "git_dirty", "mtlcheck", "code_epoch", "python", "torch", "numpy")
_MACHINE = ("cpu_model", "cpu_flags", "blas", "onednn", "cuda", "cudnn", "gpus", "platform")
_ENGINE_MACHINE = ("aten_capability",)
_ENGINE_SETTINGS = (
    "torch_threads",
    "mkldnn_enabled",
    "nnpack_enabled",
    "deterministic_algorithms",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "tf32_matmul",
    "tf32_cudnn",
    "kernel_env",
    "portable",
)
SOURCES = ("code", "data", "settings", "machine")


def explain(a: RunRecord, b: RunRecord) -> dict[str, list[str]]:
    """What differs between the recorded environments of two runs of one spec, by source: 'code'
    (revision, uncommitted changes, library versions), 'data' (the data root), 'settings' (the
    kernels' switches: threads, oneDNN, NNPACK, deterministic algorithms, TF32, the kernel
    environment variables) and 'machine' (CPU model and flags, ATen's capability, BLAS, oneDNN,
    GPUs); each entry reads 'name: A vs B'. Runs stored before the engine was recorded have
    'engine: not recorded' under 'settings'."""
    ea, eb = a.env or {}, b.env or {}
    ga, gb = ea.get("engine"), eb.get("engine")
    out: dict[str, list[str]] = {s: [] for s in SOURCES}

    def note(source: str, name: str, va: Any, vb: Any) -> None:
        if va != vb:
            out[source].append(f"{name}: {va!r} vs {vb!r}")

    for name in _CODE:
        note("code", name, ea.get(name), eb.get(name))
    for name in _MACHINE:
        note("machine", name, ea.get(name), eb.get(name))
    if ga is None or gb is None:
        if ga is not gb or ea.get("torch_threads") != eb.get("torch_threads"):
            out["settings"].append(
                "engine: not recorded" + (" in A" if ga is None else "") + (" in B" if gb is None else "")
            )
        return out
    note("data", "data_root", ga.get("data_root"), gb.get("data_root"))
    for name in _ENGINE_MACHINE:
        note("machine", name, ga.get(name), gb.get(name))
    for name in _ENGINE_SETTINGS:
        note("settings", name, ga.get(name), gb.get(name))
    return out


def prediction(a: RunRecord, b: RunRecord, sources: dict[str, list[str]]) -> str:
    """What the differing sources predict for the metrics of two runs of one spec."""
    portable = bool(a.spec.options.get("portable"))
    if sources["code"]:
        return "the code differs: any difference is possible"
    if sources["data"]:
        return "the data differ: any difference is possible"
    if portable:
        return (
            "portable runs: bitwise the same metrics are expected on any x86-64 CPU, so a difference here "
            "is a defect of portable mode"
        )
    if sources["machine"] or sources["settings"]:
        return (
            "default mode on other kernels: last-bit differences that training amplifies are expected "
            "(12 smoke steps of MGDA moved a metric by 4e-3 relative between ATen's AVX-512 and baseline "
            "kernels); "
            "--portable gives bitwise the same numbers"
        )
    return "nothing recorded differs: the difference is not explained by code, data, settings or machine"
