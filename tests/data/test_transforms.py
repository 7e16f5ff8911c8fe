"""Geometry, augmentation and targets of the top-down pipeline."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from ihl.data.keypoints import COCO, MPII
from ihl.data.transforms import (
    TopDownAugment,
    TopDownPipeline,
    affine_points,
    box_to_center_scale,
    coords_to_image,
    gaussian_heatmaps,
    get_affine_transform,
    heatmaps_from_marginals,
    make_targets,
    sample_rng,
    upper_body_mask,
    warp,
)

INPUT = (192, 256)  # (width, height)


def no_augment(**overrides) -> TopDownAugment:
    """An augmenter with every random step off, then the ones under test on."""
    params = dict(
        flip_prob=0.0, half_body_prob=0.0, shift_prob=0.0, scale_range=(1.0, 1.0), rotation_prob=0.0
    )
    params.update(overrides)
    return TopDownAugment(COCO, INPUT, **params)


def hrnet_style_affine(center, scale, rotation, output_size):
    """The three-point construction of the HRNet pose code, written out for comparison."""
    out_w, out_h = output_size
    rad = math.radians(rotation)

    def rotate(v):
        return np.array(
            [
                v[0] * math.cos(rad) - v[1] * math.sin(rad),
                v[0] * math.sin(rad) + v[1] * math.cos(rad),
            ]
        )

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]])

    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + rotate([0, -0.5 * scale[0]])
    dst[0] = [0.5 * out_w, 0.5 * out_h]
    dst[1] = dst[0] + np.array([0, -0.5 * out_w])
    src[2], dst[2] = third(src[0], src[1]), third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def test_box_to_center_scale_keeps_aspect_and_pads():
    center, scale = box_to_center_scale((10, 20, 30, 100), 0.75)
    np.testing.assert_allclose(center, [25, 70])
    np.testing.assert_allclose(scale, [75 * 1.25, 100 * 1.25])
    _, wide = box_to_center_scale((0, 0, 300, 100), 0.75, padding=1.0)
    np.testing.assert_allclose(wide, [300, 400])


@pytest.mark.parametrize("rotation", [0.0, 30.0, -75.0])
def test_affine_matches_hrnet_three_point_construction(rotation):
    center, scale = np.array([320.5, 211.0]), np.array([150.0, 200.0])
    ours = get_affine_transform(center, scale, rotation, INPUT)
    np.testing.assert_allclose(ours, hrnet_style_affine(center, scale, rotation, INPUT), atol=1e-3)


@pytest.mark.parametrize("flip", [False, True])
def test_affine_round_trip(flip):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 640, size=(50, 2))
    center, scale, rotation = np.array([300.0, 200.0]), np.array([180.0, 240.0]), 37.0
    forward = get_affine_transform(center, scale, rotation, INPUT, flip=flip)
    crop = affine_points(points, forward)
    back = affine_points(
        crop, get_affine_transform(center, scale, rotation, INPUT, flip=flip, inverse=True)
    )
    np.testing.assert_allclose(back, points, atol=1e-3)
    normalised = crop / np.array(INPUT)
    mapped = coords_to_image(normalised[None], center[None], scale[None], [rotation], INPUT, [flip])
    np.testing.assert_allclose(mapped[0], points, atol=1e-3)


def test_box_centre_lands_in_crop_centre_and_positive_rotation_is_counter_clockwise():
    center, scale = np.array([100.0, 100.0]), np.array([96.0, 128.0])
    m = get_affine_transform(center, scale, 90.0, INPUT)
    np.testing.assert_allclose(affine_points(center, m), [96, 128])
    right_of_centre = affine_points(center + [10.0, 0.0], m)
    np.testing.assert_allclose(right_of_centre, [96, 128 - 20], atol=1e-9)


def test_warp_moves_pixels_where_the_points_go():
    image = np.zeros((300, 400, 3), np.uint8)
    image[148:153, 248:253] = 255
    m = get_affine_transform([200, 160], [120, 160], 25.0, INPUT)
    crop = warp(image, m, INPUT)
    assert crop.shape == (256, 192, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[:, :, 0])
    weights = crop[ys, xs, 0].astype(float)
    centroid = [np.average(xs, weights=weights), np.average(ys, weights=weights)]
    np.testing.assert_allclose(centroid, affine_points([250, 150], m), atol=0.5)


def test_flip_mirrors_the_crop_and_swaps_left_right():
    """Convention: crop pixel x goes to input_w - 1 - x, then left/right joints swap."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(400, 500, 3), dtype=np.uint8)
    joints = rng.uniform(150, 300, size=(COCO.num_joints, 2))
    visible = np.full(COCO.num_joints, 2.0)
    center, scale = np.array([230.0, 220.0]), np.array([300.0, 400.0])
    plain = TopDownPipeline(COCO, INPUT)(image, center, scale, joints, visible)
    flipped = TopDownPipeline(COCO, INPUT, augment=no_augment(flip_prob=1.0))(
        image, center, scale, joints, visible, np.random.default_rng(0)
    )
    assert flipped["flipped"] and not plain["flipped"]
    diff = flipped["image"].int() - plain["image"].flip(-1).int()
    assert diff.abs().max() <= 1

    width = INPUT[0]
    plain_px = plain["coords"].numpy() * width
    flipped_px = flipped["coords"].numpy() * width
    index = np.asarray(COCO.flip_index)
    np.testing.assert_allclose(flipped_px[:, 0], width - 1 - plain_px[index, 0], atol=1e-3)
    np.testing.assert_allclose(flipped["coords"][:, 1], plain["coords"][index, 1], atol=1e-6)
    left_eye, right_eye = COCO.joints.index("left_eye"), COCO.joints.index("right_eye")
    assert index[left_eye] == right_eye
    np.testing.assert_allclose(
        flipped_px[left_eye, 0], width - 1 - plain_px[right_eye, 0], atol=1e-3
    )
    back = coords_to_image(
        flipped["coords"][None],
        flipped["center"][None],
        flipped["scale"][None],
        [0.0],
        INPUT,
        [True],
    )[0]
    np.testing.assert_allclose(back, joints[index], atol=1e-3)


