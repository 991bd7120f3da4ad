"""The twice-differentiable multi-scale RoIAlign: torchvision's values and gradients, plus the
double backward torchvision lacks (CosReg's penalty differentiates through the RoI heads)."""

import torch
from torch.autograd import gradcheck, gradgradcheck
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align

from mtlcheck.study.models.roi_align import TwiceDifferentiableMultiScaleRoIAlign, roi_align


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


ROIS = torch.tensor([[0, 1.0, 1.5, 6.0, 5.0], [1, 0.5, 0.5, 3.0, 7.0], [0, 2.0, 2.0, 4.0, 4.0]], dtype=torch.float64)


def test_values_gradients_and_second_derivatives():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=gen(), requires_grad=True)

    def f(x):
        return roi_align(x, ROIS, (3, 3), 0.5, 2)

    assert torch.equal(f(x), tv_roi_align(x, ROIS, (3, 3), 0.5, 2))
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))  # torchvision: "double backwards on roi_align not supported"


def test_multi_scale_pooling_equals_torchvisions_on_every_level():
    feats = {
        k: torch.randn(2, 4, s, s, dtype=torch.float64, generator=gen(i), requires_grad=True)
        for i, (k, s) in enumerate([("0", 32), ("1", 16), ("2", 8), ("3", 4)])
    }
    boxes = [
        torch.tensor([[1.0, 1.0, 9.0, 9.0], [5.0, 5.0, 120.0, 110.0]], dtype=torch.float64),
        torch.tensor([[0.0, 0.0, 127.0, 127.0], [10.0, 20.0, 40.0, 60.0]], dtype=torch.float64),
    ]
    shapes = [(128, 128), (128, 128)]
    ours = TwiceDifferentiableMultiScaleRoIAlign(list(feats), 5, 2)
    theirs = MultiScaleRoIAlign(list(feats), 5, 2)
    a, b = ours(feats, boxes, shapes), theirs(feats, boxes, shapes)
    assert len(set(ours.map_levels(boxes).tolist())) >= 2  # the boxes really use several levels
    assert torch.equal(a, b)
    w = torch.randn(a.shape, dtype=torch.float64, generator=gen(9))
    ga = torch.autograd.grad((a * w).sum(), list(feats.values()))
    gb = torch.autograd.grad((b * w).sum(), list(feats.values()))
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))
    # second order: for L = ‖A x‖², ∇L = 2AᵀA x and Σ_j ∇L_j has gradient 2AᵀA 1, which torchvision's
    # first-order kernels give as Aᵀ(A 1)
    x = list(feats.values())
    grad_L = torch.autograd.grad((ours(feats, boxes, shapes) ** 2).sum(), x, create_graph=True)
    second = torch.autograd.grad(sum(g.sum() for g in grad_L), x)
    ones = {k: torch.ones_like(v) for k, v in feats.items()}
    a_ones = theirs(ones, boxes, shapes).detach()
    expected = torch.autograd.grad((theirs(feats, boxes, shapes) * 2 * a_ones).sum(), x)
    assert all(torch.allclose(s, e, rtol=1e-12, atol=1e-12) for s, e in zip(second, expected))
    assert any(float(e.abs().max()) > 0 for e in expected)
