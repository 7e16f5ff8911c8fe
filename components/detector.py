"""Detector: the person detector the served model uses for requests without boxes, with its
box AP on the validation split."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._base import ihl_component


@ihl_component
def detector(
    prepared: Input[Dataset],
    preset: str,
    overrides: dict,
    image: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Write the detector file to ``model``: trained on the prepared train split when the
    run's config (``config.resolve``, as train's) has no weights, else its
    torchvision COCO weights as they are. ``metrics`` holds its box AP on the val split."""
    import json
    from pathlib import Path

    from ihl import config
    from ihl.data.build import COCO_SPLITS
    from ihl.detection.boxap import evaluate_detector
    from ihl.detection.models import build_detector, save_detector
    from ihl.detection.train import train_detector

    cfg = config.resolve(
        preset,
        overrides,
        dataset=prepared.metadata["dataset"],
        data_root=prepared.metadata["root"],
    ).detector
    root = Path(prepared.metadata["root"])
    if cfg.weights is None:
        found_by = train_detector(cfg, root, Path(model.path), COCO_SPLITS["train"])
    else:
        found_by = build_detector(cfg)
        save_detector(model.path, found_by, cfg)
    values, _ = evaluate_detector(found_by, cfg, root, COCO_SPLITS["val"])
    Path(metrics.path).write_text(json.dumps(values))
    for key, value in values.items():
        metrics.log_metric(key, float(value))
