"""Under autocast the expectation heads still compute marginals and moments in fp32."""

import pytest
import torch

from ihl import config, ops
from ihl.models import build_model


@pytest.mark.parametrize("head", ["ihl", "integral"])
def test_coordinates_are_fp32_sums_of_the_maps_under_bf16_autocast(head):
    torch.manual_seed(0)
    cfg = config.load("sample", {"model.head": head, "model.input_size": [64, 64]})
    model = build_model(cfg.model).eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
    assert out["coords"].dtype == torch.float32 and out["sigma"].dtype == torch.float32
    z = out["maps"].float()
    px, py = model.head.marginals(z)
    mu, var = ops.marginal_moments(px, py)
    torch.testing.assert_close(out["coords"], mu, rtol=0, atol=0)
    torch.testing.assert_close(out["sigma"], var.abs().sqrt(), rtol=0, atol=0)
