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


def coco_layout(dst: Path) -> Path:
    """The COCO sample in COCO's 2017 layout under ``dst``, as `ihl data add coco` takes it:
    its annotations and images as both the train2017 and the val2017 split."""
    import shutil

    for split in ("train2017", "val2017"):
        (dst / "annotations").mkdir(parents=True, exist_ok=True)
        shutil.copy(COCO_ANN, dst / "annotations" / f"person_keypoints_{split}.json")
        shutil.copytree(COCO_IMAGES, dst / split)
    return dst
