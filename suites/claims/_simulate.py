"""Simulated studies for the calibration tests: in-memory run records of the MetaGraspNet-like
digits-instance benchmark (six metrics, higher is better) whose true means are chosen.

Every run's metric = true mean of its (method, level) + a seed effect shared by every run of that
seed (same initialisation and data order, so it cancels in a paired difference) + independent
noise. The end-of-training measures (GDS, GMS, FD) follow the same model; the trajectory is flat
at that value, so its last-points mean is exactly it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from mtlcheck.study.benchmarks import get_benchmark
from mtlcheck.study.experiments.runner import make_spec
from mtlcheck.study.experiments.spec import CODE_EPOCH
from mtlcheck.study.experiments.store import RunRecord

BENCH = "digits-instance"
METRICS = tuple(m.key for m in get_benchmark(BENCH).metrics)
LABELS = {m.key: m.label for m in get_benchmark(BENCH).metrics}
MEASURE_KEYS = ("gds", "gms", "fd")
# Methods of the simulated studies: enough for every claim on Tables 1, 4, 5 and Figure 5's FD.
PARAMETER = (
    "ew",
    "pcgrad",
    "gradvac",
    "graddrop",
    "rgw",
    "mgda",
    "cagrad",
    "aligned_mtl",
    "uncertainty",
    "imtl",
    "famo",
    "rlw",
    "dwa",
    "cosreg",
)
FEATURE = ("pcgrad", "gradvac", "graddrop", "rgw", "mgda", "cagrad", "aligned_mtl", "imtl", "cosreg")
ROWS = tuple((m, "parameter") for m in PARAMETER) + tuple((m, "feature") for m in FEATURE)

SEED_SD = 0.05  # seed-to-seed spread shared by every method (cancels when paired)
NOISE_SD = 0.002  # independent run-to-run noise: the paired difference has sd NOISE_SD·√2
BASE_METRIC = 0.5
BASE_MEASURES = {"gds": 0.1, "gms": 0.8, "fd": 0.5}


@functools.cache
def _spec(method: str, level: str, seed: int, bench: str = BENCH):
    return make_spec(bench, method, level=level, seed=seed, budget="smoke")


def record(method: str, level: str, seed: int, metrics: dict, trajectory: dict, bench: str = BENCH) -> RunRecord:
    """A done run record in memory (what the store would return)."""
    spec = _spec(method, level, seed, bench)
    return RunRecord(
        key=f"{bench}-{method}-{level}-{seed}",
        spec=spec,
        code_epoch=CODE_EPOCH,
        status="done",
        owner=None,
        heartbeat=None,
        attempts=1,
        failures=0,
        created=0.0,
        started=0.0,
        finished=0.0,
        metrics=metrics,
        trajectory=trajectory,
        env=None,
        timings={},
        error=None,
        history=[],
    )


def _record(method: str, level: str, seed: int, metrics: dict, measures: dict) -> RunRecord:
    traj = {"step": [0, 3, 6, 9], **{k: [float(v)] * 4 for k, v in measures.items()}}
    return record(method, level, seed, metrics, traj)


def simulate(
    rng: np.random.Generator,
    n_seeds: int,
    effects: Mapping[tuple[str, str], float] | None = None,
    rows=ROWS,
    noise_sd: float | Mapping[tuple[str, str], float] = NOISE_SD,
    measure_effects: Mapping[tuple[str, str], float] | None = None,
    loadings: Mapping[tuple[str, str], float] | None = None,
    tails: str = "normal",
    collapse: tuple[tuple[str, str], int, float] | None = None,
) -> list[RunRecord]:
    """One simulated study: `effects[(method, level)]` is added to the true mean of every metric of
    that row (0 for rows not named: equal to the baseline up to noise); `noise_sd` is the run noise
    of every row, or per row ({(method, level): sd}); `measure_effects[(method, level)]` is added to
    the true GDS, GMS and FD of that row (0 by default). `loadings[(method, level)]`: how strongly the
    row responds to the seed effect (1 by default: one additive seed effect shared by every row);
    `tails`: "normal" or "t3" (run noise from Student's t with 3 df, scaled to sd `noise_sd`);
    `collapse` = (row, seed, shift): that one run's values moved by `shift` (a collapsed run)."""
    effects = dict(effects or {})
    seed_metric = rng.normal(0.0, SEED_SD, size=(n_seeds, len(METRICS)))
    seed_measure = rng.normal(0.0, SEED_SD, size=(n_seeds, len(MEASURE_KEYS)))

    def noise(sd: float, size: int) -> np.ndarray:
        if tails == "t3":
            return sd * rng.standard_t(3, size=size) / np.sqrt(3.0)  # t3 has variance 3
        return rng.normal(0.0, sd, size=size)

    records = []
    for method, level in rows:
        shift = effects.get((method, level), 0.0)
        sd = noise_sd[(method, level)] if isinstance(noise_sd, Mapping) else noise_sd
        lam = 1.0 if loadings is None else loadings.get((method, level), 1.0)
        for s in range(n_seeds):
            jump = collapse[2] if collapse is not None and collapse[:2] == ((method, level), s) else 0.0
            m = BASE_METRIC + shift + jump + lam * seed_metric[s] + noise(sd, len(METRICS))
            g = (
                np.array([BASE_MEASURES[k] for k in MEASURE_KEYS])
                + (measure_effects or {}).get((method, level), 0.0)
                + jump
                + lam * seed_measure[s]
                + noise(sd, len(MEASURE_KEYS))
            )
            records.append(
                _record(method, level, s, dict(zip(METRICS, map(float, m))), dict(zip(MEASURE_KEYS, map(float, g))))
            )
    return records
