"""Registry (built-ins, entry points, import paths) and the suites' GPU pinning (suites/conftest.py)."""

import importlib.util
import os
from importlib import metadata
from pathlib import Path

import pytest
import torch

from mtlcheck.aggregators import EW, _registry, aggregator_class, get_aggregator, list_aggregators, register_aggregator
from mtlcheck.testing import check_aggregator


def _suites_conftest():
    """A fresh copy of suites/conftest.py (the loaded one is registered under its path)."""
    spec = importlib.util.spec_from_file_location("suites_conftest_copy", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ThirdPartyMean(EW):
    """A third party's method: the mean of the task gradients."""

    def tags(self):
        return super().tags().replace(reduction="mean")

    def _weights(self, J, losses):
        n = J.n_tasks if J is not None else losses.shape[0]
        return torch.full((n,), 1.0 / n, dtype=torch.float64)


def test_entry_point_methods_are_found_and_checked(monkeypatch):
    ep = metadata.EntryPoint(
        name="third_party_mean", value=f"{__name__}:ThirdPartyMean", group=_registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(_registry.metadata, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    assert "third_party_mean" in list_aggregators()
    assert aggregator_class("third_party_mean") is ThirdPartyMean
    assert {r["status"] for r in check_aggregator(ThirdPartyMean, on_fail=None)} == {"passed"}


def test_import_path_and_errors():
    assert aggregator_class(f"{__name__}:ThirdPartyMean") is ThirdPartyMean
    with pytest.raises(ValueError, match="unknown aggregator 'nope'"):
        get_aggregator("nope")
    with pytest.raises(ValueError, match="cannot import"):
        aggregator_class("no_such_module:X")
    with pytest.raises(ValueError, match="already registered"):
        register_aggregator("ew")(ThirdPartyMean)


def test_paper_names_and_feature_aliases_live_on_the_registry(monkeypatch):
    from mtlcheck.aggregators import MGDA, level_aliases, paper_name

    assert paper_name("nash_mtl") == "Nash-MTL" and paper_name("ew") == "Baseline"
    assert paper_name("ew-mean") == "ew-mean"  # none registered: its own name
    assert level_aliases() == {"mgda_ub": ("mgda", "feature"), "aligned_mtl_ub": ("aligned_mtl", "feature")}
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    monkeypatch.setattr(_registry, "_FEATURE_ALIASES", dict(_registry._FEATURE_ALIASES))
    with pytest.raises(ValueError, match="'mgda_ub' is the feature-level alias of 'mgda'"):
        register_aggregator("mgda_ub")(ThirdPartyMean)
    with pytest.raises(ValueError, match="alias 'mgda_ub' is already"):
        register_aggregator("my_mgda", feature_alias="mgda_ub")(ThirdPartyMean)
    assert "my_mgda" not in _registry._REGISTRY  # refused before anything was registered
    with pytest.raises(ValueError, match="alias 'pcgrad' is already"):
        register_aggregator("my_mgda", feature_alias="pcgrad")(ThirdPartyMean)
    register_aggregator("mgda", paper_name="MGDA", feature_alias="mgda_ub")(MGDA)  # the same again: a no-op
    assert level_aliases()["mgda_ub"] == ("mgda", "feature")


def test_xdist_workers_are_pinned_to_one_gpu_each(monkeypatch):
    class Config:
        def addinivalue_line(self, *args):
            pass

    conftest = _suites_conftest()
    threads = torch.get_num_threads()
    try:
        for worker, expected in (("gw0", "4"), ("gw1", "6"), ("gw2", "4")):
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
            monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
            monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
            conftest.pytest_configure(Config())
            assert os.environ["CUDA_VISIBLE_DEVICES"] == expected
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
        assert conftest.pytest_xdist_auto_num_workers(None) == 3
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        assert conftest.visible_gpus() == []
    finally:
        torch.set_num_threads(threads)


@pytest.mark.gpu
@pytest.mark.parametrize("name", [n for n in list_aggregators() if not aggregator_class(n)().tags().stochastic])
def test_cuda_and_cpu_agree(name):
    """Check 23 on a GPU: float64 CUDA and CPU agree to 1e-5 relative; the output stays on the GPU."""
    from mtlcheck.testing import samplers

    G = samplers.conflicting(3, 12, torch.Generator().manual_seed(0))
    losses = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    cpu = get_aggregator(name)(G, losses).direction
    gpu = get_aggregator(name)(G.cuda(), losses.cuda()).direction
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-5, atol=1e-8 * float(cpu.norm()))
