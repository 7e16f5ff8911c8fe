"""Losses: IHL's residual log-likelihood with a RealNVP flow plus the Wasserstein constraint,
and the two baselines' losses (heatmap MSE, integral L1).

Every loss takes the head's output dict and a target dict with ``coords`` (B, K, 2,
normalised like the predictions), ``weights`` (B, K) and, where needed,
``heatmaps`` (B, K, H, W Gaussians), and returns a dict of named terms whose
``loss`` entry is their sum.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ihl import ops
from ihl.config import LossConfig

_SIGMA_EPS = 1e-9
SINKHORN_DIAMETER = 2.0
"""The Sinkhorn term's bound on the distance between two of its points, given to geomloss so
that it does not measure one: its measurement reads a number from the device (a host sync)
every step and, under ``torch.compile``, breaks the graph and recompiles for each new value.
A point is a joint's two marginals (each summing to 1) times its weight (0 or 1): its norm is
at most sqrt(2), and two such non-negative vectors are at most 2 apart. geomloss starts its
annealing there instead of at the batch's bounding box; the term moves by about 1e-4 of
itself (tests/test_fidelity.py)."""


def _mlp(tanh: bool) -> nn.Sequential:
    layers = [nn.Linear(2, 64), nn.LeakyReLU(), nn.Linear(64, 64), nn.LeakyReLU(), nn.Linear(64, 2)]
    return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)


class RealNVP(nn.Module):
    """Six affine couplings on R^2 with alternating masks; learns the shape of the error density.

    ``init`` is LossConfig.flow_init: "reference" leaves the flow as the reference's head init
    does (every Linear N(0, 0.01), biases 0), "rle" as RLE's own init does.
    """

    def __init__(self, num_layers: int = 6, init: str = "reference"):
        super().__init__()
        masks = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(num_layers // 2, 1)
        self.register_buffer("masks", masks)
        self.s = nn.ModuleList(_mlp(tanh=True) for _ in range(num_layers))
        self.t = nn.ModuleList(_mlp(tanh=False) for _ in range(num_layers))
        if init not in ("reference", "rle"):
            raise ValueError(f"unknown flow init {init!r}; choose reference or rle")
        for m in self.modules():
            if not isinstance(m, nn.Linear):
                continue
            if init == "rle":
                nn.init.xavier_uniform_(m.weight, gain=0.01)
            else:
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def log_prob(self, x: Tensor) -> Tensor:
        return ops.realnvp_log_prob(x, self.masks, self.s, self.t)


def _target_marginals(target: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    hm = target["heatmaps"]
    total = hm.sum(dim=(-2, -1)).clamp_min(1e-12).unsqueeze(-1)
    return hm.sum(-2) / total, hm.sum(-1) / total


def wasserstein_active(lambda_t: int, epoch: int) -> bool:
    """The reference's lambda_t rule: the term is dropped from 0-based epoch ``lambda_t`` on when
    lambda_t is positive, and never when it is zero or negative."""
    return lambda_t <= 0 or epoch < lambda_t


class IHLLoss(nn.Module):
    """Residual log-likelihood (RLE form) plus a Wasserstein term on the heatmap marginals."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.flow = RealNVP(init=cfg.flow_init)
        self.set_epoch(0)
        if cfg.wasserstein == "sinkhorn":
            from geomloss import SamplesLoss

            self.sinkhorn = SamplesLoss(
                "sinkhorn", p=2, blur=0.05, scaling=0.5, diameter=SINKHORN_DIAMETER
            )

    def set_epoch(self, epoch: int) -> None:
        """Apply lambda_t for this 0-based epoch (``wasserstein_active``)."""
        on = self.cfg.wasserstein != "none" and self.cfg.wasserstein_weight > 0
        self.wasserstein_on = on and wasserstein_active(self.cfg.lambda_t, epoch)

    def likelihood(self, mu: Tensor, sigma: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        sigma = sigma + _SIGMA_EPS
        error = (mu - target) / sigma
        log_phi = self.flow.log_prob(error.reshape(-1, 2)).reshape(error.shape[:-1] + (1,))
        if not self.cfg.flow_per_axis:
            log_phi = log_phi / 2
        flow_term = sigma.log() - log_phi
        residual = torch.log(2 * sigma) + error.abs()
        per_axis = (flow_term + residual) * weights.unsqueeze(-1)
        return per_axis.sum() / mu.shape[0]

    def wasserstein(self, out: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        """ "exact": W1 per visible joint and axis, summed, averaged over samples. "sinkhorn": each
        sample's K joints are K points in R^(W+H) (x then y marginal, scaled by the joint's
        weight, so an invisible joint is the origin on both sides), compared as point clouds by
        geomloss' Sinkhorn divergence and averaged over samples."""
        px, py = out["marginals_x"], out["marginals_y"]
        qx, qy = _target_marginals(target)
        weights = target["weights"]
        if self.cfg.wasserstein == "exact":
            w1 = ops.marginal_wasserstein(px, qx) + ops.marginal_wasserstein(py, qy)
            return (w1 * weights).sum() / px.shape[0]
        w = weights.unsqueeze(-1).to(px.dtype)
        pred = torch.cat((px, py), -1) * w
        ref = torch.cat((qx, qy), -1).to(pred.dtype) * w
        return self.sinkhorn(pred, ref).mean()

    def forward(self, out: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = {
            "likelihood": self.likelihood(
                out["coords"], out["sigma"], target["coords"], target["weights"]
            )
        }
        if self.wasserstein_on:
            terms["wasserstein"] = self.cfg.wasserstein_weight * self.wasserstein(out, target)
        terms["loss"] = sum(terms.values())
        return terms


class HeatmapMSELoss(nn.Module):
    """SimpleBaseline's loss: half the mean squared error to Gaussian heatmaps, visible joints."""

    def forward(self, out: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
        w = target["weights"][..., None, None]
        mse = 0.5 * ((out["maps"] - target["heatmaps"]) * w).square().mean()
        return {"mse": mse, "loss": mse}


class IntegralL1Loss(nn.Module):
    """Integral regression's loss: L1 between expected and true coordinates, per visible joint."""

    def forward(self, out: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
        err = (out["coords"] - target["coords"]).abs() * target["weights"].unsqueeze(-1)
        l1 = err.sum() / err.shape[0]
        return {"l1": l1, "loss": l1}


def build_loss(head: str, cfg: LossConfig) -> nn.Module:
    if head == "ihl":
        return IHLLoss(cfg)
    if head == "heatmap":
        return HeatmapMSELoss()
    if head == "integral":
        return IntegralL1Loss()
    raise ValueError(f"unknown head {head!r}")
