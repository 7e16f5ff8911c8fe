"""The real COCO/MPII samples vendored in the repository (data/samples, see its README
for provenance and licences). Tests and benchmarks read them from there only."""

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
COCO_SAMPLE = SAMPLES / "coco_sample"
COCO_ANN = COCO_SAMPLE / "annotations" / "person_keypoints_sample.json"
COCO_IMAGES = COCO_SAMPLE / "images"
COCO_DETS = COCO_SAMPLE / "person_detection_results" / "sample_detections.json"
MPII_SAMPLE = SAMPLES / "mpii_sample"
REAL_IMAGES = SAMPLES / "real_images"
