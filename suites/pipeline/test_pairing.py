"""Runs that share a seed are paired: whatever the method and the gradient level, they start from
the same initial model, see the same batches in the same order, and draw the same training
randomness (e.g. the MetaGraspNet model's proposal sampling) at every step. Paired per-seed
differences between methods then measure the methods, not the luck of the draw. Checked on
every benchmark: the two embedded ones and the paper's three read from the real-format fixtures.

The first steps of each run are recorded by wrapping the engine's step, which the training loop
calls once per step, and the run is stopped after them."""

import shutil
from pathlib import Path

import pytest
import torch

import mtlcheck.study.training as training
from mtlcheck.models import map_tensors
from mtlcheck.study.experiments.runner import Where, execute, make_spec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ENGINE_STEP = training.backward_step
STEPS = 3
# one method per code path of the step: loss-only, loss-only with a forward after the update
# (FAMO), a solver at the feature level, and second order (CosReg's double backprop)
RUNS = (("ew", "parameter"), ("famo", "parameter"), ("mgda", "feature"), ("cosreg", "parameter"))


class _Stop(Exception):
    pass


def _tensors(obj) -> list[torch.Tensor]:
    out = []
    map_tensors(obj, lambda t: out.append(t.detach().clone()) or t)
    return out


def _first_steps(monkeypatch, benchmark: str, method: str, level: str, seed: int, where: Where) -> dict:
    seen = {"batches": [], "rng": []}

    def recording_step(model, batch, *args, **kwargs):
        if not seen["batches"]:
            seen["init"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        seen["batches"].append(_tensors(batch))
        seen["rng"].append(torch.get_rng_state())
        if len(seen["batches"]) > STEPS:
            raise _Stop
        return ENGINE_STEP(model, batch, *args, **kwargs)

    monkeypatch.setattr(training, "backward_step", recording_step)
    with pytest.raises(_Stop):
        execute(make_spec(benchmark, method, level=level, seed=seed, budget="smoke", steps=STEPS + 1), where)
    return seen


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(FIXTURES / "cityscapes", root / "cityscapes")
    shutil.copytree(FIXTURES / "nyuv2" / "nyud_mt", root / "nyuv2")
    shutil.copytree(FIXTURES / "metagraspnet", root / "metagraspnet")
    for split in ("train", "test"):
        shutil.copy(root / "metagraspnet" / "annotations.json", root / "metagraspnet" / f"{split}.json")
    return root


@pytest.mark.parametrize(
    "benchmark", ["digits-dense", "digits-instance", "digits-nyu", "cityscapes", "nyuv2", "metagraspnet"]
)
def test_runs_with_one_seed_share_init_batches_and_randomness(monkeypatch, data_root, benchmark):
    torch.set_num_threads(1)
    where = Where(data_root=None if benchmark.startswith("digits") else str(data_root / benchmark))
    runs = {(m, lv): _first_steps(monkeypatch, benchmark, m, lv, 0, where) for m, lv in RUNS}
    (ref_key, ref), *others = runs.items()
    for key, run in others:
        assert run["init"].keys() == ref["init"].keys()
        for name, value in ref["init"].items():
            assert torch.equal(run["init"][name], value), (
                f"{benchmark}: {key} and {ref_key} start from different {name}"
            )
        for k in range(STEPS + 1):
            assert _equal(run["batches"][k], ref["batches"][k]), f"{benchmark}: {key} and {ref_key} differ in batch {k}"
            assert torch.equal(run["rng"][k], ref["rng"][k]), (
                f"{benchmark}: {key} and {ref_key} draw different randomness at step {k}"
            )
    other_seed = _first_steps(monkeypatch, benchmark, "ew", "parameter", 1, where)
    assert any(not torch.equal(other_seed["init"][n], v) for n, v in ref["init"].items() if v.is_floating_point()), (
        f"{benchmark}: seeds 0 and 1 start from the same model"
    )
    assert not all(torch.equal(a, b) for a, b in zip(other_seed["rng"], ref["rng"]))
    if benchmark.startswith("digits"):  # 64 training scenes: two seeds' first batches differ
        assert not _equal(other_seed["batches"][0], ref["batches"][0])
