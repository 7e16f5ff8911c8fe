"""One posed figure: joint angles and proportions drawn at random, a 3-D stick body built from
them, turned and projected to the image, and the primitives that draw it far-to-near.

Lengths are in units of body height; the body frame has x to the figure's left, y down and
z to its front.
"""

from __future__ import annotations

import numpy as np

from ihl.data.keypoints import COCO

_PARTS = (
    "torso",
    "neck",
    "head",
    "left_upper_arm",
    "left_forearm",
    "left_hand",
    "right_upper_arm",
    "right_forearm",
    "right_hand",
    "left_thigh",
    "left_shin",
    "left_foot",
    "right_thigh",
    "right_shin",
    "right_foot",
)
PART = {name: i + 1 for i, name in enumerate(_PARTS)}
"""Part codes in the label map (0 is background)."""


def _joint_parts() -> dict[str, tuple[int, ...]]:
    """The parts whose pixels count as showing each COCO joint."""
    out = {name: (PART["head"],) for name in COCO.joints[:5]}
    for side in ("left", "right"):
        for joint, parts in {
            "shoulder": ("torso", "upper_arm"),
            "elbow": ("upper_arm", "forearm"),
            "wrist": ("forearm", "hand"),
            "hip": ("torso", "thigh"),
            "knee": ("thigh", "shin"),
            "ankle": ("shin", "foot"),
        }.items():
            out[f"{side}_{joint}"] = tuple(
                PART[p if p == "torso" else f"{side}_{p}"] for p in parts
            )
    return out


JOINT_PARTS = _joint_parts()

_LEFT_TINT = np.array([40.0, 40.0, 215.0])
_RIGHT_TINT = np.array([215.0, 95.0, 30.0])
_SKIN = np.array(
    [[205, 220, 245], [160, 190, 230], [120, 160, 215], [80, 120, 175], [50, 75, 115]], float
)


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _direction(sagittal: float, lateral: float, side: int) -> np.ndarray:
    """Unit limb direction in a body frame (x = figure's left, y = down, z = front).

    sagittal swings the limb forward (90 deg: horizontal forward, 180: up), lateral
    lifts it sideways away from the body on the given side.
    """
    s, t = np.radians(sagittal), np.radians(lateral)
    return np.array([side * np.sin(t), np.cos(s) * np.cos(t), np.sin(s) * np.cos(t)])


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a * (1 - t) + b * t


def pixel_color(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(c, 0, 255))


_LEG_MODES = {
    # name: (thigh sagittal, thigh lateral, knee flexion, torso lean), degrees
    "stand": ((-10, 15), (-3, 12), (0, 15), (-8, 12)),
    "walk": ((-30, 40), (-3, 10), (0, 60), (-5, 15)),
    "sit": ((60, 100), (-5, 25), (60, 110), (-10, 25)),
    "crouch": ((70, 120), (0, 35), (100, 145), (15, 45)),
    "free": ((-30, 110), (-5, 40), (0, 130), (-10, 35)),
}
_LEG_MODE_P = np.array([0.3, 0.3, 0.15, 0.1, 0.15])


def _sample_pose(rng: np.random.Generator) -> dict:
    """Joint angles and proportions of one figure (lengths in units of body height)."""
    mode = list(_LEG_MODES)[rng.choice(len(_LEG_MODES), p=_LEG_MODE_P)]
    thigh_s, thigh_l, knee, lean = _LEG_MODES[mode]
    legs = {
        side: (rng.uniform(*thigh_s), rng.uniform(*thigh_l), rng.uniform(*knee))
        for side in ("left", "right")
    }
    arms = {}
    for side in ("left", "right"):
        if rng.random() < 0.35:
            arms[side] = (rng.uniform(-15, 25), rng.uniform(3, 25), rng.uniform(0, 40))
        else:
            arms[side] = (rng.uniform(-40, 190), rng.uniform(0, 95), rng.uniform(0, 150))
    yaw = rng.uniform(-np.pi, np.pi) if rng.random() < 0.6 else rng.normal(0, 0.5)
    roll = rng.normal(0, 0.12) if rng.random() < 0.9 else rng.uniform(-1.0, 1.0)
    return {
        "legs": legs,
        "arms": arms,
        "yaw": yaw,
        "roll": roll,
        "lean": np.radians(rng.uniform(*lean)),
        "bend": np.radians(rng.uniform(-10, 10)),
        "twist": np.radians(rng.uniform(-20, 20)),
        "head_yaw": np.radians(rng.uniform(-40, 40)),
        "head_pitch": np.radians(rng.uniform(-25, 20)),
        "width": rng.uniform(0.8, 1.3),
        "arm_len": rng.uniform(0.9, 1.1),
        "leg_len": rng.uniform(0.9, 1.1),
        "head_r": 0.062 * rng.uniform(0.9, 1.15),
    }


