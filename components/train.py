"""Train: the preset, trained on the prepared data, in a run folder on the data volume.

The run folder is named by a hash of everything that decides the result (the
resolved config, the data fingerprint, the GPU count and the image), so a
retried pod finds its own ``latest.pt`` there and resumes, as ``ihl train
--resume`` does, rather than starting over. Training locks the folder, so a second
run with the same inputs fails at once instead of writing the same checkpoints.
"""

from kfp.dsl import Dataset, Input, Model, Output

from components._base import ihl_component


@ihl_component
def train(
    prepared: Input[Dataset],
    preset: str,
    epochs: int,
    num_gpus: int,
    overrides: dict,
    volume: str,
    image: str,
    model: Output[Model],
):
    """Train ``preset`` (``epochs`` > 0 overrides its epoch count; ``overrides`` are
    dotted config keys) and output ``final.pt``, the weights the reference scores; the run's
    ``best.pt`` is named in the model's metadata (``best_checkpoint``) for the evaluation.

    ``num_gpus`` 0 trains on the CPU, 1 in this process on the GPU, more under
    torchrun with one process per GPU (``ihl train`` in each).
    """
    import hashlib
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import torch
    import yaml

    from ihl import config
    from ihl.edge.live import LiveLog
    from ihl.train import train as train_model

    changes = {**overrides, "train.epochs": epochs} if epochs > 0 else overrides
    cfg = config.resolve(
        preset,
        changes,
        dataset=prepared.metadata["dataset"],
        data_root=prepared.metadata["root"],
    )
    from ihl.device import cuda_problem

    visible = torch.cuda.device_count()
    if num_gpus > visible:
        problem = cuda_problem()
        raise RuntimeError(
            f"num_gpus={num_gpus} but this pod sees {visible} CUDA device(s)"
            + (f": {problem}" if problem else "")
        )

    resolved = config.to_dict(cfg)
    identity = [resolved, prepared.metadata.get("fingerprint"), num_gpus, image]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    run_dir = Path(volume) / "runs" / f"{cfg.name}-{digest}"
    print(f"run folder {run_dir}")
    fingerprint = prepared.metadata.get("fingerprint")
    if num_gpus > 1:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = run_dir / "config.yaml"
        cfg_file.write_text(yaml.safe_dump(resolved, sort_keys=False))
        index = run_dir / "data-index.json"
        index.write_text(json.dumps({"fingerprint": fingerprint}))
        ihl_cli = shutil.which("ihl")
        if ihl_cli is None:
            raise RuntimeError("the ihl command is not on PATH; torchrun needs it")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc-per-node={num_gpus}", "--no-python", ihl_cli, "train"]
        command += ["-c", str(cfg_file), "-o", str(run_dir), "--resume"]
        command += ["--data-index", str(index)]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    else:
        device = "cpu" if num_gpus == 0 else None
        train_model(
            cfg,
            run_dir,
            resume=True,
            device=device,
            epoch_log=LiveLog(run_dir / "live"),
            data_fingerprint=fingerprint,
        )
    shutil.copyfile(run_dir / "checkpoints" / "final.pt", model.path)
    model.metadata.update(
        {
            "preset": preset,
            "run_dir": str(run_dir),
            "num_gpus": num_gpus,
            "best_checkpoint": str(run_dir / "checkpoints" / "best.pt"),
        }
    )
