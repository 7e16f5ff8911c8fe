"""The IHL math against brute-force float64 references and gradcheck."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from ihl import ops
from ihl.losses import RealNVP

torch.manual_seed(0)


def brute_moments(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per axis by looping over every pixel (x_j = j/W, y_i = i/H)."""
    hh, ww = h.shape
    mu = np.zeros(2)
    for i in range(hh):
        for j in range(ww):
            mu += h[i, j] * np.array([j / ww, i / hh])
    var = np.zeros(2)
    for i in range(hh):
        for j in range(ww):
            var += h[i, j] * (np.array([j / ww, i / hh]) - mu) ** 2
    return mu, var


def test_sihn_is_a_distribution_matching_the_formula():
    z = torch.randn(3, 5, 8, 6, dtype=torch.float64)
    h = ops.sihn(z)
    assert (h >= 0).all()
    torch.testing.assert_close(h.sum((-2, -1)), torch.ones(3, 5, dtype=torch.float64))
    zn = z[1, 2].numpy()
    expected = (zn - zn.min()) / (zn - zn.min()).sum()
    np.testing.assert_allclose(h[1, 2].numpy(), expected, rtol=1e-12)


def test_sihn_is_invariant_to_a_positive_temperature_and_survives_constant_maps():
    z = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(ops.sihn(z * 3.0), ops.sihn(z))
    z[0, 1] = 7.0
    h = ops.sihn(z.requires_grad_())
    torch.testing.assert_close(h[0, 1], torch.full((4, 5), 1 / 20))
    h.sum().backward()
    assert torch.isfinite(z.grad).all()
    px, py = ops.sihn_marginals(z)
    torch.testing.assert_close(px[0, 1], torch.full((5,), 1 / 5))
    torch.testing.assert_close(py[0, 1], torch.full((4,), 1 / 4))


def test_sihn_marginals_equal_marginals_of_sihn():
    z = torch.randn(4, 17, 16, 12, dtype=torch.float64)
    px, py = ops.sihn_marginals(z)
    h = ops.sihn(z)
    torch.testing.assert_close(px, h.sum(-2))
    torch.testing.assert_close(py, h.sum(-1))


def test_dsdt_matches_pixel_loop():
    h = ops.sihn(torch.randn(2, 3, 7, 9, dtype=torch.float64))
    mu, var = ops.dsdt(h)
    for b in range(2):
        for k in range(3):
            ref_mu, ref_var = brute_moments(h[b, k].numpy())
            np.testing.assert_allclose(mu[b, k].numpy(), ref_mu, rtol=1e-12)
            np.testing.assert_allclose(var[b, k].numpy(), ref_var, rtol=1e-10)


def test_dsdt_of_a_single_pixel_is_its_position_with_zero_variance():
    h = torch.zeros(1, 1, 8, 6, dtype=torch.float64)
    h[0, 0, 5, 2] = 1
    mu, var = ops.dsdt(h)
    torch.testing.assert_close(mu[0, 0], torch.tensor([2 / 6, 5 / 8], dtype=torch.float64))
    assert var.abs().max() < 1e-15


def test_marginal_wasserstein_matches_scipy_and_hand_cdf():
    p = torch.rand(6, 20, dtype=torch.float64)
    q = torch.rand(6, 20, dtype=torch.float64)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    w1 = ops.marginal_wasserstein(p, q)
    positions = np.arange(20) / 20
    for i in range(6):
        ref = wasserstein_distance(positions, positions, p[i].numpy(), q[i].numpy())
        assert w1[i].item() == pytest.approx(ref, rel=1e-10)
        cdf_gap = sum(
            abs(p[i, : j + 1].sum().item() - q[i, : j + 1].sum().item()) for j in range(20)
        )
        assert w1[i].item() == pytest.approx(cdf_gap / 20, rel=1e-10)


def test_marginal_wasserstein_of_two_diracs_is_their_distance():
    p = torch.zeros(1, 10, dtype=torch.float64)
    q = torch.zeros(1, 10, dtype=torch.float64)
    p[0, 2], q[0, 7] = 1, 1
    assert ops.marginal_wasserstein(p, q).item() == pytest.approx(0.5)


def test_debias_recovers_a_peak_on_a_flat_softmax_background():
    """exp(0) = 1 everywhere but one pixel: the softmax mean is pulled to the centre,
    debias puts it back on the peak exactly."""
    z = torch.zeros(1, 1, 16, 12, dtype=torch.float64)
    z[0, 0, 3, 10] = 4.0
    h = torch.softmax(z.flatten(-2), -1).view_as(z)
    mu, _ = ops.dsdt(h)
    assert abs(mu[0, 0, 0].item() - 10 / 12) > 0.05
    fixed = ops.debias(mu, z)
    torch.testing.assert_close(fixed[0, 0], torch.tensor([10 / 12, 3 / 16], dtype=torch.float64))


def _generative_pass(flow: RealNVP, z: torch.Tensor) -> torch.Tensor:
    """The flow's forward (sampling) direction, written independently of ops."""
    x = z
    for mask, s_net, t_net in zip(flow.masks, flow.s, flow.t, strict=True):
        kept = x * mask
        s = s_net(kept) * (1 - mask)
        t = t_net(kept) * (1 - mask)
        x = kept + (1 - mask) * (x * torch.exp(s) + t)
    return x


def test_flow_log_density_matches_explicit_inverse_pass():
    torch.manual_seed(0)
    flow = RealNVP().double()
    for m in flow.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.5)
            nn.init.normal_(m.bias, std=0.2)
    for z in torch.randn(8, 2, dtype=torch.float64):
        x = _generative_pass(flow, z)
        jac = torch.autograd.functional.jacobian(lambda v: _generative_pass(flow, v), z)
        log_prior = -0.5 * (z @ z) - math.log(2 * math.pi)
        expected = log_prior - torch.log(torch.det(jac).abs())
        got = flow.log_prob(x.unsqueeze(0))[0]
        assert got.item() == pytest.approx(expected.item(), rel=1e-7)


def test_gradcheck_ops():
    z = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ops.sihn(v), (z,))
    assert torch.autograd.gradcheck(ops.sihn_marginals, (z,))
    h = ops.sihn(torch.randn(2, 3, 5, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(ops.dsdt, (h,))
    assert torch.autograd.gradcheck(lambda v: ops.debias(ops.dsdt(ops.sihn(v))[0], v, 2.0), (z,))
    p = torch.softmax(torch.randn(4, 9, dtype=torch.float64), -1).requires_grad_()
    q = torch.softmax(torch.randn(4, 9, dtype=torch.float64), -1)
    assert torch.autograd.gradcheck(lambda v: ops.marginal_wasserstein(v, q), (p,))
    flow = RealNVP().double()
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(flow.log_prob, (x,))
