"""One table per dataset: joint names, flip pairs, skeleton and OKS sigmas.

Everything else (flip test, drawing, evaluation, serving responses) reads these
tables instead of repeating the facts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeypointSpec:
    name: str
    joints: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    """Zero-based joint index pairs to draw as limbs."""
    sigmas: tuple[float, ...] | None
    """Per-joint OKS sigmas (COCO); None where the protocol does not use OKS."""

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def flip_index(self) -> tuple[int, ...]:
        """For each joint, the index of its mirror image (itself if central)."""
        swap = {"left": "right", "right": "left", "l": "r", "r": "l"}
        out = []
        for joint in self.joints:
            side, sep, rest = joint.partition("_")
            mirror = f"{swap[side]}{sep}{rest}" if sep and side in swap else joint
            out.append(self.joints.index(mirror))
        return tuple(out)

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple((i, j) for i, j in enumerate(self.flip_index) if i < j)


# fmt: off
COCO = KeypointSpec(
    name="coco",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12),
        (5, 6), (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
        (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
)

MPII = KeypointSpec(
    name="mpii",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
        "pelvis", "thorax", "upper_neck", "head_top",
        "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
    ),
    sigmas=None,
)

CROWDPOSE = KeypointSpec(
    name="crowdpose",
    joints=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
        "top_head", "neck",
    ),
    skeleton=(
        (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1),
        (0, 2), (1, 3), (2, 4), (3, 5), (12, 13), (1, 13), (0, 13),
    ),
    sigmas=(
        0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
        0.089, 0.089, 0.079, 0.079,
    ),
)

# fmt: on

SPECS = {spec.name: spec for spec in (COCO, MPII, CROWDPOSE)}


def get_spec(name: str) -> KeypointSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}") from None