def _sample_colors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    skin = _SKIN[rng.integers(len(_SKIN))] + rng.uniform(-12, 12, 3)
    return {
        "skin": skin,
        "shirt": rng.uniform(20, 235, 3),
        "pants": rng.uniform(15, 200, 3),
        "hair": rng.uniform(10, 110, 3) * rng.uniform(0.4, 1.0),
        "shoe": rng.uniform(10, 90, 3),
        "tint": rng.uniform(0.75, 0.9),
    }


class Figure:
    """A posed 3-D figure, projected to the image, with its drawing primitives."""

    def __init__(self, rng: np.random.Generator, height_px: float):
        p = _sample_pose(rng)
        c = _sample_colors(rng)
        w, r = p["width"], p["head_r"]
        pts: dict[str, np.ndarray] = {"pelvis": np.zeros(3)}
        torso = _ry(p["twist"]) @ _rx(-p["lean"]) @ _rz(p["bend"])
        up, lat, fwd = torso @ [0, -1, 0], torso @ [1, 0, 0], torso @ [0, 0, 1]
        pts["thorax"] = up * 0.29
        pts["upper_neck"] = pts["thorax"] + up * 0.045
        head = torso @ _ry(p["head_yaw"]) @ _rx(p["head_pitch"])
        pts["head"] = pts["upper_neck"] + head @ [0, -0.85 * r, 0.15 * r]
        pts["head_top"] = pts["head"] + head @ [0, -r, 0]
        normals = {
            "nose": head @ [0, 0.15, 1.0],
            "left_eye": head @ [0.38, -0.12, 0.9],
            "right_eye": head @ [-0.38, -0.12, 0.9],
            "left_ear": head @ [1.0, 0.05, -0.05],
            "right_ear": head @ [-1.0, 0.05, -0.05],
        }
        for name, n in normals.items():
            pts[name] = pts["head"] + n * r * (1.05 if name == "nose" else 0.95)
        pts["face"] = pts["head"] + head @ [0, 0.12 * r, 0.3 * r]
        for side, sgn in (("left", 1), ("right", -1)):
            s, t, e = p["arms"][side]
            pts[f"{side}_shoulder"] = pts["thorax"] + lat * sgn * 0.115 * w
            pts[f"{side}_elbow"] = (
                pts[f"{side}_shoulder"] + torso @ _direction(s, t, sgn) * 0.175 * p["arm_len"]
            )
            forearm = torso @ _direction(min(s + e, 200), t * rng.uniform(0.2, 1), sgn)
            pts[f"{side}_wrist"] = pts[f"{side}_elbow"] + forearm * 0.155 * p["arm_len"]
            pts[f"{side}_hand"] = pts[f"{side}_wrist"] + forearm * 0.025
            s, t, e = p["legs"][side]
            pts[f"{side}_hip"] = np.array([sgn * 0.08 * w, 0, 0])
            pts[f"{side}_knee"] = pts[f"{side}_hip"] + _direction(s, t, sgn) * 0.24 * p["leg_len"]
            pts[f"{side}_ankle"] = (
                pts[f"{side}_knee"] + _direction(s - e, t * 0.5, sgn) * 0.235 * p["leg_len"]
            )
            pts[f"{side}_toe"] = pts[f"{side}_ankle"] + np.array([sgn * 0.012, 0.025, 0.065])

        # Torso box corners, so the torso keeps its depth when seen from the side.
        corners = [
            base + lat * a * half + fwd * d * 0.065 * w
            for base, half in ((pts["thorax"] + up * 0.015, 0.13 * w), (pts["pelvis"], 0.115 * w))
            for a in (-1, 1)
            for d in (-1, 1)
        ]
        names = list(pts)
        world = np.array([pts[n] for n in names] + corners)
        world = world @ _ry(p["yaw"]).T
        cr, sr = np.cos(p["roll"]), np.sin(p["roll"])
        uv = world[:, :2] @ np.array([[cr, sr], [-sr, cr]]) * height_px
        self.uv = {n: uv[i] for i, n in enumerate(names)}
        self.depth = {n: world[i, 2] for i, n in enumerate(names)}
        self.corners = uv[len(names) :]
        self.torso_depth = 0.5 * (self.depth["thorax"] + self.depth["pelvis"])
        yaw = _ry(p["yaw"])
        # Ears and nose stick out, so they still show when turned a little away.
        limit = {"nose": -0.2, "left_ear": -0.35, "right_ear": -0.35}
        self.facing = {n: bool((yaw @ v)[2] > limit.get(n, 0.05)) for n, v in normals.items()}
        self.shows = dict(JOINT_PARTS)
        for name in self.facing:
            self.shows[name] = JOINT_PARTS[name] if self.facing[name] else ()
        for name in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"):
            if self.depth[name] < self.torso_depth - 0.07:
                self.shows[name] = tuple(q for q in JOINT_PARTS[name] if q != PART["torso"])
        self.face_visible = bool((yaw @ head @ [0, 0, 1])[2] > -0.15)
        self.px = height_px
        self.r = r
        self.w = w
        self.colors = c
        self.offset = np.zeros(2)

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        allp = np.concatenate([np.array(list(self.uv.values())), self.corners])
        pad = self.r * self.px
        return allp.min(0) - pad, allp.max(0) + pad

    def point(self, name: str) -> np.ndarray:
        return self.uv[name] + self.offset

    def primitives(self) -> list[tuple]:
        """(depth, seq, kind, points, size_px, color, part), drawn in ascending depth."""
        c, px, w, r = self.colors, self.px, self.w, self.r
        prims: list[tuple] = []

        def add(depth, kind, names_or_pts, size, color, part):
            pts = [self.point(n) if isinstance(n, str) else n for n in names_or_pts]
            prims.append((depth, len(prims), kind, pts, size * px, color, PART[part]))

        def shade(col, depth):
            return pixel_color(col * (0.82 if depth < self.torso_depth else 1.0))

        add(
            self.torso_depth - 1,
            "line",
            ("thorax", "head"),
            0.05 * w,
            pixel_color(c["skin"]),
            "neck",
        )
        add(
            self.torso_depth,
            "poly",
            list(self.corners + self.offset),
            0,
            pixel_color(c["shirt"]),
            "torso",
        )
        for side in ("left", "right"):
            tint = _LEFT_TINT if side == "left" else _RIGHT_TINT
            arm = _mix(c["shirt"], tint, c["tint"])
            leg = _mix(c["pants"], tint, c["tint"])
            limbs = (
                ("upper_arm", "shoulder", "elbow", 0.055 * w, arm),
                ("forearm", "elbow", "wrist", 0.045 * w, arm * 0.7 + 60),
                ("hand", "wrist", "hand", 0.05, _mix(c["skin"], tint, 0.4)),
                ("thigh", "hip", "knee", 0.085 * w, leg),
                ("shin", "knee", "ankle", 0.062 * w, leg * 0.75),
                ("foot", "ankle", "toe", 0.035, _mix(c["shoe"], tint, 0.35)),
            )
            for part, a, b, size, col in limbs:
                depth = 0.5 * (self.depth[f"{side}_{a}"] + self.depth[f"{side}_{b}"])
                add(
                    depth,
                    "line",
                    (f"{side}_{a}", f"{side}_{b}"),
                    size,
                    shade(col, depth),
                    f"{side}_{part}",
                )

        hd = self.depth["head"]
        add(hd, "circle", ("head",), r, pixel_color(c["hair"]), "head")
        if self.face_visible:
            add(hd, "circle", ("face",), 0.72 * r, pixel_color(c["skin"]), "head")
        features = (
            ("left_ear", 0.22, _mix(c["skin"], _LEFT_TINT, 0.45)),
            ("right_ear", 0.22, _mix(c["skin"], _RIGHT_TINT, 0.45)),
            ("left_eye", 0.13, np.array([30.0, 30.0, 120.0])),
            ("right_eye", 0.13, np.array([120.0, 40.0, 20.0])),
            ("nose", 0.15, c["skin"] * 0.55),
        )
        for name, size, col in features:
            if self.facing[name]:
                add(hd, "circle", (name,), size * r, pixel_color(col), "head")
        return sorted(prims, key=lambda q: (q[0], q[1]))
