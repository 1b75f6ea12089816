"""The one place where pybridge chooses between CPU and GPU.

Every job takes ``device="auto" | "cpu" | "cuda"`` and resolves it here, so the choice is
made identically everywhere: torch models get a ``torch.device``, Lightning trainers get
``accelerator``/``devices``, and array code gets an array module ``xp`` (:mod:`numpy` on
CPU, :mod:`cupy` on GPU) so the same lines run on both.

Device-dependent training defaults live here too: :func:`scvi_training` (minibatch size,
learning rate and data loading of scVI; CPU: scvi-tools' defaults, CUDA: settings that keep
the GPU busy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

Device = Literal["auto", "cpu", "cuda"]
_VALID = ("auto", "cpu", "cuda")


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return bool(torch.cuda.is_available())


def _cupy_cuda_available() -> bool:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # cupy installed but no driver / device
        return False


def resolve_device(device: str = "auto", *, backend: Literal["torch", "cupy"] = "torch") -> str:
    """Resolve a user's device choice to ``"cpu"`` or ``"cuda"``.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"`` (also ``"cuda:N"``).
    backend
        Which library must see the GPU: ``"torch"`` for models, ``"cupy"`` for array code.

    Returns
    -------
    ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` is passed through).

    Raises
    ------
    ValueError
        If ``device`` is not one of ``"auto"``, ``"cpu"``, ``"cuda"``.
    RuntimeError
        If ``"cuda"`` is requested and no CUDA device is visible to ``backend``.
    """
    if not isinstance(device, str) or not (device in _VALID or device.startswith("cuda:")):
        raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda' (or 'cuda:N'), got {device!r}.")
    available = _torch_cuda_available() if backend == "torch" else _cupy_cuda_available()
    if device == "auto":
        return "cuda" if available else "cpu"
    if device.startswith("cuda") and not available:
        hint = (
            "install a CUDA build of torch" if backend == "torch" else "pip install 'pybridge[gpu]' (cupy-cuda12x)"
        )
        raise RuntimeError(
            f"device={device!r} was requested but {backend} sees no CUDA device. "
            f"Use device='cpu' (or 'auto'), or {hint}."
        )
    return device


def torch_device(device: str = "auto"):
    """Return a :class:`torch.device` for ``device`` (see :func:`resolve_device`)."""
    import torch

    return torch.device(resolve_device(device, backend="torch"))


def lightning_kwargs(device: str = "auto") -> dict:
    """``accelerator``/``devices`` keyword arguments for scvi-tools / Lightning ``train()``."""
    dev = resolve_device(device, backend="torch")
    if dev == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    if ":" in dev:
        return {"accelerator": "gpu", "devices": [int(dev.split(":")[1])]}
    return {"accelerator": "gpu", "devices": 1}


def get_array_module(device: str = "auto") -> ModuleType:
    """Return the array module for ``device``: :mod:`numpy` on CPU, :mod:`cupy` on CUDA.

    Use with :func:`get_sparse_module` so array code is written once, ``xp.log1p(...)``.
    """
    dev = resolve_device(device, backend="cupy")
    if dev == "cpu":
        import numpy

        return numpy
    import cupy

    return cupy


def get_sparse_module(xp: ModuleType) -> ModuleType:
    """Return :mod:`scipy.sparse` for numpy, :mod:`cupyx.scipy.sparse` for cupy."""
    if xp.__name__ == "numpy":
        import scipy.sparse

        return scipy.sparse
    import cupyx.scipy.sparse

    return cupyx.scipy.sparse


def to_host(x):
    """Move an array (dense or sparse, numpy or cupy) to host memory; no-op on host arrays."""
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    return x


# ----------------------------------------------------------------------------- scVI training

#: minibatch size (cells) on the CPU: scvi-tools' default, unchanged
CPU_BATCH_SIZE = 128
#: largest minibatch the GPU rule picks
GPU_BATCH_SIZE = 1024
#: the GPU rule keeps at least this many minibatches per epoch (small data keep batch 128)
GPU_MIN_STEPS_PER_EPOCH = 32
#: scvi-tools' learning rate (``TrainingPlan(lr=1e-3)``), the reference for the scaling rule
BASE_LR = 1e-3
#: share of free GPU memory a dense copy of the training data may take ("device" loading)
GPU_DATA_FRACTION = 0.25
_DATA_LOADING = ("anndata", "device", "sparse")


@dataclass(frozen=True)
class ScviTraining:
    """Training settings for one scvi-tools model, as chosen by :func:`scvi_training`.

    Attributes
    ----------
    device
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    batch_size
        Minibatch size (cells).
    lr
        Learning rate, or ``None`` for scvi-tools' default (1e-3).
    data_loading
        ``"anndata"``: scvi-tools' loader (CSR rows sliced and densified on the host per
        minibatch, then copied); ``"device"``: the training matrix is copied densely to the
        device once and minibatches are drawn by indexing there
        (:class:`scvi.dataloaders.DeviceBackedDataSplitter`, shuffled); ``"sparse"``: CSR
        minibatches are copied as sparse tensors from pinned memory and densified on the
        device (``load_sparse_tensor=True``, ``pin_memory=True``).
    rule
        Why these values (stored with the results).
    """

    device: str
    batch_size: int
    lr: float | None
    data_loading: str
    rule: str

    def train_kwargs(self) -> dict:
        """``batch_size`` and data-loading arguments for scvi-tools ``UnsupervisedTrainingMixin.train``
        (the learning rate goes into ``plan_kwargs``, see :meth:`plan_kwargs`)."""
        kw: dict = {"batch_size": self.batch_size}
        if self.data_loading == "sparse":
            kw.update(load_sparse_tensor=True, datasplitter_kwargs={"pin_memory": True})
        elif self.data_loading == "device":
            acc = lightning_kwargs(self.device)
            dev = acc["devices"][0] if isinstance(acc["devices"], list) else "auto"
            kw["datasplitter_kwargs"] = {"accelerator": acc["accelerator"], "device": dev, "shuffle": True}
        return kw

    def plan_kwargs(self) -> dict:
        return {} if self.lr is None else {"lr": self.lr}


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(x).bit_length() - 1) if x >= 1 else 1


def _free_gpu_bytes(device: str) -> int:
    import torch

    idx = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    free, _total = torch.cuda.mem_get_info(idx)
    return int(free)


def scvi_training(device: str = "auto", *, n_obs: int, n_vars: int, batch_size: int | None = None,
                  lr: float | None = None, data_loading: str | None = None,
                  free_gpu_bytes: int | None = None) -> ScviTraining:
    """Minibatch size, learning rate and data loading for scVI training on ``device``: the one rule.

    - **CPU**: scvi-tools' defaults, unchanged: minibatches of 128 cells, learning rate 1e-3,
      its AnnData loader.
    - **CUDA**: a GPU is fast only when it is kept busy, so

      * ``batch_size`` = the largest power of two <= ``0.9 * n_obs / 32`` (the training cells,
        at least 32 minibatches per epoch), between 128 and 1024: 1024 from ~36,400 cells on,
        128 below ~9,100 cells (small data train as on the CPU);
      * the learning rate grows with the square root of the batch size, ``1e-3 *
        sqrt(batch_size / 128)`` (2.8e-3 at 1024): the square-root scaling rule for adaptive
        optimisers (Malladi et al. 2022, *On the SDEs and scaling rules for adaptive gradient
        algorithms*, NeurIPS), keeping the update noise per epoch comparable;
      * the data: when a dense float32 copy of the training matrix (``n_obs x n_vars x 4``
        bytes) fits in a quarter of the free GPU memory it is put on the GPU once and
        minibatches are drawn there (no per-minibatch host work: CSR slicing, densifying,
        copying); otherwise CSR minibatches travel as sparse tensors from pinned memory.

    Values given by the caller win (``batch_size``, ``lr``, ``data_loading``); the learning rate
    is scaled only when the rule chose the batch size.

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (:func:`resolve_device`).
    n_obs, n_vars
        Cells and genes of the training data.
    batch_size, lr, data_loading
        The caller's choices, or ``None`` for the rule. ``data_loading``: ``"anndata"``,
        ``"device"`` or ``"sparse"`` (see :class:`ScviTraining`; ``"device"`` also works on the
        CPU: a dense copy in host memory).
    free_gpu_bytes
        Free GPU memory (bytes); ``None`` asks torch.

    Returns
    -------
    :class:`ScviTraining`

    Raises
    ------
    ValueError
        Unknown ``device`` or ``data_loading``; ``batch_size`` < 1 or ``lr`` <= 0.
    RuntimeError
        ``"cuda"`` requested without a visible GPU.
    """
    dev = resolve_device(device, backend="torch")
    if data_loading is not None and data_loading not in _DATA_LOADING:
        raise ValueError(f"data_loading must be one of {', '.join(map(repr, _DATA_LOADING))} or None, "
                         f"got {data_loading!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be greater than 0, got {lr!r}.")
    if dev == "cpu":
        return ScviTraining(dev, int(batch_size or CPU_BATCH_SIZE), lr, data_loading or "anndata",
                            "cpu: scvi-tools defaults (batch 128, lr 1e-3, AnnData loader)")
    parts = []
    if batch_size is None:
        batch_size = min(GPU_BATCH_SIZE, max(CPU_BATCH_SIZE, _pow2_floor(0.9 * n_obs / GPU_MIN_STEPS_PER_EPOCH)))
        parts.append(f"batch {batch_size} (>= {GPU_MIN_STEPS_PER_EPOCH} minibatches per epoch, 128-1024)")
        if lr is None and batch_size != CPU_BATCH_SIZE:
            lr = BASE_LR * math.sqrt(batch_size / CPU_BATCH_SIZE)
            parts.append(f"lr {lr:.2g} (1e-3 x sqrt(batch / 128))")
    if data_loading is None:
        need = int(n_obs) * int(n_vars) * 4
        free = _free_gpu_bytes(dev) if free_gpu_bytes is None else int(free_gpu_bytes)
        data_loading = "device" if need <= GPU_DATA_FRACTION * free else "sparse"
        parts.append(f"data {data_loading} ({need / 2**30:.2f} GiB dense, {free / 2**30:.1f} GiB free)")
    return ScviTraining(dev, int(batch_size), lr, data_loading, "cuda: " + "; ".join(parts or ["caller's settings"]))
