"""Evaluate: the official protocol on the validation split, as metrics the KFP UI shows and an
HTML report with a few predicted skeletons."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components._base import ihl_component


@ihl_component
def evaluate(
    prepared: Input[Dataset],
    model: Input[Model],
    image: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    examples: int = 4,
):
    """Score ``model`` on the validation split (detector boxes when the dataset has them, else
    ground-truth boxes) and draw its predictions on the first ``examples`` images.

    ``metrics`` holds the flat metrics.json (AP, AP50, ... or PCKh ...) and logs each
    finite value for the UI; ``report`` is a self-contained HTML page (PNG images
    inlined as base64).
    """
    import base64
    import html
    import json
    import math
    import shutil
    import tempfile
    from collections import defaultdict
    from pathlib import Path

    import cv2
    import numpy as np

    from ihl.checkpoint import load_model
    from ihl.data.build import build_eval_dataset
    from ihl.data.keypoints import get_spec
    from ihl.evaluate import evaluate as evaluate_model
    from ihl.image_io import read_image_bgr
    from ihl.visualize import draw_people

    root = Path(prepared.metadata["root"])
    _, cfg = load_model(model.path)
    boxes = "detections" if (root / cfg.data.detections).is_file() else "gt"
    with tempfile.TemporaryDirectory() as scratch:
        values = evaluate_model(Path(model.path), Path(scratch), data_root=root, boxes=boxes)
        shutil.copyfile(Path(scratch) / "metrics.json", metrics.path)
        results = json.loads((Path(scratch) / "results.json").read_text())
    for key, value in values.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics.log_metric(key, float(value))

    by_image = defaultdict(list)
    for person in results:
        by_image[person["image_id"]].append(person)
    dataset, _ = build_eval_dataset(cfg, root, "val", boxes)
    spec = get_spec(cfg.data.dataset)
    figures = []
    for index in np.unique(dataset.image_ids, return_index=True)[1][:examples]:
        path = dataset.image_path(int(index))
        people = sorted(
            by_image[int(dataset.image_ids[index])], key=lambda p: p["score"], reverse=True
        )
        drawn = draw_people(read_image_bgr(path), people[:5], spec)
        ok, png = cv2.imencode(".png", drawn)
        if not ok:
            raise OSError(f"{path}: cannot encode the drawn image")
        figures.append(
            f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
        )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
        for k, v in values.items()
        if isinstance(v, (int, float))
    )
    Path(report.path).write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>ihl evaluation</title></head>"
        f"<body><h1>{html.escape(cfg.name)} on {html.escape(str(root))} ({boxes} boxes)</h1>"
        f"<table>{rows}</table><h2>Predictions</h2>{''.join(figures)}</body></html>"
    )
