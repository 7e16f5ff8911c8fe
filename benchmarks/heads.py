"""IHL against its two baselines on the same budget: COCO AP of each head, side by side.

Trains the ``sample`` preset three times on the synthetic COCO set, changing
only ``model.head`` (ihl, heatmap, integral): same backbone, deconvolutions,
data, schedule and seed. Each run is then evaluated with the noisy detector
boxes, as ``ihl evaluate`` does. The budget is printed as training crops and
images per second, since wall-clock on a shared machine says little. About
five minutes per head on a quiet two-core CPU.

    uv run python benchmarks/heads.py [--data runs/synth] [--out runs/heads] [--epochs N]
        [--images TRAIN VAL]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ihl import config
from ihl.data.build import build_train_dataset
from ihl.data.synth import make_coco_synth
from ihl.evaluate import evaluate
from ihl.train import train

HEADS = ("ihl", "heatmap", "integral")
SYNTH_SIZE = (1000, 100)
"""Train and val images of the synthetic set made when ``--data`` does not exist yet."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/synth"), help="synthetic COCO root")
    parser.add_argument("--out", type=Path, default=Path("runs/heads"), help="one folder per head")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument(
        "--images", type=int, nargs=2, default=SYNTH_SIZE, metavar=("TRAIN", "VAL"),
        help="size of the synthetic set made when --data does not exist yet",
    )  # fmt: skip
    args = parser.parse_args()
    if not args.data.exists():
        make_coco_synth(args.data, *args.images)

    rows = []
    for head in args.heads:
        overrides = {"model.head": head, "data.root": str(args.data)}
        if args.epochs is not None:
            overrides |= {"train.epochs": args.epochs, "train.val_interval": args.epochs}
        cfg = config.load("sample", overrides)
        batch = cfg.train.batch_size
        crops = cfg.train.epochs * (len(build_train_dataset(cfg)) // batch) * batch
        start = time.perf_counter()
        train(cfg, args.out / head, progress=False)
        seconds = time.perf_counter() - start
        metrics = evaluate(
            args.out / head / "checkpoints" / "best.pt", args.out / head / "eval", progress=False
        )
        rows.append((head, crops, seconds, metrics))
        print(f"{head}: AP {metrics['AP']:.3f} after {seconds:.0f} s", flush=True)

    keys = ("AP", "AP50", "AP75", "AR")
    header = f"{'head':<9} {'crops':>6} {'train s':>7} {'img/s':>6} " + " ".join(
        f"{k:>6}" for k in keys
    )
    print(header)
    print("-" * len(header))
    for head, crops, seconds, metrics in rows:
        print(
            f"{head:<9} {crops:>6} {seconds:>7.0f} {crops / seconds:>6.1f} "
            + " ".join(f"{metrics[k]:>6.3f}" for k in keys)
        )


if __name__ == "__main__":
    main()
