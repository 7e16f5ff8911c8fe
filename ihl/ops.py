"""The IHL math as plain tensor functions (ihl-method.md sections 2 to 5).

Shapes: a joint map is the last two dimensions (..., H, W); coordinates are
normalised to the crop, column j at x_j = j / W and row i at y_i = i / H, and
come out as (..., 2) in (x, y) order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

_TINY = 1e-12


def _shifted(z: Tensor) -> Tensor:
    flat = z.flatten(-2)
    return (flat - flat.min(dim=-1, keepdim=True).values).view_as(z)


def sihn(z: Tensor) -> Tensor:
    """Simple Implicit Heatmap Normalisation: shift each map to a zero minimum, divide by its sum.

    SIHN is invariant to a positive temperature beta on z, so beta has no
    argument here (it enters only ``debias``). A constant map has a zero sum (the
    reference divides by it); it becomes the uniform distribution instead of NaN.
    """
    shifted = _shifted(z)
    total = shifted.sum(dim=(-2, -1), keepdim=True)
    uniform = torch.full_like(shifted, 1.0 / (z.shape[-1] * z.shape[-2]))
    return torch.where(total > _TINY, shifted / total.clamp_min(_TINY), uniform)


def sihn_marginals(z: Tensor) -> tuple[Tensor, Tensor]:
    """The x- and y-marginals of ``sihn(z)`` without materialising the normalised map.

    Training needs only the marginals (DSDT and the Wasserstein term), so this
    path keeps no full-size tensor for the backward pass.
    """
    shifted = _shifted(z)
    px, py = shifted.sum(dim=-2), shifted.sum(dim=-1)
    total = px.sum(dim=-1, keepdim=True)
    ok = total > _TINY
    safe = total.clamp_min(_TINY)
    px = torch.where(ok, px / safe, torch.full_like(px, 1.0 / px.shape[-1]))
    py = torch.where(ok, py / safe, torch.full_like(py, 1.0 / py.shape[-1]))
    return px, py


def grid(size: int, like: Tensor) -> Tensor:
    """Normalised bin positions 0, 1/size, ..., (size-1)/size."""
    return torch.arange(size, device=like.device, dtype=like.dtype) / size


def marginal_moments(px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance per axis from the x-marginal (..., W) and y-marginal (..., H)."""
    gx, gy = grid(px.shape[-1], px), grid(py.shape[-1], py)
    mu_x, mu_y = px @ gx, py @ gy
    var_x = (px * (gx - mu_x.unsqueeze(-1)).square()).sum(-1)
    var_y = (py * (gy - mu_y.unsqueeze(-1)).square()).sum(-1)
    return torch.stack((mu_x, mu_y), -1), torch.stack((var_x, var_y), -1)


def dsdt(h: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable Spatial-to-Distributive Transform: (mu, var) of a normalised map, per axis.

    The 2-D sums factor through the marginals, so nothing of map size is repeated.
    """
    return marginal_moments(h.sum(dim=-2), h.sum(dim=-1))


def debias(mu: Tensor, z: Tensor, beta: float = 1.0) -> Tensor:
    """Gu et al. (ICCV 2021) correction of the expectation for a uniform background.

    With C = sum exp(beta z) over the H*W pixels, a background of exp(0) = 1 per
    pixel pulls the expectation toward the grid centre c by a share H*W/C;
    removing it gives (r mu - c) / (r - 1) with r = C / (H*W).
    """
    h, w = z.shape[-2:]
    log_r = torch.logsumexp(z.flatten(-2) * beta, dim=-1) - math.log(h * w)
    r = log_r.exp().unsqueeze(-1)
    centre = torch.tensor([(w - 1) / (2 * w), (h - 1) / (2 * h)], dtype=mu.dtype, device=mu.device)
    return (r * mu - centre) / torch.expm1(log_r).unsqueeze(-1).clamp_min(1e-6)


def debias_reference(mu: Tensor, z: Tensor, beta: float = 1.0) -> Tensor:
    """The reference head's debias: C / (C - 1) * (mu - 1 / (2C)) on both axes.

    C is the sum of exp(z) over the map, without beta (the reference leaves beta out of it).
    Computed from 1/C = exp(-logsumexp(z)) so a large C does not overflow.
    """
    neg_log_c = -torch.logsumexp(z.flatten(-2), dim=-1).unsqueeze(-1)
    return (mu - neg_log_c.exp() / 2) / -torch.expm1(neg_log_c)


DEBIAS = {"reference": debias_reference, "gu": debias}
"""ModelConfig.debias_form -> the correction applied to the SIHN expectation."""


def marginal_wasserstein(p: Tensor, q: Tensor) -> Tensor:
    """Exact 1-Wasserstein distance between 1-D distributions on the normalised grid.

    p and q are (..., N) histograms summing to one over bins of width 1/N; in one
    dimension W1 is the L1 distance between the two CDFs times the bin width. Both
    CDFs reach one at the last bin, which is left out (it adds nothing but a kink).
    """
    return (p.cumsum(-1) - q.cumsum(-1))[..., :-1].abs().sum(-1) / p.shape[-1]


def realnvp_log_prob(
    x: Tensor,
    masks: Tensor,
    scale_nets: Sequence[nn.Module],
    translate_nets: Sequence[nn.Module],
) -> Tensor:
    """Log-density of a RealNVP flow with a standard normal prior, at points x (..., D).

    The generative direction applies coupling layers 0..L-1 as
    y = m*x + (1-m)*(x*exp(s(m*x)) + t(m*x)); the density needs the inverse, so
    the layers are undone from the last to the first, accumulating -sum(s).
    """
    z = x
    log_det = x.new_zeros(x.shape[:-1])
    for mask, s_net, t_net in reversed(list(zip(masks, scale_nets, translate_nets, strict=True))):
        kept = z * mask
        s = s_net(kept) * (1 - mask)
        t = t_net(kept) * (1 - mask)
        z = kept + (1 - mask) * (z - t) * torch.exp(-s)
        log_det = log_det - s.sum(-1)
    prior = -0.5 * (z.square().sum(-1) + z.shape[-1] * math.log(2 * math.pi))
    return prior + log_det
