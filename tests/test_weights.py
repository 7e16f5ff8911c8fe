"""ImageNet weights staged once in a folder: pretrained configs load them with no network."""

import urllib.error

import pytest
import torch
import torchvision

from ihl import config
from ihl.models import build_model
from ihl.models.backbones import ResNetBackbone
from ihl.weights import WEIGHTS_ENV, WeightsError, fetch, weights_file


def published_resnet18() -> dict[str, torch.Tensor]:
    """What the download gives: torchvision's ResNet-18 layout, classifier included."""
    torch.manual_seed(7)
    return torchvision.models.resnet18(weights=None).state_dict()


def no_internet(self):
    raise urllib.error.URLError("no route to host")


@pytest.fixture
def sample_pretrained():
    return config.load("sample", {"model.pretrained": True, "model.resnet_stages": 3}).model


def test_fetch_stages_once_and_pretrained_loads_the_staged_file(
    tmp_path, monkeypatch, sample_pretrained
):
    published = published_resnet18()
    monkeypatch.setattr(ResNetBackbone, "imagenet_state_dict", lambda self: published)
    path = fetch("resnet18", tmp_path)
    assert path == weights_file(tmp_path, "resnet18") and path.is_file()
    assert torch.load(path, weights_only=True).keys() == published.keys()

    monkeypatch.setattr(ResNetBackbone, "imagenet_state_dict", no_internet)
    assert fetch("resnet18", tmp_path) == path  # already staged: no download
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    model = build_model(sample_pretrained)
    for key, value in model.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, published[key]), key


def test_configured_folder_without_the_file_names_the_fetch_command(
    tmp_path, monkeypatch, sample_pretrained
):
    monkeypatch.setattr(ResNetBackbone, "imagenet_state_dict", no_internet)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsError, match=r"ihl weights fetch resnet18 "):
        build_model(sample_pretrained)


def test_failed_download_says_how_to_stage(monkeypatch, sample_pretrained):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(ResNetBackbone, "imagenet_state_dict", no_internet)
    with pytest.raises(WeightsError, match=WEIGHTS_ENV):
        build_model(sample_pretrained)


def test_weights_fetch_command(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(ResNetBackbone, "imagenet_state_dict", lambda self: published_resnet18())
    result = cli("weights", "fetch", "resnet18", tmp_path / "w")
    assert result.exit_code == 0, result.output
    assert weights_file(tmp_path / "w", "resnet18").is_file()
    assert f"{WEIGHTS_ENV}={tmp_path / 'w'}" in result.output
    monkeypatch.setattr(ResNetBackbone, "imagenet_state_dict", no_internet)
    failed = cli("weights", "fetch", "resnet34", tmp_path / "w")
    assert failed.exit_code != 0 and "cannot download ImageNet weights" in failed.output
    assert not weights_file(tmp_path / "w", "resnet34").exists()