def test_targets_coords_weights_and_heatmap_peak():
    joints = np.array([[50.3, 100.6], [189.0, 8.0], [-3.0, 40.0], [20.0, 30.0]])
    visible = np.array([2, 1, 2, 0])
    t = make_targets(joints, visible, INPUT, heatmap_size=(48, 64))
    np.testing.assert_allclose(t["coords"][0], [50.3 / 192, 100.6 / 256], rtol=1e-6)
    assert t["coords"].dtype == np.float32 and t["weights"].dtype == np.float32
    np.testing.assert_array_equal(t["weights"], [1, 1, 0, 0])
    heatmaps = gaussian_heatmaps(joints / 4, t["weights"] > 0, (48, 64))
    np.testing.assert_array_equal(
        heatmaps_from_marginals(
            torch.from_numpy(t["heatmap_x"]), torch.from_numpy(t["heatmap_y"])
        ).numpy(),
        heatmaps,
    )
    assert heatmaps.shape == (4, 64, 48) and heatmaps.dtype == np.float32
    # stride 4: (50.3, 100.6) -> (12.575, 25.15) -> peak at column 13, row 25
    assert np.unravel_index(heatmaps[0].argmax(), (64, 48)) == (25, 13)
    assert heatmaps[0, 25, 13] == 1.0
    assert heatmaps[0, 25, 13 + 6] > 0 and heatmaps[0, 25, 13 + 7] == 0
    assert heatmaps[1, 2, 47] == 1.0
    assert not heatmaps[2].any() and not heatmaps[3].any()
    assert "heatmap_x" not in make_targets(joints, visible, INPUT)


def test_subpixel_heatmap_is_centred_exactly():
    maps = gaussian_heatmaps(np.array([[10.4, 20.0]]), np.array([True]), (48, 64), subpixel=True)
    row = maps[0, 20]
    assert row.max() < 1.0 and row.argmax() == 10
    assert row[9] < row[11]


def test_upper_body_partition_comes_from_the_joint_names():
    np.testing.assert_array_equal(np.flatnonzero(upper_body_mask(COCO)), np.arange(11))
    np.testing.assert_array_equal(np.flatnonzero(~upper_body_mask(MPII)), np.arange(7))


def test_half_body_selection():
    rng = np.random.default_rng(0)
    visible = np.ones(COCO.num_joints)
    upper, lower = np.arange(11), np.arange(11, 17)
    np.testing.assert_array_equal(
        no_augment(upper_body_prob=1.0).select_half_body(visible, rng), upper
    )
    np.testing.assert_array_equal(
        no_augment(upper_body_prob=0.0).select_half_body(visible, rng), lower
    )
    only_lower = np.zeros(COCO.num_joints)
    only_lower[[0, 11, 12, 13]] = 2
    np.testing.assert_array_equal(
        no_augment(upper_body_prob=1.0).select_half_body(only_lower, rng), [11, 12, 13]
    )
    too_few = np.zeros(COCO.num_joints)
    too_few[[0, 11, 12]] = 2
    assert no_augment().select_half_body(too_few, rng) is None


