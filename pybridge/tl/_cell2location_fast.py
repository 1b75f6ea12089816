"""A faster driver for cell2location's own mapping model (``backend="pybridge"`` of
:func:`pybridge.tl.cell2location`): same model, same guide, same optimiser, less overhead.

The package (cell2location 0.1.5) trains its ``Cell2location`` model through scvi-tools'
Lightning loop: per step, Pyro's ``Trace_ELBO`` re-traces model and guide in Python (dozens
of sample sites, each building distributions), ``pyro.optim.Adam`` runs one torch optimiser
per parameter (34 here), the loss is read back to the host (``.item()``, a device sync), and
cell2location's training plan calls ``gc.collect()`` and ``torch.cuda.empty_cache()`` every
epoch. Its ``sample_posterior`` then draws each of the ``num_samples`` posterior samples with a
full model + guide trace (1,000 model evaluations by default).

Measured on a CPU (2 cores, 1,000 Visium spots x 558 genes, ``benchmarks/bench_deconvolve.py``),
Python/Pyro work per sample site and the per-parameter optimisers are what the JIT and the
single optimiser remove; on a GPU the same per-step overheads (kernel launches from Python,
host syncs) dominate a step (issue 18: 65 ms per epoch for 300 spots on an H200).

This driver keeps the package's model and guide objects (its ``Cell2location`` instance,
priors, initialisation, ``AutoNormal`` guide) and changes only how they are run:

- the ELBO is Pyro's :class:`~pyro.infer.JitTrace_ELBO` (the model + guide trace compiled
  once with TorchScript, then replayed: no Python per sample site); runs shorter than
  ``JIT_MIN_EPOCHS`` (100) use Pyro's plain ``Trace_ELBO``, as the one-off trace would cost more
  than it saves;
- one :class:`torch.optim.Adam` over all guide parameters (``foreach``: one multi-tensor
  kernel; Adam is element-wise, so this is the same update as Pyro's per-parameter Adam
  with the package's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay);
- the per-epoch losses stay on the device and are read once at the end (no sync per step);
- no garbage collection per epoch;
- posterior summaries of ``w_sf`` (cell abundance) are drawn in one vectorised call from the
  guide: ``AutoNormal`` is mean-field, so ``w_sf``'s posterior is ``exp(N(loc, scale))``
  independently of the other sites; ``num_samples`` draws per spot and type, then mean and
  the 5% / 95% quantiles with NumPy's (linear) rule, the package's estimator.

Full-batch training only (the package's recommendation, ``batch_size=None``); minibatch
training uses the package's loop.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._core import progress

#: Adam settings of the package (pyro.optim.Adam defaults, lr from Cell2location.train)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def _device_of(tkw: dict):
    import torch

    if tkw.get("accelerator") == "gpu":
        dev = tkw.get("device", "auto")
        return torch.device("cuda" if dev in ("auto", None) else f"cuda:{int(dev)}")
    return torch.device("cpu")


def _full_batch(mod, device):
    """The registered spot data as one minibatch on ``device`` (the package's data loader)."""
    dl = mod._make_data_loader(adata=mod.adata, batch_size=mod.adata.n_obs, shuffle=False)
    batch = next(iter(dl))
    args, kwargs = mod.module._get_fn_args_from_batch(batch)
    return [a.to(device) for a in args], {k: v.to(device) if v is not None else v for k, v in kwargs.items()}


#: the JIT trace costs about 1.5 s once (2 CPU cores); below this many epochs plain Trace_ELBO is faster overall
JIT_MIN_EPOCHS = 100


def train(mod, *, max_epochs: int, lr: float, tkw: dict, verbose: bool | None = None, jit: bool | None = None):
    """Train ``mod`` (a ``cell2location.models.Cell2location``) full-batch for ``max_epochs`` steps.

    Returns the history ``{"elbo_train": float64 array (max_epochs,)}`` (the loss, negative ELBO,
    of each step, as the package's ``mod.history["elbo_train"]``) and the steady-state seconds
    per epoch (after the first ``min(10, max_epochs // 4)`` epochs, which include the JIT trace).
    """
    import pyro
    import torch
    from pyro.infer import JitTrace_ELBO, Trace_ELBO

    device = _device_of(tkw)
    module = mod.module
    module.to(device)
    args, kwargs = _full_batch(mod, device)
    model, guide = module.model, module.guide
    module.train()
    guide(*args, **kwargs)  # creates the guide's parameters (the package's PyroJitGuideWarmup)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=float(lr), betas=ADAM_BETAS, eps=ADAM_EPS, foreach=True)
    if jit is None:
        jit = max_epochs >= JIT_MIN_EPOCHS
    loss_fn = JitTrace_ELBO(ignore_jit_warnings=True) if jit else Trace_ELBO()
    losses = torch.empty(max_epochs, device=device)
    t0 = time.perf_counter()
    warm = min(10, max_epochs // 4)  # steady-state timing starts after the JIT trace and warm-up
    t_warm = None
    with pyro.validation_enabled(False):
        # progress lines (epoch i/n, elapsed, ETA) when verbose; reading the clock needs no device sync
        for epoch in progress(range(max_epochs), total=max_epochs, desc="cell2location mapping, epoch",
                              verbose=verbose):
            if epoch == warm and warm > 0:
                _sync(device)
                t_warm = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn.differentiable_loss(model, guide, *args, **kwargs)
            loss.backward()
            opt.step()
            losses[epoch] = loss.detach()
    _sync(device)
    t_end = time.perf_counter()
    module.eval()
    h = losses.cpu().numpy().astype(np.float64)
    mod.is_trained_ = True
    steady = (t_end - t_warm) / (max_epochs - warm) if t_warm is not None else (t_end - t0) / max_epochs
    return {"elbo_train": h}, steady


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quantile(x, q: float, dim: int = 0):
    """``numpy.quantile(x, q, axis=dim)`` (linear interpolation) for a torch tensor of any size
    (``torch.quantile`` refuses inputs above 2**24 elements)."""
    import torch

    n = x.shape[dim]
    xs, _ = torch.sort(x, dim=dim)
    pos = q * (n - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    a, b = xs.select(dim, lo), xs.select(dim, hi)
    return a + (b - a) * (pos - lo)


def w_sf_summaries(mod, *, num_samples: int, tkw: dict, seed: int | None = None,
                   chunk_elements: int = 2**25) -> dict:
    """Mean, 5% and 95% quantiles of cell abundance ``w_sf`` (spots x types) from ``num_samples``
    guide draws, vectorised (in spot chunks of at most ``chunk_elements`` sampled values).

    Raises
    ------
    TypeError
        When the guide is not Pyro's ``AutoNormal`` (the package's default for this model):
        then draws need the package's ``sample_posterior``.
    """
    import torch
    from pyro.distributions.transforms import biject_to
    from pyro.infer.autoguide import AutoNormal

    guide = mod.module.guide
    if not isinstance(guide, AutoNormal):
        raise TypeError(f"vectorised sampling needs cell2location's AutoNormal guide, got {type(guide).__name__}; "
                        "use backend='cell2location'.")
    device = _device_of(tkw)
    mod.module.to(device)
    site = guide.prototype_trace.nodes["w_sf"]
    transform = biject_to(site["fn"].support)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item()))
    out = {"mean": [], "q05": [], "q95": []}
    with torch.no_grad():
        loc, scale = guide._get_loc_and_scale("w_sf")  # (spots, types), unconstrained
        n_spots, n_types = loc.shape
        step = max(1, chunk_elements // max(1, num_samples * n_types))
        for s in range(0, n_spots, step):
            lo, sc = loc[s:s + step], scale[s:s + step]
            eps = torch.randn((num_samples, *lo.shape), generator=gen, device=device, dtype=lo.dtype)
            w = transform(lo + sc * eps)
            out["mean"].append(w.mean(0))
            out["q05"].append(_quantile(w, 0.05))
            out["q95"].append(_quantile(w, 0.95))
    return {k: torch.cat(v).cpu().numpy().astype(np.float64) for k, v in out.items()}
