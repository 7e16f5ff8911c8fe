"""The whole top-down chain on the synthetic val split: our detector's boxes, then the pose
model, against the provided detection file, in eager PyTorch and ONNX Runtime.

Prints pose AP with the dataset's detection file (torch and ONNX), with our detector's
boxes, the detector's box AP, and the share of ground-truth persons with keypoints that
a predicted skeleton matches with OKS above 0.5 when every image goes in without boxes.

    uv run python benchmarks/detected_pose.py CHECKPOINT DETECTOR [--data data/synth]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import cv2

from ihl.checkpoint import load_model
from ihl.detection.detect import detect
from ihl.detection.models import load_detector
from ihl.evaluate import evaluate
from ihl.image_io import read_image_bgr
from ihl.metrics.coco import matched_fraction
from ihl.predict import predict_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("detector", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in {
            "detection file, torch": {},
            "detection file, onnx": {"runtime": "onnx"},
            "our detector, torch": {"boxes": "detector", "detector": args.detector},
        }.items():
            out = Path(tmp) / label.replace(" ", "_").replace(",", "")
            rows[label] = evaluate(
                args.checkpoint, out, data_root=args.data, progress=False, **options
            )
    for label, metrics in rows.items():
        extra = f", box AP {metrics['box_AP']:.3f}" if "box_AP" in metrics else ""
        print(f"pose AP, {label}: {metrics['AP']:.4f}{extra}")

    model, cfg = load_model(args.checkpoint)
    detector, detector_cfg = load_detector(args.detector)
    coco = json.loads((args.data / "annotations/person_keypoints_val2017.json").read_text())
    truth = defaultdict(list)
    for ann in coco["annotations"]:
        truth[ann["image_id"]].append(ann)
    matched = total = 0
    for image in coco["images"]:
        people = [a for a in truth[image["id"]] if a["num_keypoints"] > 0]
        if not people:
            continue
        rgb = cv2.cvtColor(
            read_image_bgr(args.data / "val2017" / image["file_name"]), cv2.COLOR_BGR2RGB
        )
        ((boxes, scores),) = detect(detector, [rgb], detector_cfg)
        found = predict_image(model.eval(), cfg, rgb, boxes, scores)
        share = matched_fraction(
            people, [p["keypoints"] for p in found], [p["score"] for p in found]
        )
        matched += round(share * len(people))
        total += len(people)
    print(
        f"persons with keypoints matched with OKS > 0.5, no boxes given: {matched}/{total} "
        f"= {matched / total:.3f}"
    )


if __name__ == "__main__":
    main()
