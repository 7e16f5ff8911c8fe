"""Heads that turn backbone features into K joint maps, and what each makes of them.

All three share the map-producing layers (SimpleBaseline's deconvolutions for
ResNet, a 1x1 convolution for HRNet), so side-by-side studies differ only in how
the maps become coordinates and in the loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ihl import ops


class MapHead(nn.Module):
    """Deconvolutions (4x4, stride 2, BN, ReLU) then a 1x1 convolution to one map per joint."""

    def __init__(self, in_channels: int, num_joints: int, deconv_layers: int, deconv_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(deconv_layers):
            layers += [
                nn.ConvTranspose2d(
                    in_channels, deconv_channels, 4, stride=2, padding=1, bias=False
                ),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(in_channels, num_joints, 1)
        if deconv_layers:
            # SimpleBaseline's init, as the reference's deconvolution head has it. Without
            # deconvolutions (HRNet) the reference's 1x1 layer keeps PyTorch's default init: under
            # SIHN's scale invariance N(0, 0.001) would make early steps ~100x larger.
            for m in self.modules():
                if isinstance(m, nn.ConvTranspose2d | nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.001)
                if isinstance(m, nn.Conv2d):
                    nn.init.zeros_(m.bias)

    def maps(self, features: Tensor) -> Tensor:
        return self.final_layer(self.deconv_layers(features))


class ExpectationHead(MapHead):
    """Maps become distributions whose per-axis mean is the joint and whose spread is sigma."""

    def __init__(
        self,
        *args,
        beta: float = 1.0,
        debias: bool = False,
        debias_form: str = "reference",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if debias_form not in ops.DEBIAS:
            raise ValueError(f"unknown debias form {debias_form!r}; choose from {list(ops.DEBIAS)}")
        self.beta, self.debias, self.debias_form = beta, debias, debias_form

    def marginals(self, z: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        # Under autocast the maps come out in bf16/fp16, and autocast would run the
        # moments' matmul in half precision too: bf16 keeps 8 significant bits, so a
        # coordinate would be rounded to about 1/256 of the map. The sums run in fp32.
        z = self.maps(features)
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            px, py = self.marginals(z)
            mu, var = ops.marginal_moments(px, py)
            if self.debias:
                mu = ops.DEBIAS[self.debias_form](mu, z, self.beta)
        return {
            "maps": z,
            "coords": mu,
            "sigma": var.abs().sqrt(),
            "marginals_x": px,
            "marginals_y": py,
        }


class IHLHead(ExpectationHead):
    """Implicit heatmaps: SIHN, then DSDT gives each joint's position (mu) and scale (sigma).

    Only the marginals are formed: DSDT and the Wasserstein term need nothing else.
    """

    def marginals(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return ops.sihn_marginals(z)

    def heatmap(self, z: Tensor) -> Tensor:
        return ops.sihn(z)


class IntegralHead(ExpectationHead):
    """Plain integral regression: softmax over the map, coordinates as its expectation."""

    def marginals(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = self.heatmap(z)
        return h.sum(-2), h.sum(-1)

    def heatmap(self, z: Tensor) -> Tensor:
        return torch.softmax(z.flatten(-2) * self.beta, -1).view_as(z)


class HeatmapHead(MapHead):
    """SimpleBaseline: the maps regress Gaussian heatmaps; coordinates come from their argmax."""

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        z = self.maps(features)
        out = {"maps": z}
        if not self.training:
            out["coords"], out["maxvals"] = argmax_refined(z)
        return out

    def heatmap(self, z: Tensor) -> Tensor:
        return z


@torch.no_grad()
def argmax_refined(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Argmax of each map moved a quarter pixel toward the higher neighbour, normalised to the grid.

    Returns coords (..., 2) on the x_j = j / W grid and the peak values (...).
    """
    h, w = maps.shape[-2:]
    flat = maps.flatten(-2)
    maxvals, idx = flat.max(-1)
    x, y = (idx % w).float(), (idx // w).float()
    xi, yi = idx % w, idx // w

    def neighbour_diff(step_idx: Tensor, valid: Tensor) -> Tensor:
        diff = flat.gather(-1, step_idx.clamp(0, h * w - 1).unsqueeze(-1)).squeeze(-1)
        return torch.where(valid, diff, torch.zeros_like(diff))

    inside_x = (xi > 0) & (xi < w - 1)
    inside_y = (yi > 0) & (yi < h - 1)
    dx = neighbour_diff(idx + 1, inside_x) - neighbour_diff(idx - 1, inside_x)
    dy = neighbour_diff(idx + w, inside_y) - neighbour_diff(idx - w, inside_y)
    x = x + 0.25 * torch.sign(dx)
    y = y + 0.25 * torch.sign(dy)
    return torch.stack((x / w, y / h), -1), maxvals


HEADS = {"ihl": IHLHead, "integral": IntegralHead, "heatmap": HeatmapHead}
