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


def _mlp(tanh: bool) -> nn.Sequential:
    layers = [nn.Linear(2, 64), nn.LeakyReLU(), nn.Linear(64, 64), nn.LeakyReLU(), nn.Linear(64, 2)]
    return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)


class RealNVP(nn.Module):
    """Six affine couplings on R^2 with alternating masks; learns the shape of the error density."""

    def __init__(self, num_layers: int = 6):
        super().__init__()
        masks = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(num_layers // 2, 1)
        self.register_buffer("masks", masks)
        self.s = nn.ModuleList(_mlp(tanh=True) for _ in range(num_layers))
        self.t = nn.ModuleList(_mlp(tanh=False) for _ in range(num_layers))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.01)

    def log_prob(self, x: Tensor) -> Tensor:
        return ops.realnvp_log_prob(x, self.masks, self.s, self.t)


def _target_marginals(target: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    hm = target["heatmaps"]
    total = hm.sum(dim=(-2, -1)).clamp_min(1e-12).unsqueeze(-1)
    return hm.sum(-2) / total, hm.sum(-1) / total


class IHLLoss(nn.Module):
    """Residual log-likelihood (RLE form) plus a Wasserstein term on the heatmap marginals."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.flow = RealNVP()
        self.set_epoch(0)
        if cfg.wasserstein == "sinkhorn":
            from geomloss import SamplesLoss

            self.sinkhorn = SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5)

    def set_epoch(self, epoch: int) -> None:
        """Apply the lambda_t switch-off: no Wasserstein term after that epoch."""
        lambda_t = self.cfg.lambda_t
        on = self.cfg.wasserstein != "none" and self.cfg.wasserstein_weight > 0
        self.wasserstein_on = on and (lambda_t < 0 or epoch <= lambda_t)

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
        px, py = out["marginals_x"], out["marginals_y"]
        qx, qy = _target_marginals(target)
        if self.cfg.wasserstein == "exact":
            w1 = ops.marginal_wasserstein(px, qx) + ops.marginal_wasserstein(py, qy)
            return (w1 * target["weights"]).sum() / px.shape[0]
        pred = torch.cat((px, py), -1)
        ref = torch.cat((qx, qy), -1).to(pred.dtype)
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
