"""Training outputs, the paper's lr schedule, and refusal of bad input before writing anything."""

from __future__ import annotations

import json

import pytest
import torch

from ihl import device as device_mod
from ihl import train as stage
from ihl.checkpoint import load_model
from ihl.data.build import build_train_dataset
from ihl.data.errors import DatasetError
from ihl.data.transforms import heatmaps_from_marginals
from ihl.device import autocast_dtype
from ihl.losses import build_loss
from ihl.models.pose import build_model
from ihl.train import PaperSchedule, TrainStep, build_optimizer, train


def test_schedule_warms_up_linearly_then_steps_down_by_epoch():
    schedule = PaperSchedule(
        iters_per_epoch=10, warmup_iters=4, warmup_ratio=0.001, lr_steps=(2, 3), lr_factor=0.1
    )
    assert schedule(0) == pytest.approx(0.001)
    assert schedule(2) == pytest.approx(0.001 + 0.999 / 2)
    assert schedule(4) == schedule(19) == 1.0
    assert schedule(20) == pytest.approx(0.1)
    assert schedule(30) == pytest.approx(0.01)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_applies_on_cpus_with_bf16_and_fp16_only_on_cuda(monkeypatch, native):
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("bf16", cpu) is (torch.bfloat16 if native else None)
    assert autocast_dtype("bf16", cuda) is torch.bfloat16
    assert autocast_dtype("fp16", cpu) is None and autocast_dtype("fp16", cuda) is torch.float16
    assert autocast_dtype("off", cpu) is autocast_dtype("off", cuda) is None


def _batch(cfg, n=4):
    """The first ``n`` training crops of ``cfg``'s data, as the loop hands them to the step."""
    samples = [build_train_dataset(cfg)[i] for i in range(n)]
    images = torch.stack([s["image"] for s in samples])
    keys = [k for k in ("coords", "weights", "heatmap_x", "heatmap_y") if k in samples[0]]
    targets = {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in keys}
    if "heatmap_x" in targets:
        targets["heatmaps"] = heatmaps_from_marginals(
            targets.pop("heatmap_x"), targets.pop("heatmap_y")
        )
    return images, targets


def test_bf16_on_a_cpu_without_it_trains_in_float32_and_says_so(tiny_cfg, monkeypatch, caplog):
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: False)
    tiny_cfg.train.amp = "bf16"
    step = stage.build_step(tiny_cfg, torch.device("cpu"))
    assert step.amp_dtype is None
    assert "train.amp bf16 is not used on this cpu (no bf16 instructions)" in caplog.text


def test_bf16_step_runs_the_model_in_bf16_and_the_loss_in_float32(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg.model)
    step = TrainStep(model, build_loss("ihl", tiny_cfg.loss), torch.bfloat16)
    seen = []
    model.head.final_layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    terms = step(*_batch(tiny_cfg))
    terms["loss"].backward()
    assert seen == [torch.bfloat16]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_optimizer_is_fused_adam_at_the_configured_lr(tiny_cfg):
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(model.parameters(), tiny_cfg, 1, iters_per_epoch=10)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"]
    assert optimizer.defaults["lr"] == tiny_cfg.train.lr


def test_training_writes_checkpoints_and_logs(tiny_cfg, straight_run):
    out, metrics = straight_run
    assert set(metrics) >= {"AP", "AP50", "AR", "ARl"}

    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert {"model", "criterion", "optimizer", "scheduler", "scaler", "rng"} <= state.keys()
    assert state["state"]["epoch"] == tiny_cfg.train.epochs

    model, cfg = load_model(out / "checkpoints" / "best.pt")
    assert cfg.model == tiny_cfg.model
    # Validated only after the last epoch, best.pt holds the trained weights, not the initial.
    stage.seed_everything(cfg.train.seed)
    initial = build_model(cfg.model).state_dict()
    trained = model.state_dict()
    assert trained.keys() == state["model"].keys()
    assert all(torch.equal(trained[k], state["model"][k]) for k in trained)
    assert not torch.equal(trained["head.final_layer.weight"], initial["head.final_layer.weight"])

    live = out / "live"
    summary = json.loads((live / "metrics.json").read_text())
    assert {"loss", "likelihood", "lr"} <= summary["train"].keys()
    assert summary["val"]["AP"] == pytest.approx(metrics["AP"])
    assert (live / "params.yaml").is_file()
    assert not (out / "dvc.yaml").exists()


@pytest.mark.parametrize("head", ["heatmap", "integral"])
def test_baseline_heads_train(tiny_cfg, head):
    """Three steps of the engine's training step on one batch lower its loss."""
    tiny_cfg.model.head = head
    torch.manual_seed(0)
    step = stage.build_step(tiny_cfg, torch.device("cpu"))
    optimizer = torch.optim.Adam(step.parameters(), lr=1e-3)
    images, targets = _batch(tiny_cfg, 8)
    losses = []
    for _ in range(3):
        loss = step(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[2] < losses[0]


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_flip_probability_reaches_the_training_crops(tiny_cfg, flip_prob):
    tiny_cfg.data.flip_prob = flip_prob
    dataset = build_train_dataset(tiny_cfg)
    assert {bool(dataset[i]["flipped"]) for i in range(8)} == {flip_prob == 1.0}


def test_missing_dataset_folder_is_named_and_nothing_is_written(tiny_cfg, tmp_path):
    tiny_cfg.data.root = str(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="nowhere"):
        train(tiny_cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_split_is_named_and_nothing_is_written(tiny_coco, tiny_cfg, tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    (root / "annotations").mkdir()
    (root / "train2017").mkdir()
    ann = json.loads((tiny_coco / "annotations" / "person_keypoints_train2017.json").read_text())
    ann["annotations"] = []
    empty = root / "annotations" / "person_keypoints_train2017.json"
    empty.write_text(json.dumps(ann))
    tiny_cfg.data.root = str(root)
    with pytest.raises(DatasetError, match="person_keypoints_train2017.json.*empty"):
        train(tiny_cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_any_epoch_log_will_do_and_without_one_nothing_is_logged(tiny_cfg, tmp_path):
    class Recorder:
        def __init__(self):
            self.calls = []

        def start(self, params, resumed, epoch):
            self.calls.append(("start", params["model"]["head"], resumed, epoch))

        def log_epoch(self, epoch, metrics):
            self.calls.append(("epoch", epoch, sorted(k.split("/")[0] for k in metrics)[-1]))

        def end(self):
            self.calls.append(("end",))

    tiny_cfg.train.epochs = tiny_cfg.train.val_interval = 1
    recorder = Recorder()
    metrics = train(tiny_cfg, tmp_path, progress=False, epoch_log=recorder)
    assert recorder.calls == [("start", "ihl", False, 0), ("epoch", 0, "val"), ("end",)]
    # no live/ folder; .lock is the run folder's lock (ihl.files.folder_lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoints"]
    assert "AP" in metrics