def test_half_body_crops_to_the_selected_joints():
    """The centre is the joints' mean and the box their extent x 1.5 (MMPose's half-body);
    the pipeline then grows it to the input's aspect ratio. The midpoint of the extent
    (x 115, y 75 here) was ours before."""
    joints = np.zeros((COCO.num_joints, 2))
    joints[:11] = [100, 50]
    joints[10] = [140, 110]
    joints[11:] = np.linspace([90, 200], [130, 400], 6)
    visible = np.full(COCO.num_joints, 2.0)
    aug = no_augment(half_body_prob=1.0, upper_body_prob=1.0)
    pipeline = TopDownPipeline(COCO, INPUT, augment=aug)
    center, scale = np.array([120.0, 220.0]), np.array([300.0, 400.0])
    params = aug(center, scale, joints, visible, np.random.default_rng(0))
    np.testing.assert_allclose(params.center, [100 + 40 / 11, 50 + 60 / 11])
    np.testing.assert_allclose(params.scale, np.array([40.0, 60.0]) * 1.5)
    sample, _ = pipeline.geometry(center, scale, joints, visible, np.random.default_rng(0))
    np.testing.assert_allclose(sample["scale"], np.array([45.0, 60.0]) * 1.5)
    fewer = visible.copy()
    fewer[:9] = 0
    untouched = aug(center, scale, joints, fewer, np.random.default_rng(0))
    np.testing.assert_allclose(untouched.center, [120, 220])


def test_box_shift_is_a_fraction_of_the_padded_box_before_the_aspect_fix(tmp_path):
    """MMPose shifts by the padded box and fixes the aspect ratio afterwards: a narrow box
    (w 60, h 240 here) moves at most 0.16 x 1.25 x 60 = 12 px sideways, not 0.16 x 1.25 x 180
    (the box widened to the 3:4 input first, as ours did)."""
    from ihl.data.coco import CocoKeypoints

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.zeros((400, 400, 3), np.uint8))
    joints = [[170 + 3 * k, 100 + 12 * k, 2] for k in range(17)]
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 400}],
        "annotations": [
            {
                "id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 14400.0,
                "bbox": [170.0, 80.0, 60.0, 240.0], "num_keypoints": 17,
                "keypoints": [v for joint in joints for v in joint],
            }
        ],
        "categories": [{"id": 1, "name": "person"}],
    }  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    aug = no_augment(shift_prob=1.0)
    dataset = CocoKeypoints(
        tmp_path / "ann.json", images, train=True, input_size=INPUT, augment=aug
    )
    shifts = np.array([dataset[(epoch, 0)]["center"].numpy() for epoch in range(400)]) - [200, 200]
    assert np.abs(shifts[:, 0]).max() <= 0.16 * 1.25 * 60 + 1e-9
    assert np.abs(shifts[:, 0]).max() > 0.16 * 1.25 * 60 * 0.9
    assert np.abs(shifts[:, 1]).max() <= 0.16 * 1.25 * 240 + 1e-9
    np.testing.assert_allclose(dataset[(0, 0)]["scale"], [240 * 1.25 * 0.75, 240 * 1.25])


def test_augmentation_ranges_and_rates():
    aug = TopDownAugment(COCO, INPUT, half_body_prob=0.0)
    rng = np.random.default_rng(0)
    center, scale = np.array([100.0, 100.0]), np.array([150.0, 200.0])
    draws = [aug(center, scale, np.zeros((17, 2)), np.zeros(17), rng) for _ in range(3000)]
    rotations = np.array([d.rotation for d in draws])
    factors = np.array([d.scale[0] / scale[0] for d in draws])
    flips = np.array([d.flip for d in draws])
    assert np.abs(rotations).max() <= 80 and abs(np.mean(rotations != 0) - 0.6) < 0.04
    assert factors.min() >= 0.5 and factors.max() <= 1.5 and factors.std() > 0.1
    assert abs(flips.mean() - 0.5) < 0.04
    shift = np.array([(d.center - center) / scale for d in draws])
    assert np.abs(shift).max() <= 0.16 + 1e-9 and abs(np.mean(shift[:, 0] != 0) - 0.3) < 0.04


def test_same_seed_same_sample():
    image = np.random.default_rng(2).integers(0, 255, size=(300, 300, 3), dtype=np.uint8)
    joints = np.random.default_rng(3).uniform(100, 200, size=(17, 2))
    pipeline = TopDownPipeline(
        COCO, INPUT, heatmap_size=(48, 64), augment=TopDownAugment(COCO, INPUT)
    )
    args = (image, np.array([150.0, 150.0]), np.array([150.0, 200.0]), joints, np.ones(17))
    first = pipeline(*args, sample_rng(7, 3, 11))
    again = pipeline(*args, sample_rng(7, 3, 11))
    other = pipeline(*args, sample_rng(7, 4, 11))
    for key in ("image", "coords", "weights", "heatmap_x", "heatmap_y", "center", "scale"):
        assert (first[key] == again[key]).all(), key
    assert first["rotation"] == again["rotation"]
    assert not (first["center"] == other["center"]).all() or first["rotation"] != other["rotation"]
