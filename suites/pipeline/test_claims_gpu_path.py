"""The GPU machine's command (`pytest suites/ --budget paper --data-root DIR`) exercised on the
CPU at smoke size: with --data-root the claim suites sweep the paper's own three benchmarks from
DIR/metagraspnet, DIR/cityscapes and DIR/nyuv2 (here the committed real-format fixtures), and
every claim still gets a verdict. A sweep of 3 × 27 smoke runs, ~2 min on 2 cores: kept in the
default run because it found a real failure (CosReg could not differentiate twice through
torchvision's RoIAlign on the MetaGraspNet model)."""

import shutil
import subprocess
import sys
from pathlib import Path

from mtlcheck.study.paper.claims import CLAIMS

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"


def test_claim_suites_run_the_papers_benchmarks_from_a_data_root(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "cityscapes", data / "cityscapes")
    shutil.copytree(FIXTURES / "nyuv2" / "nyud_mt", data / "nyuv2")
    shutil.copytree(FIXTURES / "metagraspnet", data / "metagraspnet")
    for split in ("train", "test"):
        shutil.copy(data / "metagraspnet" / "annotations.json", data / "metagraspnet" / f"{split}.json")
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "suites" / "claims"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--budget",
            "smoke",
            "--data-root",
            str(data),
            "--store",
            str(results / "runs.sqlite"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    verdicts = (results / "verdicts-smoke.md").read_text()
    assert f"{len(CLAIMS)} claims — " in verdicts and "**error**" not in verdicts
    import sqlite3

    with sqlite3.connect(results / "runs.sqlite") as db:
        benchmarks = {row[0] for row in db.execute("SELECT benchmark FROM runs")}
    assert benchmarks == {"metagraspnet", "cityscapes", "nyuv2"}
