"""A GPU that was asked for and cannot be used fails at once, naming the driver found and needed."""

import os

import pytest
import torch

from ihl import device
from ihl.device import DeviceError, available_cpus, loader_workers, resolve_device

OLD_DRIVER = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.256.02  Thu May  2 14:37:44 UTC 2024\n"
    "GCC version:  gcc version 9.4.0\n"
)


@pytest.fixture
def cuda_unusable(monkeypatch):
    """torch sees no usable GPU, as on a machine whose driver it cannot load (or on a CPU
    machine), whatever this machine really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def old_driver(cuda_unusable, tmp_path, monkeypatch):
    """A machine with a GPU device node and a driver too old for torch's CUDA build."""
    version = tmp_path / "version"
    version.write_text(OLD_DRIVER)
    node = tmp_path / "nvidia0"
    node.touch()
    monkeypatch.setattr(device, "DRIVER_VERSION_FILE", version)
    monkeypatch.setattr(device, "GPU_DEVICE_FILE", node)
    monkeypatch.setattr(torch.version, "cuda", "13.0")


@pytest.fixture
def no_gpu(cuda_unusable, tmp_path, monkeypatch):
    monkeypatch.setattr(device, "DRIVER_VERSION_FILE", tmp_path / "absent")
    monkeypatch.setattr(device, "GPU_DEVICE_FILE", tmp_path / "absent0")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi either


@pytest.mark.parametrize("asked", ["cuda", "cuda:1"])
def test_cuda_with_an_old_driver_names_both_versions(old_driver, asked):
    with pytest.raises(DeviceError) as err:
        resolve_device(asked)
    message = str(err.value)
    assert "470.256.02" in message and "580.65.06" in message and "CUDA 13.0" in message


def test_auto_on_a_gpu_machine_fails_instead_of_using_the_cpu(old_driver):
    with pytest.raises(DeviceError, match="470.256.02.*--device cpu"):
        resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_without_a_gpu_is_the_cpu_and_cuda_says_no_driver(no_gpu):
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(DeviceError, match="no NVIDIA driver found"):
        resolve_device("cuda")


def test_cpu_only_torch_build_is_named(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(DeviceError, match="CPU-only build"):
        resolve_device("cuda:0")


def test_a_usable_gpu_is_chosen_and_an_index_beyond_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="sees 1 GPU"):
        resolve_device("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a usable CUDA GPU")
def test_this_machines_gpu_is_used_when_it_works():
    assert resolve_device(None).type == "cuda"
    assert torch.ones(1, device=resolve_device("cuda:0")).item() == 1.0


def test_bad_device_string_is_a_device_error():
    with pytest.raises(DeviceError, match="'gpu0'"):
        resolve_device("gpu0")


def test_cpus_follow_the_cgroup_quota_and_affinity(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v1) == 1


def test_loader_workers_share_the_node_between_processes():
    assert loader_workers(8, cpus=64) == 7
    assert loader_workers(1, cpus=16) == 15
    assert loader_workers(8, cpus=4) == 1


def test_a_torchserve_gpu_worker_without_usable_cuda_fails(old_driver, monkeypatch):
    """TorchServe hands a worker a gpu_id when it sees GPUs; the handler used to serve on
    the CPU then."""
    from pathlib import Path
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "serving"))
    import ihl_handler

    context = SimpleNamespace(
        system_properties={"gpu_id": 0, "model_dir": "/nonexistent"},
        manifest={},
        model_yaml_config={},
    )
    with pytest.raises(DeviceError, match="470.256.02"):
        ihl_handler.PoseHandler().initialize(context)
