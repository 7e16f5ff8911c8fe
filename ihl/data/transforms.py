"""Top-down pipeline: box -> centre/scale -> affine warp -> training targets.

Conventions used throughout the data layer:

- Sizes are (width, height), as the config's ``model.input_size`` and OpenCV
  take them; arrays are laid out (height, width), as torch lays out images.
  Points are (x, y) in pixels, with pixel centres at integer coordinates
  (0-based).
- ``center`` is the box centre in image pixels; ``scale`` is the (width,
  height) in image pixels of the region the crop shows, padding included, with
  the aspect ratio of the input (HRNet keeps it in units of 200 px; plain
  pixels need no magic constant).
- The affine maps ``center`` to (input_w / 2, input_h / 2) and ``scale`` onto
  the input size; ``rotation`` is in degrees and, as in the HRNet pose code,
  a positive angle turns the image content counter-clockwise in the crop.
- A horizontal flip mirrors the crop: crop pixel x becomes input_w - 1 - x,
  then left and right joints swap (``spec.flip_index``). It is composed into the
  affine matrix, so the image is still warped once.
- Targets: ``coords`` = keypoint_in_crop / (input_w, input_h), the convention
  of the DSDT expectation (heatmap column j is x_j = j / hm_w); heatmap pixel
  j sits at input pixel j * stride with stride = input_w / hm_w.
- The crop stays uint8 RGB; the model normalises internally, and a uint8
  tensor is a quarter of the bytes a float one would move through the loader.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .keypoints import KeypointSpec

Size = tuple[int, int]
"""(width, height) in pixels."""

_LOWER_BODY_WORDS = ("hip", "knee", "ankle", "pelvis")


def box_to_center_scale(
    box: Sequence[float], aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Turn an (x, y, w, h) box into centre and padded (w, h) scale in pixels.

    The box grows along its short side to the input's aspect ratio (w / h), so
    the warp never stretches the person, then both sides grow by ``padding``
    for context.
    """
    center, size = box_center_size(box, padding)
    return center, fix_aspect_ratio(size, aspect_ratio)


def box_center_size(box: Sequence[float], padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) of an (x, y, w, h) box grown by ``padding``, its aspect ratio kept:
    what training augments (the shift is a fraction of this box, as in MMPose) before
    ``TopDownPipeline`` fixes the ratio."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float64)
    return center, np.array([w, h], dtype=np.float64) * padding


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Enlarge the short side of a (w, h) pair so that w / h == aspect_ratio."""
    w, h = float(scale[0]), float(scale[1])
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return np.array([w, h], dtype=np.float64)


def get_affine_transform(
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Size,
    *,
    flip: bool = False,
    inverse: bool = False,
) -> np.ndarray:
    """2x3 matrix taking image pixels to crop pixels (crop to image if ``inverse``).

    Built in closed form rather than from three point pairs as HRNet does; the
    two agree (the tests check it), and this one is exact to invert.
    """
    out_w, out_h = output_size
    theta = math.radians(rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    rot = np.array([[cos, sin], [-sin, cos]])
    lin = np.diag([out_w / float(scale[0]), out_h / float(scale[1])]) @ rot
    if flip:
        lin = np.diag([-1.0, 1.0]) @ lin
    dst_center = np.array([out_w * 0.5, out_h * 0.5])
    if flip:
        dst_center[0] = out_w - 1 - dst_center[0]
    matrix = np.empty((2, 3))
    matrix[:, :2] = lin
    matrix[:, 2] = dst_center - lin @ np.asarray(center, dtype=np.float64)
    return invert_affine(matrix) if inverse else matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points of shape (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, output_size: Size) -> np.ndarray:
    """Warp an image with bilinear interpolation; outside the image is black."""
    out_w, out_h = output_size
    return cv2.warpAffine(
        image,
        matrix,
        (int(out_w), int(out_h)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def coords_to_image(
    coords,
    center,
    scale,
    rotation,
    input_size: Size,
    flipped=None,
) -> np.ndarray:
    """Map normalised crop coordinates (N, K, 2), or (K, 2), back to image pixels.

    ``center`` and ``scale`` are (N, 2), ``rotation`` (N,) and ``flipped`` (N,)
    or None, as the samples carried them (a batch's meta works as is).
    Accepts numpy arrays or CPU tensors; returns float64 in the shape of ``coords``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, 2)
    rotation = np.broadcast_to(np.asarray(rotation, dtype=np.float64), (len(center),))
    flipped = np.zeros(len(center), bool) if flipped is None else np.asarray(flipped, bool)
    flipped = np.broadcast_to(flipped.reshape(-1), (len(center),))
    single = coords.ndim == 2
    coords = coords.reshape(len(center), -1, 2)
    in_w, in_h = input_size
    pixels = coords * np.array([in_w, in_h], dtype=np.float64)
    inverses = np.stack(
        [
            get_affine_transform(c, s, r, input_size, flip=bool(f), inverse=True)
            for c, s, r, f in zip(center, scale, rotation, flipped, strict=True)
        ]
    )
    out = np.einsum("nkj,nij->nki", pixels, inverses[:, :, :2]) + inverses[:, None, :, 2]
    return out[0] if single else out


