"""Losses against hand-written computations of the formulas in ihl-method.md."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from ihl import ops
from ihl.config import LossConfig
from ihl.losses import HeatmapMSELoss, IHLLoss, IntegralL1Loss, build_loss

B, K, H, W = 3, 4, 8, 6


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, K, H, W, generator=g, dtype=torch.float64)
    px, py = ops.sihn_marginals(z)
    mu, var = ops.marginal_moments(px, py)
    out = {"maps": z, "coords": mu, "sigma": var.sqrt(), "marginals_x": px, "marginals_y": py}
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    coords = torch.rand(B, K, 2, generator=g, dtype=torch.float64)
    cx, cy = coords[..., 0, None, None] * W, coords[..., 1, None, None] * H
    heatmaps = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8)
    weights = torch.tensor([[1.0, 0, 1, 1]] * B, dtype=torch.float64)
    return out, {"coords": coords, "weights": weights, "heatmaps": heatmaps}


def _loss(**kwargs) -> IHLLoss:
    return IHLLoss(LossConfig(**kwargs)).double()


def test_likelihood_counts_the_flow_term_per_axis_like_the_reference():
    out, target = _inputs()
    loss = _loss(wasserstein="none")
    expected = 0.0
    for b in range(B):
        for k in range(K):
            sigma = out["sigma"][b, k] + 1e-9
            e = (out["coords"][b, k] - target["coords"][b, k]) / sigma
            log_g = loss.flow.log_prob(e[None])[0]
            per_joint = sum(
                math.log(sigma[a]) - log_g + math.log(2 * sigma[a]) + abs(e[a]) for a in range(2)
            )
            expected += target["weights"][b, k] * per_joint
    got = loss(out, target)
    assert got["likelihood"].item() == pytest.approx(expected.item() / B, rel=1e-10)
    assert "wasserstein" not in got


def test_flow_counted_once_per_joint_differs_by_one_log_density():
    out, target = _inputs()
    per_axis = _loss(wasserstein="none")
    once = _loss(wasserstein="none", flow_per_axis=False)
    once.load_state_dict(per_axis.state_dict())
    e = (out["coords"] - target["coords"]) / (out["sigma"] + 1e-9)
    log_g = per_axis.flow.log_prob(e.reshape(-1, 2)).reshape(B, K)
    gap = once(out, target)["loss"] - per_axis(out, target)["loss"]
    assert gap.item() == pytest.approx((log_g * target["weights"]).sum().item() / B, rel=1e-10)


def test_exact_wasserstein_term_is_the_marginal_w1():
    out, target = _inputs()
    loss = _loss(wasserstein="exact", wasserstein_weight=2.5)
    expected = 0.0
    for b in range(B):
        for k in range(K):
            hm = target["heatmaps"][b, k] / target["heatmaps"][b, k].sum()
            for pred, ref, n in (
                (out["marginals_x"], hm.sum(0), W),
                (out["marginals_y"], hm.sum(1), H),
            ):
                pos = np.arange(n) / n
                w1 = wasserstein_distance(pos, pos, pred[b, k].numpy(), ref.numpy())
                expected += target["weights"][b, k].item() * w1
    terms = loss(out, target)
    assert terms["wasserstein"].item() == pytest.approx(2.5 * expected / B, rel=1e-9)
    torch.testing.assert_close(terms["loss"], terms["likelihood"] + terms["wasserstein"])


def test_sinkhorn_form_matches_squared_distance_between_marginal_vectors():
    """With one joint, the reference's Sinkhorn term compares two single 'points' (the
    concatenated marginal vectors): the divergence is half their squared distance."""
    out, target = _inputs()
    one = {k: v[:, :1] for k, v in out.items()}
    tgt = {k: v[:, :1] for k, v in target.items()}
    loss = _loss(wasserstein="sinkhorn")
    got = loss.wasserstein(one, tgt)
    hm = tgt["heatmaps"] / tgt["heatmaps"].sum((-2, -1), keepdim=True)
    pred = torch.cat((one["marginals_x"], one["marginals_y"]), -1)
    ref = torch.cat((hm.sum(-2), hm.sum(-1)), -1)
    expected = 0.5 * (pred - ref).square().sum(-1).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


def test_lambda_t_switches_the_wasserstein_term_off_like_the_reference():
    """The reference drops the term once the 0-based epoch reaches lambda_t (if positive)."""
    out, target = _inputs()
    loss = _loss(lambda_t=5)
    loss.set_epoch(4)
    assert "wasserstein" in loss(out, target)
    loss.set_epoch(5)
    assert "wasserstein" not in loss(out, target)
    for lambda_t in (0, -1):
        never = _loss(lambda_t=lambda_t)
        never.set_epoch(10_000)
        assert "wasserstein" in never(out, target)


def test_baseline_losses():
    out, target = _inputs()
    mse = HeatmapMSELoss()(out, target)["loss"]
    w = target["weights"][..., None, None]
    manual = 0.5 * ((out["maps"] - target["heatmaps"]) ** 2 * w).sum() / (B * K * H * W)
    assert mse.item() == pytest.approx(manual.item(), rel=1e-12)
    l1 = IntegralL1Loss()(out, target)["loss"]
    manual = ((out["coords"] - target["coords"]).abs().sum(-1) * target["weights"]).sum() / B
    assert l1.item() == pytest.approx(manual.item(), rel=1e-12)
    assert isinstance(build_loss("heatmap", LossConfig()), HeatmapMSELoss)


def test_likelihood_gradients_reach_the_flow_and_the_maps():
    out, target = _inputs()
    z = out["maps"].clone().requires_grad_()
    px, py = ops.sihn_marginals(z)
    mu, var = ops.marginal_moments(px, py)
    out = {"coords": mu, "sigma": var.sqrt(), "marginals_x": px, "marginals_y": py}
    loss = _loss()
    loss(out, target)["loss"].backward()
    assert z.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss.flow.parameters())
