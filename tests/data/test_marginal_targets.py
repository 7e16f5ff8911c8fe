"""Gaussian targets shipped as their 1-D factors, and samples addressed by (epoch, index)."""

import numpy as np
import torch
from sample_data import COCO_ANN, COCO_IMAGES

from ihl.data.coco import CocoKeypoints
from ihl.data.transforms import gaussian_heatmaps, gaussian_marginals, heatmaps_from_marginals


def test_maps_rebuilt_from_marginals_equal_the_full_maps_exactly():
    rng = np.random.default_rng(0)
    batch = []
    for subpixel in (False, True):
        points = rng.uniform(-4, 52, size=(17, 2)) * [1, 64 / 48]
        valid = rng.random(17) > 0.2
        maps = gaussian_heatmaps(points, valid, (48, 64), 2.0, subpixel)
        gx, gy = gaussian_marginals(points, valid, (48, 64), 2.0, subpixel)
        assert gx.shape == (17, 48) and gy.shape == (17, 64) and maps.shape == (17, 64, 48)
        assert maps[~valid].max() == 0 and maps[valid].max() > 0
        batch.append((maps, gx, gy))
    maps, gx, gy = (torch.from_numpy(np.stack(parts)) for parts in zip(*batch, strict=True))
    assert torch.equal(heatmaps_from_marginals(gx, gy), maps)


def test_epoch_index_pairs_give_that_epochs_augmentation():
    dataset = CocoKeypoints(COCO_ANN, COCO_IMAGES, train=True, input_size=(128, 96))
    dataset.set_epoch(3)
    expected = dataset[1]
    dataset.set_epoch(0)
    paired = dataset[(3, 1)]
    assert torch.equal(paired["image"], expected["image"])
    assert torch.equal(paired["coords"], expected["coords"])
    assert not torch.equal(dataset[1]["image"], expected["image"])
