"""The one place where pybridge chooses between CPU and GPU.

Every job takes ``device="auto" | "cpu" | "cuda"`` and resolves it here, so the choice is
made identically everywhere: torch models get a ``torch.device``, Lightning trainers get
``accelerator``/``devices``, and array code gets an array module ``xp`` (:mod:`numpy` on
CPU, :mod:`cupy` on GPU) so the same lines run on both.
"""

from __future__ import annotations

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
