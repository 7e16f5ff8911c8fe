"""`ihl detector`: train the person detector and measure its box AP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ihl.cli.common import USER_ERRORS, fail, load_config, print_table
from ihl.edge.params import DETECTOR_SECTIONS

app = typer.Typer(help="The person detector that finds the boxes the pose model needs.")


@app.command("train")
def train_cmd(
    data_root: Annotated[Path, typer.Argument(help="COCO-layout dataset, e.g. data/synth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for detector.pt, metrics.")],
    config: Annotated[
        str, typer.Option("--config", "-c", help="Preset or YAML whose detector section to use.")
    ] = "sample",
    params: Annotated[
        Path | None,
        typer.Option(help="params.yaml: its preset changes, the detector section's among them."),
    ] = None,
    overrides: Annotated[
        list[str], typer.Option("--set", help="Override a value: detector.epochs=3.")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
) -> None:
    """Train the detector on the train split's person boxes; writes OUT/detector.pt,
    OUT/metrics.json (box AP on the val split) and OUT/detections.json (val boxes)."""
    cfg = load_config(config, overrides, params, DETECTOR_SECTIONS).detector
    from ihl.data.build import COCO_SPLITS
    from ihl.detection.boxap import evaluate_detector
    from ihl.detection.models import DetectorError
    from ihl.detection.train import train_detector
    from ihl.files import write_json

    start = time.perf_counter()
    try:
        model = train_detector(
            cfg, data_root, out / "detector.pt", COCO_SPLITS["train"], seed, log=typer.echo
        )
        metrics, detections = evaluate_detector(model, cfg, data_root, COCO_SPLITS["val"])
    except (*USER_ERRORS, DetectorError) as err:
        fail(str(err))
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "detections.json", detections)
    write_json(out / "metrics.json", metrics, indent=2)
    print_table(metrics)
