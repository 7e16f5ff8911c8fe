"""Flip test, decoding to crop pixels and keypoint scores."""

import pytest
import torch

from ihl import config
from ihl.data.keypoints import COCO
from ihl.inference import (
    predict_crops,
    sigma_scores,
    to_crop_pixels,
    unflip_coords,
    unflip_maps,
)
from ihl.models import build_model
from ihl.models.heads import argmax_refined

FLIP = list(COCO.flip_index)


def test_unflip_coords_is_the_exact_pixel_mirror_with_shift():
    """A joint at input pixel u sits at W-1-u in the mirrored crop; unflipping gives u back."""
    width, height = 192, 256
    pixels = torch.rand(1, 17, 2) * torch.tensor([width - 1, height - 1])
    mirrored = pixels.clone()
    mirrored[..., 0] = width - 1 - pixels[..., 0]
    mirrored = mirrored[:, FLIP]
    normalised = mirrored / torch.tensor([width, height])
    back = unflip_coords(normalised, FLIP, width, shift=True)
    torch.testing.assert_close(to_crop_pixels(back, (width, height)), pixels)
    no_shift = unflip_coords(normalised, FLIP, width, shift=False)
    assert torch.allclose(no_shift[..., 0] - back[..., 0], torch.tensor(1 / width))


def test_unflip_maps_mirrors_and_swaps_channels():
    maps = torch.zeros(1, 17, 8, 6)
    maps[0, 5, 2, 1] = 1.0  # left shoulder at column 1 of the mirrored crop
    back = unflip_maps(maps, FLIP, shift=False)
    assert back[0, 6, 2, 4] == 1.0  # right shoulder, column 6 - 1 - 1
    shifted = unflip_maps(maps, FLIP, shift=True)
    assert shifted[0, 6, 2, 5] == 1.0


def test_argmax_refined_moves_a_quarter_pixel_toward_the_higher_neighbour():
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 2, 2] = 1.0
    maps[0, 0, 2, 3] = 0.5
    maps[0, 0, 1, 2] = 0.3
    coords, maxvals = argmax_refined(maps)
    torch.testing.assert_close(coords[0, 0], torch.tensor([2.25 / 5, 1.75 / 5]))
    assert maxvals.item() == 1.0


def test_sigma_scores_fall_as_sigma_grows():
    sigma = torch.tensor([[0.001, 0.001], [0.01, 0.01], [0.05, 0.02], [0.2, 0.2]])
    scores = sigma_scores(sigma, tolerance=0.02)
    assert ((scores > 0) & (scores <= 1)).all()
    assert (scores[:-1] > scores[1:]).all()
    assert scores[0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("head", ["ihl", "integral", "heatmap"])
def test_predict_crops_flip_test_averages_both_views(head):
    overrides = {
        "model.head": head,
        "model.input_size": [64, 64],
        "test.flip": True,
        "test.keypoint_score": "reference",
    }
    cfg = config.load("sample", overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    plain = predict_crops(model, images, cfg.test.model_copy(update={"flip": False}), FLIP)
    flipped = predict_crops(model, images, cfg.test, FLIP)
    assert flipped.coords.shape == (2, 17, 2)
    if head != "heatmap":
        mirrored = predict_crops(
            model, images.flip(-1), cfg.test.model_copy(update={"flip": False}), FLIP
        )
        expected = (plain.coords + unflip_coords(mirrored.coords, FLIP, 64, True)) / 2
        torch.testing.assert_close(flipped.coords, expected)
        assert (flipped.scores == 1).all()
    else:
        assert ((flipped.scores >= 0) & (flipped.scores <= 1)).all()


def test_sigma_keypoint_scores_are_selectable():
    overrides = {
        "model.input_size": [64, 64],
        "test.keypoint_score": "sigma",
        "test.sigma_score_tolerance": 0.05,
    }
    cfg = config.load("sample", overrides)
    model = build_model(cfg.model).eval()
    pred = predict_crops(model, torch.zeros(1, 3, 64, 64, dtype=torch.uint8), cfg.test, FLIP)
    torch.testing.assert_close(pred.scores, sigma_scores(pred.sigma, 0.05))
    assert (pred.scores < 1).all()
