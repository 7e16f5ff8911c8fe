"""Each head, with its loss, can fit two fixed crops to within one heatmap pixel (mean error)."""

import pytest
import torch

from ihl import config
from ihl.losses import build_loss
from ihl.models import build_model

pytestmark = pytest.mark.slow

# With only two crops the flow can memorise the 34 residuals and the likelihood
# stops pulling; the Wasserstein term, weighted about one per heatmap pixel
# (normalised units x map width), keeps sharpening the implicit heatmaps.
OVERRIDES = {
    "ihl": {"loss.wasserstein_weight": 30.0},
    "integral": {},
    "heatmap": {},
}


@pytest.mark.parametrize("head", ["ihl", "integral", "heatmap"])
def test_head_overfits_two_crops(head):
    torch.manual_seed(0)
    cfg = config.load(
        "sample",
        {"model.head": head, "model.input_size": [64, 64], "model.deconv_channels": 64}
        | OVERRIDES[head],
    )
    model = build_model(cfg.model)
    loss_fn = build_loss(head, cfg.loss)
    wm, hm = cfg.model.heatmap_size
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    coords = torch.rand(2, 17, 2) * 0.6 + 0.2
    yy, xx = torch.meshgrid(torch.arange(hm), torch.arange(wm), indexing="ij")
    cx, cy = coords[..., 0, None, None] * wm, coords[..., 1, None, None] * hm
    target = {
        "coords": coords,
        "weights": torch.ones(2, 17),
        "heatmaps": torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8),
    }
    params = list(model.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for _ in range(200):
        loss = loss_fn(model(images), target)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(images)["coords"]
    error_px = ((pred - coords) * torch.tensor([wm, hm])).abs()
    assert error_px.mean() < 1.0, f"mean {error_px.mean():.2f} px, max {error_px.max():.2f} px"