def upper_body_mask(spec: KeypointSpec) -> np.ndarray:
    """Which joints count as upper body for half-body augmentation.

    Derived from the joint names in the spec (hips, knees, ankles and pelvis
    are lower body) so the partition is not a second copy of the tables.
    """
    return np.array([not any(w in name for w in _LOWER_BODY_WORDS) for name in spec.joints])


def _truncnorm(rng: np.random.Generator) -> float:
    """Standard normal truncated to [-1, 1], MMPose's draw for box jitter."""
    while True:
        value = rng.standard_normal()
        if -1.0 <= value <= 1.0:
            return float(value)


@dataclass(frozen=True)
class AugmentParams:
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flip: bool


class TopDownAugment:
    """Training augmentation of ihl-method.md section 6 (MMPose's defaults).

    It only changes the crop geometry (centre, scale, rotation, flip); the
    image is then warped once. Shift, scale and rotation are drawn from a
    normal truncated to [-1, 1] times their limit, as MMPose does; the shift is a
    fraction of the scale it is given, which for MMPose's order is the padded box
    before the aspect-ratio fix (``box_center_size``). Every draw
    comes from the Generator passed in, so a (seed, epoch, index) Generator
    makes a sample reproducible for resumed runs.
    """

    def __init__(
        self,
        spec: KeypointSpec,
        input_size: Size,
        *,
        flip_prob: float = 0.5,
        half_body_prob: float = 0.3,
        half_body_min_joints: int = 9,
        half_body_min_upper: int = 2,
        half_body_min_lower: int = 3,
        upper_body_prob: float = 0.7,
        half_body_padding: float = 1.5,
        shift_factor: float = 0.16,
        shift_prob: float = 0.3,
        scale_range: tuple[float, float] = (0.5, 1.5),
        rotation_factor: float = 80.0,
        rotation_prob: float = 0.6,
    ) -> None:
        self.spec = spec
        width, height = input_size
        self.aspect_ratio = width / height
        self.upper_mask = upper_body_mask(spec)
        self.flip_prob = flip_prob
        self.half_body_prob = half_body_prob
        self.half_body_min_joints = half_body_min_joints
        self.half_body_min_upper = half_body_min_upper
        self.half_body_min_lower = half_body_min_lower
        self.upper_body_prob = upper_body_prob
        self.half_body_padding = half_body_padding
        self.shift_factor = shift_factor
        self.shift_prob = shift_prob
        self.scale_range = scale_range
        self.rotation_factor = rotation_factor
        self.rotation_prob = rotation_prob

    def select_half_body(self, visible: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """Indices of the visible upper or lower joints to crop to, or None."""
        visible = np.asarray(visible) > 0
        upper = np.flatnonzero(visible & self.upper_mask)
        lower = np.flatnonzero(visible & ~self.upper_mask)
        upper_ok = len(upper) >= self.half_body_min_upper
        lower_ok = len(lower) >= self.half_body_min_lower
        if upper_ok and lower_ok:
            return upper if rng.random() < self.upper_body_prob else lower
        if upper_ok:
            return upper
        if lower_ok:
            return lower
        return None

    def half_body_box(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The joints' mean as centre and their extent grown by the padding as (w, h), as
        MMPose's half-body transform has them (the aspect ratio is fixed after the shift); None
        if degenerate."""
        size = joints.max(axis=0) - joints.min(axis=0)
        if not np.all(np.isfinite(size)) or size.max() <= 0:
            return None
        return joints.mean(axis=0), size * self.half_body_padding

    def __call__(
        self,
        center: np.ndarray,
        scale: np.ndarray,
        joints: np.ndarray,
        visible: np.ndarray,
        rng: np.random.Generator,
    ) -> AugmentParams:
        center = np.asarray(center, dtype=np.float64).copy()
        scale = np.asarray(scale, dtype=np.float64).copy()
        flip = bool(rng.random() < self.flip_prob)

        if (
            np.count_nonzero(np.asarray(visible) > 0) >= self.half_body_min_joints
            and rng.random() < self.half_body_prob
        ):
            chosen = self.select_half_body(visible, rng)
            box = None if chosen is None else self.half_body_box(np.asarray(joints)[chosen])
            if box is not None:
                center, scale = box

        if rng.random() < self.shift_prob:
            center += np.array([_truncnorm(rng), _truncnorm(rng)]) * self.shift_factor * scale
        low, high = self.scale_range
        scale *= 0.5 * (low + high) + 0.5 * (high - low) * _truncnorm(rng)
        rotation = 0.0
        if rng.random() < self.rotation_prob:
            rotation = _truncnorm(rng) * self.rotation_factor
        return AugmentParams(center, scale, rotation, flip)


def gaussian_marginals(
    points: np.ndarray,
    valid: np.ndarray,
    heatmap_size: Size,
    sigma: float = 2.0,
    subpixel: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D factors gx (K, W) and gy (K, H) of ``gaussian_heatmaps`` (map = gy x gx).

    The maps are separable (a Gaussian truncated to a square window), so these two
    rows carry all of them in 112 numbers per joint instead of 3072 at 64x48;
    ``heatmaps_from_marginals`` rebuilds them where they are needed (on the GPU).
    """
    width, height = heatmap_size
    points = np.asarray(points, dtype=np.float64)
    rounded = np.floor(points + 0.5)
    mu = points if subpixel else rounded
    radius = int(3 * sigma)
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    gx = np.exp(-((xs[None, :] - mu[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((ys[None, :] - mu[:, 1:]) ** 2) / (2 * sigma**2))
    gx *= np.abs(xs[None, :] - rounded[:, :1]) <= radius
    gy *= np.abs(ys[None, :] - rounded[:, 1:]) <= radius
    gy *= np.asarray(valid, dtype=bool)[:, None]
    return gx.astype(np.float32), gy.astype(np.float32)


def gaussian_heatmaps(
    points: np.ndarray,
    valid: np.ndarray,
    heatmap_size: Size,
    sigma: float = 2.0,
    subpixel: bool = False,
) -> np.ndarray:
    """MSRA-style Gaussian maps (K, H, W) float32 for points in heatmap pixels.

    As in MSRA/HRNet the centre is rounded to the nearest heatmap pixel, so the
    peak is exactly 1; ``subpixel`` keeps the exact centre instead. Values
    beyond 3 sigma of the (rounded) centre are zero, and invalid joints get
    an all-zero map. The outer product of ``gaussian_marginals``.
    """
    gx, gy = gaussian_marginals(points, valid, heatmap_size, sigma, subpixel)
    return gy[:, :, None] * gx[:, None, :]


def heatmaps_from_marginals(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Maps (..., K, H, W) from the factors (..., K, W) and (..., K, H) of
    ``gaussian_marginals``: the same float32 product ``gaussian_heatmaps`` computes."""
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def make_targets(
    joints: np.ndarray,
    visible: np.ndarray,
    input_size: Size,
    heatmap_size: Size | None = None,
    sigma: float = 2.0,
    subpixel: bool = False,
) -> dict[str, np.ndarray]:
    """Training targets from keypoints in crop pixels (K, 2) and visibility (K,).

    ``weights`` is 1 for a visible joint that lies inside the crop, else 0
    (``coords`` of a zero-weight joint carry no meaning). ``heatmap_x`` (K, W) and
    ``heatmap_y`` (K, H), the factors of the Gaussian maps (``gaussian_marginals``),
    only when ``heatmap_size`` is given: not every head needs them, and the maps
    themselves are rebuilt on the device (``heatmaps_from_marginals``), so loader
    workers neither build nor ship them.
    """
    in_w, in_h = input_size
    coords = (np.asarray(joints, dtype=np.float64) / np.array([in_w, in_h])).astype(np.float32)
    inside = np.all((coords >= 0.0) & (coords < 1.0), axis=1)
    weights = ((np.asarray(visible) > 0) & inside).astype(np.float32)
    targets = {"coords": coords, "weights": weights}
    if heatmap_size is not None:
        hm_w, hm_h = heatmap_size
        points = coords.astype(np.float64) * np.array([hm_w, hm_h])
        gx, gy = gaussian_marginals(points, weights > 0, heatmap_size, sigma, subpixel)
        targets["heatmap_x"], targets["heatmap_y"] = gx, gy
    return targets


class TopDownPipeline:
    """Everything between a decoded image plus one person and a training sample.

    Shared by the COCO and MPII datasets so they differ only in how they read
    their annotations.
    """

    def __init__(
        self,
        spec: KeypointSpec,
        input_size: Size,
        heatmap_size: Size | None = None,
        sigma: float = 2.0,
        augment: TopDownAugment | None = None,
    ) -> None:
        self.spec = spec
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = None if heatmap_size is None else tuple(int(v) for v in heatmap_size)
        self.sigma = sigma
        self.augment = augment
        self._flip_index = np.asarray(spec.flip_index)

    @property
    def aspect_ratio(self) -> float:
        width, height = self.input_size
        return width / height

    def __call__(
        self,
        image_bgr: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        joints: np.ndarray,
        visible: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> dict:
        """Crop one person; returns tensors plus the geometry to map predictions back."""
        sample, matrix = self.geometry(center, scale, joints, visible, rng)
        crop = warp(image_bgr, matrix, self.input_size)
        image = torch.from_numpy(np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1)))
        return {"image": image, **sample}

    def geometry(
        self,
        center: np.ndarray,
        scale: np.ndarray,
        joints: np.ndarray,
        visible: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> tuple[dict, np.ndarray]:
        """Everything of a sample but its pixels, and the 2x3 matrix (image pixels to crop
        pixels, flip included) that warps them: the augmentation is drawn here, so the crop
        is the same whether the CPU warps it now or the GPU later (``data.decode``).

        ``scale`` may have any aspect ratio: the augmented one is grown to the input's here.
        """
        rotation, flip = 0.0, False
        if self.augment is not None:
            if rng is None:
                raise ValueError("augmentation needs a numpy Generator")
            aug = self.augment(center, scale, joints, visible, rng)
            center, scale, rotation, flip = aug.center, aug.scale, aug.rotation, aug.flip
        scale = fix_aspect_ratio(scale, self.aspect_ratio)
        matrix = get_affine_transform(center, scale, rotation, self.input_size, flip=flip)
        crop_joints = affine_points(joints, matrix)
        visible = np.asarray(visible)
        if flip:
            crop_joints = crop_joints[self._flip_index]
            visible = visible[self._flip_index]
        targets = make_targets(crop_joints, visible, self.input_size, self.heatmap_size, self.sigma)
        sample = {
            "coords": torch.from_numpy(targets["coords"]),
            "weights": torch.from_numpy(targets["weights"]),
        }
        for key in ("heatmap_x", "heatmap_y"):
            if key in targets:
                sample[key] = torch.from_numpy(targets[key])
        sample["center"] = torch.tensor(center, dtype=torch.float64)
        sample["scale"] = torch.tensor(scale, dtype=torch.float64)
        sample["rotation"] = float(rotation)
        sample["flipped"] = flip
        return sample, matrix


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A Generator that depends only on (seed, epoch, index).

    Samples then do not depend on which worker draws them or in what order,
    so a resumed run sees the same augmentation as an uninterrupted one.
    """
    return np.random.default_rng([int(seed), int(epoch), int(index)])
