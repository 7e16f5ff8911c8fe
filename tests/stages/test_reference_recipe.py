"""The stages as the reference runs them: the lr it starts from, the augmentation it uses,
the final weights scored with the best checkpoint beside them, test-dev submissions and
CrowdPose end to end."""

from __future__ import annotations

import json

import pytest
import torch
from sample_data import COCO_ANN, COCO_DETS, COCO_IMAGES, COCO_SAMPLE

import ihl.checkpoint
import ihl.evaluate
from ihl import config
from ihl.checkpoint import load_model, safe_load, save_model
from ihl.data.build import build_train_dataset
from ihl.data.synth import make_crowdpose_synth
from ihl.evaluate import evaluate
from ihl.metrics.coco import validate_results
from ihl.metrics.crowdpose import METRIC_KEYS as CROWDPOSE_KEYS
from ihl.models import build_model
from ihl.prepare import prepare
from ihl.train import build_optimizer, train


def test_paper_preset_steps_from_5e4_on_two_devices():
    """The lr each iteration steps with: warm-up from 5e-4 x 0.001 over 500 iterations, 5e-4,
    then x0.1 at epochs 170 and 200, whatever the device count (the reference does not scale
    it); Adam's first step moves every weight by that first lr."""
    cfg = config.load("coco_hrnet_w32")
    layer = torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(layer.weight)  # float32 resolves a step of 5e-7 from 0 exactly
    optimizer, scheduler = build_optimizer(layer.parameters(), cfg, 2, iters_per_epoch=10)
    lrs = []

    def step():
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        layer(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        scheduler.step()

    step()
    torch.testing.assert_close(layer.weight.detach(), torch.full((2, 2), -5e-7), rtol=1e-4, atol=0)
    for _ in range(2099):
        step()
    assert lrs[0] == pytest.approx(5e-7)
    assert lrs[250] == pytest.approx(5e-7 + (5e-4 - 5e-7) / 2)
    assert lrs[500] == lrs[1699] == pytest.approx(5e-4)
    assert lrs[1700] == lrs[1999] == pytest.approx(5e-5)
    assert lrs[2000] == pytest.approx(5e-6)


def test_shift_probability_moves_the_crops(tiny_cfg):
    """Without shifting, every crop is centred on its person's box whatever the seed; with
    it, every crop's centre moves."""
    tiny_cfg.data.half_body_prob = 0.0

    def centers(shift_prob, seed):
        tiny_cfg.data.shift_prob, tiny_cfg.train.seed = shift_prob, seed
        dataset = build_train_dataset(tiny_cfg)
        return torch.stack([dataset[i]["center"] for i in range(len(dataset))])

    boxes = centers(0.0, 0)
    torch.testing.assert_close(centers(0.0, 1), boxes, rtol=0, atol=0)
    shifted = centers(1.0, 0)
    assert ((shifted - boxes).abs().amax(dim=1) > 0.5).all()


def test_final_weights_are_scored_with_the_best_checkpoint_beside_them(
    straight_run, tmp_path, monkeypatch
):
    out, _ = straight_run
    final, best = out / "checkpoints" / "final.pt", out / "checkpoints" / "best.pt"
    model, cfg = load_model(final)
    assert cfg.train.epochs == torch.load(final, weights_only=True)["epoch"]
    reads = []
    monkeypatch.setattr(ihl.checkpoint, "safe_load", lambda p: reads.append(p) or safe_load(p))
    metrics = evaluate(final, tmp_path / "eval", best=best, boxes="gt", progress=False)
    assert reads == [final, best]  # each checkpoint read once, its epoch included
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"AP", "best_checkpoint_AP", "best_checkpoint_epoch"} <= set(written)
    # Two epochs validated only at the end: best.pt is the final model, so the APs agree.
    assert metrics["best_checkpoint_AP"] == metrics["AP"]


def test_a_best_checkpoint_with_the_final_weights_is_scored_once(
    straight_run, tmp_path, monkeypatch
):
    out, _ = straight_run
    final = out / "checkpoints" / "final.pt"
    model, cfg = load_model(final)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    other = save_model(tmp_path / "other.pt", model, cfg, epoch=1)
    runs = []
    real = ihl.evaluate._run
    monkeypatch.setattr(ihl.evaluate, "_run", lambda *a, **k: runs.append(a[0]) or real(*a, **k))
    same = evaluate(final, tmp_path / "same", best=out / "checkpoints" / "best.pt", boxes="gt")
    assert len(runs) == 1 and same["best_checkpoint_AP"] == same["AP"]
    changed = evaluate(final, tmp_path / "changed", best=other, boxes="gt", progress=False)
    assert len(runs) == 3 and changed["best_checkpoint_epoch"] == 1
    assert not torch.equal(next(runs[1].parameters()), next(runs[2].parameters()))


def _image_info(tmp_path):
    data = json.loads(COCO_ANN.read_text())
    path = tmp_path / "image_info_test-dev.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "annotations"}))
    return path


def test_test_dev_writes_the_submission_and_no_metrics(tmp_path):
    torch.manual_seed(0)
    cfg = config.load("sample", {"model.input_size": [64, 64], "train.num_workers": 0})
    ckpt = save_model(tmp_path / "model.pt", build_model(cfg.model), cfg)
    metrics = evaluate(
        ckpt,
        tmp_path / "eval",
        data_root=COCO_SAMPLE,
        ann_file=_image_info(tmp_path),
        image_dir=COCO_IMAGES,
        detections=COCO_DETS,
        progress=False,
    )
    assert metrics == {}
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["results.json"]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    validate_results(results)
    image_ids = {d["image_id"] for d in json.loads(COCO_DETS.read_text())}
    assert results and {r["image_id"] for r in results} <= image_ids


@pytest.mark.slow
def test_crowdpose_trains_and_evaluates_end_to_end(tmp_path):
    root = tmp_path / "crowdpose"
    make_crowdpose_synth(root, 12, 3, image_size=(160, 120), seed=1)
    index = prepare("crowdpose", root, tmp_path, decode_images=False)
    assert set(index["splits"]) == {"trainval", "test"}
    cfg = config.load(
        "sample",
        {
            "data.dataset": "crowdpose",
            "data.root": str(root),
            "data.detections": "annotations/det_for_crowd_test_0.1_0.5.json",
            "model.num_joints": 14,
            "model.input_size": [64, 64],
            "model.deconv_channels": 16,
            "train.epochs": 1,
            "train.batch_size": 8,
            "train.num_workers": 0,
            "train.warmup_iters": 2,
            "train.lr_steps": [],
        },
    )
    validation = train(cfg, tmp_path / "run", progress=False)
    assert set(validation) == set(CROWDPOSE_KEYS)
    metrics = evaluate(tmp_path / "run/checkpoints/final.pt", tmp_path / "eval", progress=False)
    assert tuple(metrics) == CROWDPOSE_KEYS
    assert all(0.0 <= v <= 1.0 for v in metrics.values() if v == v)
    results = json.loads((tmp_path / "eval/results.json").read_text())
    assert results and all(len(r["keypoints"]) == 42 for r in results)


def test_train_starts_from_init_from_and_names_a_checkpoint_that_does_not_fit(tiny_cfg, tmp_path):
    from ihl.checkpoint import CheckpointError

    other = config.load("sample", {"model.num_joints": 5})
    tiny_cfg.train.init_from = str(
        save_model(tmp_path / "other.pt", build_model(other.model), other)
    )
    with pytest.raises(CheckpointError, match="other.pt: does not fit"):
        train(tiny_cfg, tmp_path / "run", progress=False)
