"""`mtlcheck bench --peers`: mtlcheck side by side with the real TorchJD and LibMTL. The peers'
updates are compared with ours on the same weights and batch (what is asserted: the cosine and
the documented scale conventions); timings are measurements, never asserted.

Runs only with the peers extra (pip install -e ".[peers]"); the missing-extra error always."""

import importlib.util
from importlib import metadata

import pytest

from mtlcheck.study.cli import main
from mtlcheck.study.perf import harness, peers

# a ResNet18 trunk of width 8 (176k shared parameters) on 64² images keeps the steps cheap; at 16²
# and 32² the 1×1 C5 map makes batch norm's gradients huge (~1e4-1e6 at width 64), where LibMTL's
# MGDA fails (its pair search starts from an absolute dmin = 1e8 on squared norms)
SIZE, WIDTH = 64, 8

needs_extra = pytest.mark.skipif(
    bool(peers.missing_requirements()), reason=f"the peers extra is not installed: {peers.PEERS_EXTRA}"
)


@pytest.mark.parametrize("found", [None, "0.19.0"])
def test_missing_extra_is_one_line_and_exit_2(monkeypatch, capsys, found):
    real = metadata.version

    def version(name):
        if name == "torchjd":
            if found is None:
                raise metadata.PackageNotFoundError(name)
            return found
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    assert main(["bench", "--peers", "--size", "16", "--tasks", "2", "--batch-size", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert 'pip install "mtlcheck[peers]"' in err
    assert (
        "torchjd (not installed)" if found is None else "torchjd 0.19.0 (the bench is written against 0.18.0)"
    ) in err


@pytest.fixture(scope="module")
def model_and_batch():
    return harness.model_and_batch(SIZE, 2, 3, width=WIDTH)


@needs_extra
@pytest.mark.parametrize(
    "peer, method, level",
    [
        ("mtlcheck", "imtl", "parameter"),  # ours against ours: deterministic
        ("libmtl", "ew", "parameter"),
        ("torchjd", "imtl", "parameter"),  # closed form: the same update up to TorchJD's float32 Gram
        ("libmtl", "imtl", "parameter"),
        ("libmtl", "mgda", "parameter"),
        ("libmtl", "mgda", "feature"),  # rep_grad=True: mtlcheck's feature_batch="sum"
        ("torchjd", "aligned_mtl", "parameter"),  # the mean preference: ÷T
        ("libmtl", "cagrad", "parameter"),  # no ×T
        # the stateful methods TorchJD ships, at their second step (ExcessMTL: one warm-up step)
        ("torchjd", "excess_mtl", "parameter"),
        ("torchjd", "modo", "parameter"),  # its weighting fed one batch's Gram
        ("torchjd", "sdmgrad", "parameter"),
        ("torchjd", "cr_mogm", "parameter"),  # over MGDA, our default base
    ],
)
def test_a_peer_running_the_same_method_writes_our_update(model_and_batch, peer, method, level):
    model, batch = model_and_batch
    got = peers.compare(model, batch, peer, method, level)
    # the peers' Gram, solve and combination run in float32 (ours: float64 accumulation)
    assert got["cosine"] == pytest.approx(1.0, abs=1e-9 if peer == "mtlcheck" else 1e-5)
    assert got["norm_ratio"] == pytest.approx(
        peers.expected_norm_ratio(peer, method, 3), rel=1e-9 if peer == "mtlcheck" else 1e-4
    )


@needs_extra
def test_libmtl_cagrad_fails_beyond_three_tasks():
    """A finding: LibMTL 1.1.5's CAGrad objective reshapes the weights to (1, 3), so T ≠ 3 raises."""
    model, batch = harness.model_and_batch(SIZE, 2, 2, width=WIDTH)
    with pytest.raises(ValueError, match=r"into shape \(1,3\)"):
        peers.libmtl_step(model, "cagrad", rep_grad=False)(batch)


@needs_extra
def test_table_from_one_process_per_cell(tmp_path):
    """Three processes: EW (the reference), TorchJD's CAGrad (plain scale: (1 + c²)/T of ours) and
    LibMTL's CAGrad, which fails at T = 2 and is reported as a failed cell."""
    out = tmp_path / "peers.md"
    assert (
        main(
            [
                "bench",
                "--peers",
                "--size",
                str(SIZE),
                "--tasks",
                "2",
                "--batch-size",
                "2",
                "--repeats",
                "2",
                "--threads",
                "1",
                "--width",
                str(WIDTH),
                "--methods",
                "cagrad",
                "--libraries",
                "torchjd",
                "libmtl",
                "--out",
                str(out),
                "--json",
                str(tmp_path / "peers.json"),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert text.startswith("Machine: ") and "torch threads" in text and "allocator: " in text
    assert "ResNet18 trunk of width 8" in text and "T = 2 light heads, batch 2×3×64²" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    cells = [tuple(c.strip() for c in line.strip("|").split("|")) for line in table]
    assert [c[:3] for c in cells] == [
        ("ew", "mtlcheck", "parameter"),
        ("cagrad", "torchjd", "parameter"),
        ("cagrad", "libmtl", "parameter"),
    ]
    assert all(len(c) == 7 for c in cells)
    ew, tjd, lib = cells
    assert float(ew[4]) == 1.0 and abs(float(ew[5])) <= 1e-9  # EW's memory over itself; cosine 1
    assert float(tjd[3].split()[0]) > 0 and float(tjd[4]) > 0
    assert abs(float(tjd[5])) <= 1e-5  # 1 − cos
    ratio, expected = tjd[6].split()
    assert expected == "(0.6250)" and float(ratio) == pytest.approx(0.625, rel=1e-3)
    assert lib[3].startswith("fails: ValueError: cannot reshape array of size 2 into shape (1,3)")


@needs_extra
def test_libmtl_representation_level_backpropagates_the_encoder_once_per_task():
    """A finding: with a single-tensor encoder, LibMTL's HPS keeps one representation per task
    (`self.rep` a dict), so `rep_grad=True` runs T weighted backward passes through the encoder,
    where mtlcheck's feature level (and the -UB methods' point) is one."""
    import torch

    model, batch = harness.model_and_batch(SIZE, 2, 3, width=WIDTH)
    first_conv = next(m for m in model.trunk.modules() if isinstance(m, torch.nn.Conv2d))
    passes = []
    first_conv.register_full_backward_pre_hook(lambda *args: passes.append(1))

    def count(peer, method, level):
        passes.clear()
        model.zero_grad(set_to_none=True)
        peers.make_step(model, peer, method, level)(batch)
        return len(passes)

    assert count("mtlcheck", "mgda", "feature") == 1
    assert count("libmtl", "mgda", "feature") == 3
    assert count("libmtl", "imtl", "feature") == 3
    assert count("mtlcheck", "mgda", "parameter") == 3  # T vector-Jacobian products


_quadprog = importlib.util.find_spec("qpsolvers") is not None and importlib.util.find_spec("quadprog") is not None


@needs_extra
@pytest.mark.parametrize(
    "peer, method",
    [
        ("torchjd", "config"),
        ("torchjd", "fairgrad"),  # converges on these gradients (README findings: not on a dominant task)
        ("libmtl", "gls"),
        pytest.param(
            "torchjd", "upgrad", marks=pytest.mark.skipif(not _quadprog, reason="no torchjd[quadprog-projector]")
        ),
        pytest.param(
            "torchjd", "dualproj", marks=pytest.mark.skipif(not _quadprog, reason="no torchjd[quadprog-projector]")
        ),
    ],
)
def test_a_peer_running_a_method_after_the_paper_writes_our_update(model_and_batch, peer, method):
    """On the bench's model the peers' versions write our update (float32 Gram and solve; TorchJD's
    1e-4·I in UPGrad and DualProj is small against these gradients' Gram, README findings)."""
    model, batch = model_and_batch
    got = peers.compare(model, batch, peer, method, "parameter")
    assert got["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert got["norm_ratio"] == pytest.approx(1.0, rel=1e-4)


needs_tree = pytest.mark.skipif(
    bool(peers.missing_requirements()) or not peers.libmtl_tree(),
    reason=f"set {peers.LIBMTL_TREE_ENV} to a checkout of github.com/median-research-group/LibMTL (its methods "
    "after the paper are not in its PyPI release 1.1.5), with the peers extra installed",
)


@needs_tree
@pytest.mark.parametrize("method", [m for m in peers.LIBMTL_TREE if m != "moco"])
def test_libmtl_tree_running_a_method_after_the_paper_writes_our_update(model_and_batch, method):
    """LibMTL's source tree on the bench's model: our update for each of its methods after the paper
    (the stateful ones at their second step; ExcessMTL × T, its weights summing to T)."""
    model, batch = model_and_batch
    got = peers.compare(model, batch, "libmtl", method, "parameter")
    assert got["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert got["norm_ratio"] == pytest.approx(peers.expected_norm_ratio("libmtl", method, 3), rel=1e-4)


@needs_tree
def test_libmtl_tree_moco_writes_another_update(model_and_batch):
    """README findings: LibMTL's MoCo rescales each g_i to norm L_i and takes a softmax step on λ."""
    model, batch = model_and_batch
    assert peers.compare(model, batch, "libmtl", "moco", "parameter")["cosine"] < 0.9


def test_libmtl_tree_option_names_a_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--peers", "--libmtl-tree", str(tmp_path), "--tasks", "2", "--batch-size", "2"])
    assert exc.value.code == 2
    assert "holds no LibMTL/weighting directory" in capsys.readouterr().err
