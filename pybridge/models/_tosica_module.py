"""The torch network of the TOSICA-style annotator (the "module"; :mod:`._tosica` is the model).

Architecture (after TOSICA, Chen et al. 2023, Nat Commun 14:223, "Transformer for one stop
interpretable cell type annotation"):

0. The log-normalised input is standardised per gene (reference mean/sd, buffers set by the
   model) and clipped; optional input dropout.
1. :class:`GeneSetEmbedding` -- a masked linear layer from genes to tokens: token ``t`` is a
   ``token_dim`` vector computed only from the genes of gene set ``t`` (``W_t`` is
   ``|t| x token_dim``, initialised at zero), plus a bias that also serves as the token's
   identity. Stored densely per token group (tokens sorted by size and padded within groups
   of similar size), so the cost is ``sum_t |t| * token_dim`` per cell, not
   ``n_genes * n_tokens * token_dim``.
2. A learned class token prepended to the gene-set tokens.
3. ``n_layers`` pre-norm transformer encoder layers (multi-head self-attention + MLP, ViT
   style); in training, whole gene-set tokens are hidden from attention with probability
   ``token_dropout``. Only the class token feeds the head, so the last layer is evaluated for the class
   token alone (its queries are the class token, keys/values all tokens): exactly the class
   token's output of the full layer at ``1 / n_tokens`` of the attention cost.
4. LayerNorm + linear classification head on the class token.
5. Optionally (``linear_head``), a linear classifier on all standardised genes (clipped to
   +-10) next to the gene-set tokens: its logits are returned separately
   (``linear_logits``); the model averages the two heads' probabilities. Its weights are
   fitted by the model (an L2 logistic regression), not by back-propagation.

The class token's attention over the gene-set tokens in the last layer (mean over heads) is
the per-cell pathway attention TOSICA reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class GeneSetEmbedding(nn.Module):
    """Masked linear map genes -> tokens: token ``t`` sees only the genes in ``token_genes[t]``.

    Parameters
    ----------
    n_genes
        Number of input genes.
    token_genes
        For each token, the indices (into the ``n_genes`` inputs) of its genes.
    token_dim
        Size of each token vector.
    group_size
        Tokens per padded group (tokens are sorted by size before grouping).
    init_scale
        Initial weights are ``N(0, init_scale^2 / |t|)``; 0 (default) starts at zero, so
        genes that never vary in training keep a zero weight.

    Shapes
    ------
    ``forward(x)``: ``x`` is ``(batch, n_genes)`` float -> ``(batch, n_tokens, token_dim)``.
    """

    def __init__(self, n_genes: int, token_genes: Sequence[Sequence[int]], token_dim: int,
                 group_size: int = 32, init_scale: float = 0.0):
        super().__init__()
        self.n_genes = int(n_genes)
        self.n_tokens = len(token_genes)
        self.token_dim = int(token_dim)
        sizes = np.array([len(g) for g in token_genes], dtype=int)
        if self.n_tokens == 0 or np.any(sizes == 0):
            raise ValueError("every token needs at least one gene.")
        order = np.argsort(sizes, kind="stable")
        self.weights = nn.ParameterList()
        self._n_groups = 0
        start = 0
        while start < len(order):
            # a group: up to group_size tokens of similar size (padding <= 2x the smallest)
            stop = start + 1
            while (stop < len(order) and stop - start < group_size
                   and sizes[order[stop]] <= 2 * max(sizes[order[start]], 8)):
                stop += 1
            grp = order[start:stop]
            L = int(sizes[grp].max())
            idx = np.full((len(grp), L), self.n_genes, dtype=np.int64)  # n_genes = padding (zero)
            for i, t in enumerate(grp):
                idx[i, : sizes[t]] = np.asarray(token_genes[t], dtype=np.int64)
            self.register_buffer(f"_idx{self._n_groups}", torch.from_numpy(idx), persistent=False)
            w = torch.randn(len(grp), L, self.token_dim) * (init_scale / math.sqrt(L))
            w[torch.from_numpy(idx) == self.n_genes] = 0.0
            self.weights.append(nn.Parameter(w))
            self._n_groups += 1
            start = stop
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        self.register_buffer("_inverse", torch.from_numpy(inv.astype(np.int64)), persistent=False)
        self.bias = nn.Parameter(torch.randn(self.n_tokens, self.token_dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # genes on rows so each group is a fast row gather: (n_genes + 1, batch), last row = 0
        xt = torch.cat([x.t(), x.new_zeros(1, x.shape[0])], dim=0)
        outs = []
        for g in range(self._n_groups):
            idx = getattr(self, f"_idx{g}")
            xg = F.embedding(idx, xt)  # (tokens in group, L, batch)
            outs.append(torch.bmm(self.weights[g].transpose(1, 2), xg))  # (tokens, dim, batch)
        out = torch.cat(outs, dim=0)[self._inverse]  # (n_tokens, dim, batch), original order
        return out.permute(2, 0, 1) + self.bias


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer (multi-head self-attention + MLP).

    ``forward(x, cls_only=True)`` returns only the first token's output (queries from token 0,
    keys/values from all tokens), identical to row 0 of the full layer.
    """

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"token_dim ({dim}) must be divisible by n_heads ({n_heads}).")
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, *, cls_only: bool = False, need_weights: bool = False,
                key_mask: torch.Tensor | None = None):
        B, T, D = x.shape
        H = self.n_heads
        h = self.norm1(x)
        if cls_only:
            w = self.qkv.weight
            b = self.qkv.bias
            q = F.linear(h[:, :1], w[:D], b[:D])
            kv = F.linear(h, w[D:], b[D:])
            k, v = kv.split(D, dim=-1)
        else:
            q, k, v = self.qkv(h).split(D, dim=-1)
        q = q.reshape(B, -1, H, D // H).transpose(1, 2)  # (B, H, Tq, dh)
        k = k.reshape(B, T, H, D // H).transpose(1, 2)
        v = v.reshape(B, T, H, D // H).transpose(1, 2)
        weights = None
        bias = None
        if key_mask is not None:  # (B, T) True = drop this token as a key
            bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
            bias = bias.masked_fill(key_mask, float("-inf"))[:, None, None, :]
        if need_weights or cls_only:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(D // H)
            if bias is not None:
                att = att + bias
            att = att.softmax(dim=-1)  # (B, H, Tq, T)
            weights = att.mean(dim=1) if need_weights else None
            out = att @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(B, -1, D)
        x = (x[:, :1] if cls_only else x) + self.drop(self.proj(out))
        x = x + self.mlp(self.norm2(x))
        return x, weights


class TOSICAModule(nn.Module):
    """Gene-set-token transformer classifier (see the module docstring).

    Parameters
    ----------
    n_genes
        Number of input genes (log-normalised expression).
    token_genes
        Per token, the input-gene indices it is built from (gene sets, unannotated and learned
        tokens alike).
    n_labels
        Number of classes.
    token_dim, n_heads, n_layers, dropout, mlp_ratio
        Transformer size (TOSICA: 48, 4, 2; here ``n_layers=1`` by default for CPU speed).
    input_dropout, token_dropout
        Training-time dropout of input genes / of whole gene-set tokens.
    clip
        Standardised inputs are clipped to ``[-clip, clip]``.
    linear_head
        Also hold a linear classifier over all genes (``linear_logits``).

    ``forward(x)`` with ``x`` ``(batch, n_genes)`` returns a dict: ``logits`` ``(batch,
    n_labels)``, ``embedding`` ``(batch, token_dim)`` (class token after the final LayerNorm,
    the input of the head), ``linear_logits`` when the model has a linear head and, with
    ``need_attention=True``, ``attention`` ``(batch, n_tokens)`` (class-token attention over
    the gene-set tokens in the last layer, mean over heads; the class token's attention to
    itself is left out, so rows sum to <= 1). ``stats=(mean, inv_sd)`` standardises with
    other per-gene statistics than the reference's (e.g. the query's own).
    """

    def __init__(self, n_genes: int, token_genes: Sequence[Sequence[int]], n_labels: int, *,
                 token_dim: int = 48, n_heads: int = 4, n_layers: int = 1, dropout: float = 0.1,
                 mlp_ratio: float = 4.0, input_dropout: float = 0.0,
                 token_dropout: float = 0.0, clip: float = 10.0, linear_head: bool = False):
        super().__init__()
        self.token_dropout = float(token_dropout)
        self.input_dropout = nn.Dropout(input_dropout)
        # per-gene standardisation of the log-normalised input (reference mean / sd, set by
        # the model after init; identity by default), clipped to +-clip
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("gene_inv_sd", torch.ones(n_genes))
        self.clip = float(clip)
        if n_layers < 1:
            raise ValueError("n_layers must be >= 1.")
        self.embed_tokens = GeneSetEmbedding(n_genes, token_genes, token_dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, token_dim) * 0.02)
        self.layers = nn.ModuleList(
            [EncoderLayer(token_dim, n_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(n_layers)]
        )
        self.norm = nn.LayerNorm(token_dim)
        self.head = nn.Linear(token_dim, n_labels)
        self.linear = nn.Linear(n_genes, n_labels) if linear_head else None
        if self.linear is not None:
            self.linear.requires_grad_(False)

    def forward(self, x: torch.Tensor, *, need_attention: bool = False, stats=None) -> dict:
        mean, inv = (self.gene_mean, self.gene_inv_sd) if stats is None else stats
        xs = (x - mean) * inv
        x = xs.clamp(-self.clip, self.clip)
        tok = self.embed_tokens(self.input_dropout(x))
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tok], dim=1)
        key_mask = None
        if self.training and self.token_dropout > 0:  # drop whole gene-set tokens (never the class token)
            key_mask = torch.rand(h.shape[:2], device=h.device) < self.token_dropout
            key_mask[:, 0] = False
        for layer in self.layers[:-1]:
            h, _ = layer(h, key_mask=key_mask)
        h, w = self.layers[-1](h, cls_only=True, need_weights=need_attention, key_mask=key_mask)
        z = self.norm(h[:, 0])
        out = {"logits": self.head(z), "embedding": z}
        if self.linear is not None:
            out["linear_logits"] = self.linear(xs.clamp(-10.0, 10.0))
        if need_attention:
            out["attention"] = w[:, 0, 1:]
        return out
