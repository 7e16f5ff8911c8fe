"""Where the real COCO/MPII samples live: ../shared/data beside the repository
(IHL_SHARED_DATA overrides). Tests need them and fail loudly if they are absent."""

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("IHL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
COCO_SAMPLE = SHARED_DATA / "coco_sample"
COCO_ANN = COCO_SAMPLE / "annotations" / "person_keypoints_sample.json"
COCO_IMAGES = COCO_SAMPLE / "images"
COCO_DETS = COCO_SAMPLE / "person_detection_results" / "sample_detections.json"
MPII_SAMPLE = SHARED_DATA / "mpii_sample"
REAL_IMAGES = SHARED_DATA / "real_images"

if not COCO_ANN.is_file():
    raise FileNotFoundError(f"sample data not found at {SHARED_DATA}; set IHL_SHARED_DATA")
