"""Config tree: presets, validation errors naming the key, overrides."""

import pytest

from ihl import config

PRESETS = [
    "coco_res50",
    "coco_res101",
    "coco_res152",
    "coco_hrnet_w32",
    "coco_hrnet_w48",
    "mpii_res50",
    "mpii_hrnet_w32",
    "sample",
]


def test_every_required_preset_loads():
    assert set(PRESETS) <= set(config.preset_names())
    for name in PRESETS:
        cfg = config.load(name)
        assert cfg.name == name


def test_paper_hyper_parameters():
    cfg = config.load("coco_hrnet_w32")
    assert cfg.model.heatmap_size == (48, 64)
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.lr_steps) == (5e-4, 210, (170, 200))
    assert cfg.train.warmup_iters == 500 and cfg.train.batch_size == 64
    assert cfg.loss.wasserstein == "sinkhorn" and cfg.loss.flow_per_axis
    assert not cfg.train.scale_lr
    mpii = config.load("mpii_res50")
    assert mpii.model.num_joints == 16 and mpii.model.heatmap_size == (64, 64)


def test_misspelt_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbone: resnet50\n  debais: true\n")
    with pytest.raises(config.ConfigError, match=r"model\.debais: unknown key"):
        config.load(path)


def test_ill_typed_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(config.ConfigError, match=r"train\.epochs"):
        config.load(path)
    path.write_text("model:\n  backbone: vgg16\n")
    with pytest.raises(config.ConfigError, match=r"model\.backbone"):
        config.load(path)


def test_hrnet_refuses_deconvolutions_and_resnet_stages():
    with pytest.raises(config.ConfigError, match="deconv_layers"):
        config.load("coco_hrnet_w32", {"model.deconv_layers": 3})
    with pytest.raises(config.ConfigError, match="resnet_stages"):
        config.load("coco_hrnet_w32", {"model.resnet_stages": 3})
    with pytest.raises(config.ConfigError, match="resnet_stages"):
        config.load("coco_res50", {"model.resnet_stages": 1})
    with pytest.raises(config.ConfigError, match="stride 8"):
        config.load("sample", {"model.resnet_stages": 2, "model.deconv_layers": 4})
    assert (
        config.load("sample", {"model.resnet_stages": 2, "model.deconv_layers": 3}).model.stride
        == 1
    )


def test_overrides_and_unknown_preset():
    cfg = config.load("sample", {"train.epochs": 3, "loss.wasserstein": "sinkhorn"})
    assert cfg.train.epochs == 3 and cfg.loss.wasserstein == "sinkhorn"
    with pytest.raises(config.ConfigError, match="unknown preset 'nope'"):
        config.load("nope")
    with pytest.raises(config.ConfigError, match=r"train\.epoch"):
        config.load("sample", {"train.epoch": 3})


def test_a_bare_off_means_off_where_yaml_reads_it_as_false(tmp_path):
    """`--set train.amp=off` and a params file DVC wrote (`amp: off`, unquoted) reach ihl
    through PyYAML, which reads a bare off as False."""
    cfg = config.load("sample", {"train.amp": False, "detector.amp": False})
    assert (cfg.train.amp, cfg.detector.amp) == ("off", "off")
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  amp: off\ndetector:\n  amp: off\n")
    cfg = config.load(path)
    assert (cfg.train.amp, cfg.detector.amp) == ("off", "off")
    with pytest.raises(config.ConfigError, match=r"train\.amp"):
        config.load("sample", {"train.amp": True})
