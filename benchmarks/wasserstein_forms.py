"""The two Wasserstein forms side by side: value and gradient size on the same batch.

"sinkhorn" is the reference's term (geomloss between each sample's joints as points in
R^(W+H)); "exact" is the closed-form 1-D W1 per visible joint and axis. Both at weight 1, on
a COCO-sized batch (17 joints, 64x48 maps, a third of the joints invisible): random maps as
an untrained model gives, and maps near their Gaussian targets as a trained one does. The
table gives each term's value and the norm of its gradient with respect to the maps; the
ratio says how much harder one pulls at the same weight.

    uv run python benchmarks/wasserstein_forms.py [--batch 32] [--seeds 3]
"""

from __future__ import annotations

import argparse

import torch

from ihl import ops
from ihl.config import LossConfig
from ihl.losses import IHLLoss

K, H, W = 17, 64, 48


def batch(size: int, seed: int, near: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Maps near their targets (a trained model) or unrelated N(0, 1) maps (an untrained one)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(size, K, 2, generator=g) * 0.8 + 0.1
    yy, xx = torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )
    d2 = (xx - centres[..., 0, None, None] * W) ** 2 + (yy - centres[..., 1, None, None] * H) ** 2
    heatmaps = torch.exp(-d2 / 8)
    noise = torch.randn(size, K, H, W, generator=g)
    z = heatmaps + 0.3 * noise.abs() if near else noise
    weights = (torch.rand(size, K, generator=g) > 1 / 3).float()
    return z, {"heatmaps": heatmaps, "weights": weights}


def term_and_grad(form: str, z: torch.Tensor, target: dict) -> tuple[float, float]:
    loss = IHLLoss(LossConfig(wasserstein=form))
    z = z.clone().requires_grad_()
    px, py = ops.sihn_marginals(z)
    value = loss.wasserstein({"marginals_x": px, "marginals_y": py}, target)
    (grad,) = torch.autograd.grad(value, z)
    return value.item(), grad.norm().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"batch {args.batch}, {K} joints, {H}x{W} maps")
    print(
        f"{'maps':>9} {'seed':>4} {'exact':>10} {'sinkhorn':>10} {'|grad| exact':>13} "
        f"{'|grad| sinkhorn':>16} {'grad ratio':>10}"
    )
    for near, seed in ((near, s) for near in (False, True) for s in range(args.seeds)):
        z, target = batch(args.batch, seed, near)
        exact, g_exact = term_and_grad("exact", z, target)
        sink, g_sink = term_and_grad("sinkhorn", z, target)
        print(
            f"{'near' if near else 'random':>9} {seed:>4} {exact:>10.4g} {sink:>10.4g} "
            f"{g_exact:>13.4g} {g_sink:>16.4g} {g_exact / g_sink:>10.1f}"
        )


if __name__ == "__main__":
    main()
