"""Model structure: parameter counts, output shapes, ImageNet checkpoint layouts."""

import pytest
import timm
import torch
import torchvision

from ihl import config
from ihl.models import build_model
from ihl.models.backbones import PoseHRNet, ResNetBackbone, load_imagenet
from ihl.models.pose import count_params


@pytest.mark.parametrize(
    ("preset", "millions"),
    [("coco_res50", 34.0), ("coco_hrnet_w32", 28.5), ("coco_hrnet_w48", 63.6)],
)
def test_parameter_counts_match_the_paper(preset, millions):
    cfg = config.load(preset, {"model.pretrained": False})
    params = count_params(build_model(cfg.model))
    assert abs(params / 1e6 - millions) / millions < 0.01


@pytest.mark.parametrize("head", ["ihl", "integral", "heatmap"])
def test_output_shapes(head):
    cfg = config.load("sample", {"model.head": head})
    model = build_model(cfg.model).eval()
    w, h = cfg.model.input_size
    out = model(torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8))
    hw, hh = cfg.model.heatmap_size
    assert out["maps"].shape == (2, 17, hh, hw)
    assert out["coords"].shape == (2, 17, 2)
    assert ((out["coords"] >= 0) & (out["coords"] < 1)).all()
    if head == "ihl":
        assert out["sigma"].shape == (2, 17, 2)
        assert (out["sigma"] > 0).all()


def test_pose_hrnet_emits_only_the_stride4_branch():
    net = PoseHRNet(32)
    assert len(net.stage4[-1].fuse_layers) == 1
    assert len(net.stage4[0].fuse_layers) == 4
    assert net(torch.zeros(1, 3, 256, 192)).shape == (1, 32, 64, 48)


def test_hrnet_imagenet_checkpoint_layout_loads(tmp_path):
    """The HRNet project's ImageNet file (hrnet_w32-36af842e.pth) uses the classification
    network's names, which timm's classification HRNet reproduces key for key."""
    classifier = timm.create_model("hrnet_w32", pretrained=False)
    state = classifier.state_dict()
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv3.weight",
        "transition1.1.0.0.weight",
        "stage2.0.fuse_layers.0.1.0.weight",
        "stage4.2.branches.3.3.bn2.weight",
        "incre_modules.0.0.conv1.weight",
        "classifier.weight",
    ):
        assert key in state
    path = tmp_path / "hrnet_w32-36af842e.pth"
    torch.save(state, path)
    net = PoseHRNet(32)
    ignored = load_imagenet(net, path)
    assert any(k.startswith("incre_modules") for k in ignored)
    assert any(k.startswith("stage4.2.fuse_layers.1") for k in ignored)
    torch.testing.assert_close(
        net.stage3[1].branches[2][0].conv1.weight, state["stage3.1.branches.2.0.conv1.weight"]
    )
    del state["stage2.0.branches.0.0.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="stage2.0.branches.0.0.conv1.weight"):
        load_imagenet(PoseHRNet(32), path)


def test_resnet_torchvision_checkpoint_layout_loads(tmp_path):
    state = torchvision.models.resnet50().state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    backbone = ResNetBackbone(50)
    assert load_imagenet(backbone, path) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(backbone.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])


@pytest.mark.parametrize(
    ("stages", "stride", "channels"), [(4, 32, 512), (3, 16, 256), (2, 8, 128)]
)
def test_truncated_resnet_features(stages, stride, channels):
    backbone = ResNetBackbone(18, stages)
    assert backbone.out_channels == channels
    assert backbone(torch.zeros(1, 3, 96, 64)).shape == (1, channels, 96 // stride, 64 // stride)
    assert not any(k.startswith(f"layer{stages + 1}") for k in backbone.state_dict())
    cfg = config.load("sample", {"model.resnet_stages": stages, "model.deconv_layers": 1})
    assert cfg.model.stride == stride // 2


def test_truncated_resnet_loads_imagenet_weights_without_its_dropped_stage(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    backbone = ResNetBackbone(18, 3)
    ignored = load_imagenet(backbone, path)
    assert "layer4.1.conv2.weight" in ignored and "fc.weight" in ignored
    torch.testing.assert_close(backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_model_info_reports_params_and_macs():
    from ihl.model_info import model_info

    info = model_info(config.load("coco_res50"))
    assert info["input_size"] == [192, 256]
    assert abs(info["params"] - 34.0e6) / 34.0e6 < 0.01
    # ResNet-50 at 256x192 ~4.0 GMACs, three deconvolutions ~1.4 GMACs.
    assert 5.2 < info["gmacs"] < 5.7
