"""pybridge._device: one place for CPU/GPU choices, tested on the CPU (CUDA simulated)."""

from __future__ import annotations

import math

import pytest

from pybridge import _device
from pybridge._device import scvi_training


@pytest.fixture
def cuda(monkeypatch):
    """A simulated CUDA device with 80 GiB free (no GPU in this test environment)."""
    monkeypatch.setattr(_device, "_torch_cuda_available", lambda: True)
    monkeypatch.setattr(_device, "_free_gpu_bytes", lambda dev: 80 * 2**30)


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(_device, "_torch_cuda_available", lambda: False)
    assert _device.resolve_device("auto") == "cpu" and _device.resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _device.resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        _device.resolve_device("gpu")
    monkeypatch.setattr(_device, "_torch_cuda_available", lambda: True)
    assert _device.resolve_device("auto") == "cuda" and _device.resolve_device("cuda:1") == "cuda:1"
    assert _device.lightning_kwargs("cuda:1") == {"accelerator": "gpu", "devices": [1]}


@pytest.mark.parametrize("n_obs", [500, 2_000, 50_000, 1_000_000])
def test_cpu_keeps_scvi_tools_defaults(n_obs):
    t = scvi_training("cpu", n_obs=n_obs, n_vars=2000)
    assert (t.device, t.batch_size, t.lr, t.data_loading) == ("cpu", 128, None, "anndata")
    assert t.train_kwargs() == {"batch_size": 128} and t.plan_kwargs() == {}
    # the caller's values are kept as given (no learning-rate scaling on the CPU)
    t = scvi_training("cpu", n_obs=n_obs, n_vars=2000, batch_size=1024, data_loading="device")
    assert (t.batch_size, t.lr, t.data_loading) == (1024, None, "device")


@pytest.mark.parametrize("n_obs,batch", [(1_200, 128), (2_000, 128), (9_000, 128), (9_200, 256), (20_000, 512),
                                         (36_500, 1024), (50_000, 1024), (1_000_000, 1024)])
def test_cuda_batch_size_keeps_32_minibatches_per_epoch_and_scales_lr(cuda, n_obs, batch):
    t = scvi_training("auto", n_obs=n_obs, n_vars=2000)
    assert t.device == "cuda" and t.batch_size == batch
    assert 0.9 * n_obs / t.batch_size >= 32 or t.batch_size == 128
    if batch == 128:
        assert t.lr is None  # small data train exactly as on the CPU
    else:
        assert t.lr == pytest.approx(1e-3 * math.sqrt(batch / 128))
    assert t.rule.startswith("cuda:")


def test_cuda_data_loading_by_memory(cuda):
    # 50k x 2k float32 = 0.37 GiB: a dense copy on the GPU
    t = scvi_training("cuda", n_obs=50_000, n_vars=2000)
    assert t.data_loading == "device"
    assert t.train_kwargs() == {"batch_size": 1024,
                                "datasplitter_kwargs": {"accelerator": "gpu", "device": "auto", "shuffle": True}}
    assert t.plan_kwargs() == {"lr": pytest.approx(2.828e-3, rel=1e-3)}
    # 4M cells x 5k genes = 75 GiB dense: more than a quarter of 80 GiB -> sparse minibatches, pinned
    t = scvi_training("cuda", n_obs=4_000_000, n_vars=5000)
    assert t.data_loading == "sparse"
    assert t.train_kwargs() == {"batch_size": 1024, "load_sparse_tensor": True,
                                "datasplitter_kwargs": {"pin_memory": True}}
    t = scvi_training("cuda:0", n_obs=50_000, n_vars=2000, free_gpu_bytes=1 * 2**30)
    assert t.data_loading == "sparse"  # 0.37 GiB > a quarter of 1 GiB


def test_cuda_caller_values_win(cuda):
    t = scvi_training("cuda", n_obs=50_000, n_vars=2000, batch_size=256)
    assert t.batch_size == 256 and t.lr is None  # the rule scales lr only for its own batch size
    t = scvi_training("cuda", n_obs=50_000, n_vars=2000, lr=5e-4, data_loading="anndata")
    assert t.batch_size == 1024 and t.lr == 5e-4 and t.data_loading == "anndata"
    assert t.train_kwargs() == {"batch_size": 1024}


def test_bad_values():
    with pytest.raises(ValueError, match="data_loading must be one of"):
        scvi_training("cpu", n_obs=10, n_vars=10, data_loading="gpu")
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        scvi_training("cpu", n_obs=10, n_vars=10, batch_size=0)
    with pytest.raises(ValueError, match="lr must be greater than 0"):
        scvi_training("cpu", n_obs=10, n_vars=10, lr=0)
