"""PyTorch training layers for binary normalized networks (docs/maths.md).

This module needs torch; ``import bitnn`` never imports it.

Every parameter tensor (kernel and bias, separately) keeps a float copy that
the optimiser updates; the forward pass uses its bits ``p > mean(p)`` through a
straight-through estimator (docs/maths.md, Training). Every layer output is
``act(Normalize(z))`` with no learnable scale or shift (docs/maths.md, Normalize), and the
layers compute the same thing in train and eval mode.

Layout conventions (what the exporter reads):

- ``BinaryLinear.weight``: float ``(out_features, in_features)``, bias ``(out_features,)``.
- ``BinaryConv2d.weight``: float ``(out_channels, in_channels, k, k)`` (PyTorch
  order; the runtime wants ``(C_out, kh, kw, C_in)``, see docs/packing.md),
  bias ``(out_channels,)``. Inputs are NCHW.
- ``layer.binary_weight()`` / ``layer.binary_bias()``: the bits as 0/1 float tensors.
- ``layer.activation`` in ``{"linear", "relu", "gelu", "softmax"}``, ``layer.eps``,
  and for convolutions ``layer.norm`` in ``{"chw", "c"}``.
- ``BinaryCNN.ops()``: the forward pass as a list of ``(kind, module)``.
- ``BinaryLM`` (the language decoder, docs/maths.md): ``embedding.token`` /
  ``embedding.position`` (BinaryLinear ``(emb_dim, vocab)`` / ``(emb_dim, max_len)``,
  used as column gathers), ``blocks[i].attn.q/k/v/out`` (``(D, D)``),
  ``blocks[i].ff1`` (``(ff_dim, D)``, gelu), ``blocks[i].ff2`` (``(D, ff_dim)``),
  ``head[i]`` (gelu), ``output`` (``(vocab, width)``, linear). Its parameterless
  Normalize steps are :class:`Normalize` modules (learnable only in the fp32 twin).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

try:
    import torch
except ImportError as _e:  # torch is an optional dependency: say how to get it
    raise ImportError('bitnn.nn (training and export) needs PyTorch: pip install "bitnn[torch]" '
                      f"(it pins torch==2.13.0) ({_e})") from None
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "CONV_NORMS",
    "quantize",
    "quantize_ste",
    "normalize",
    "BinaryLinear",
    "BinaryConv2d",
    "FloatLinear",
    "FloatConv2d",
    "GlobalAvgPool2d",
    "BinaryCNN",
    "FloatCNN",
    "Normalize",
    "BinaryEmbedding",
    "BinaryMultiHeadAttention",
    "BinaryTransformerBlock",
    "BinaryLM",
    "FloatLM",
]

ACTIVATIONS = ("linear", "relu", "gelu", "softmax")
# Normalize axes of a convolution output, as negative dims of (..., C, H, W).
CONV_NORMS = {"chw": (-3, -2, -1), "c": (-3,)}


# --------------------------------------------------------------------------
# Quantization (Eq. 1) and Normalize
# --------------------------------------------------------------------------

def quantize(p: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``1`` where ``p > mean(p)`` (strict), else ``0``, in ``p.dtype``.

    The mean is over the whole tensor. It is taken in float64 so that the
    threshold does not depend on the summation order of a float32 mean (and
    an all-equal tensor gives exactly its value as mean, hence all zeros).
    No gradient flows through this function; use :func:`quantize_ste`.
    """
    if p.numel() == 0:
        return torch.zeros_like(p)
    p64 = p.detach().to(torch.float64)
    return (p64 > p64.mean()).to(p.dtype)


def quantize_ste(p: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: forward value ``quantize(p)``, gradient identity."""
    return p + (quantize(p) - p).detach()


def normalize(z: torch.Tensor, dims: int | Sequence[int] = -1, eps: float = 1e-5) -> torch.Tensor:
    """``(z - mean) / sqrt(var + eps)`` over ``dims``, population variance, no parameters."""
    if isinstance(dims, int):
        dims = (dims,)
    nd = z.dim()
    axes = sorted({d % nd for d in dims})
    # F.layer_norm computes exactly this and is several times faster on CPU
    # (forward and backward) than var_mean; use it when the axes allow.
    if axes == list(range(nd - len(axes), nd)):
        return F.layer_norm(z, z.shape[nd - len(axes):], eps=eps)
    if len(axes) == 1:
        a = axes[0]
        return F.layer_norm(z.movedim(a, -1), (z.shape[a],), eps=eps).movedim(-1, a)
    d = z - z.mean(axes, keepdim=True)
    return d * torch.rsqrt(d.square().mean(axes, keepdim=True) + eps)


def _check_activation(activation: str | None) -> str:
    act = "linear" if activation is None else activation
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; "
                         f"expected None or one of {ACTIVATIONS}")
    return act


def _activate(x: torch.Tensor, activation: str, channel_dim: int) -> torch.Tensor:
    if activation == "relu":
        return F.relu(x)
    if activation == "gelu":
        return F.gelu(x)  # exact erf form
    if activation == "softmax":
        return torch.softmax(x, dim=channel_dim)
    return x


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_eps(eps) -> float:
    eps = float(eps)
    if not (eps > 0.0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return eps


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------

class _NormLayer(nn.Module):
    """Shared part of the linear/conv layers: act(Normalize(z)), optionally affine.

    Subclasses set ``weight``, ``bias``, ``_norm_dims``, ``_channel_dim`` and
    implement ``_raw(x)`` (the affine map with the effective parameters).
    ``binary`` is a class attribute: True for the paper's binary layers.
    """

    binary = True
    activation: str
    eps: float

    def _init_params(self, weight_shape, bias_len: int) -> None:
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.zeros(bias_len))
        nn.init.xavier_uniform_(self.weight)  # Glorot uniform, zero bias (docs/maths.md)

    def effective_weight(self) -> torch.Tensor:
        return quantize_ste(self.weight) if self.binary else self.weight

    def effective_bias(self) -> torch.Tensor:
        return quantize_ste(self.bias) if self.binary else self.bias

    def binary_weight(self) -> torch.Tensor:
        """The weight bits as a 0/1 float tensor (same shape as ``weight``)."""
        return quantize(self.weight.detach())

    def binary_bias(self) -> torch.Tensor:
        """The bias bits as a 0/1 float tensor (same shape as ``bias``)."""
        return quantize(self.bias.detach())

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize(z) (plus the learnable affine of a float layer), before the activation."""
        h = normalize(self._raw(x), self._norm_dims, self.eps)
        if not self.binary:
            shape = [1] * h.dim()
            shape[self._channel_dim] = -1
            h = h * self.norm_weight.view(shape) + self.norm_bias.view(shape)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activate(self.preact(x), self.activation, self._channel_dim)


class BinaryLinear(_NormLayer):
    """BNFCL: ``act(Normalize(x @ Wb.T + bb))`` with Normalize over the last axis."""

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 eps: float = 1e-5):
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        self.activation = _check_activation(activation)
        self.eps = _check_eps(eps)
        self._norm_dims = (-1,)
        self._channel_dim = -1
        self._init_params((out_features, in_features), out_features)
        if not self.binary:
            self.norm_weight = nn.Parameter(torch.ones(out_features))
            self.norm_bias = nn.Parameter(torch.zeros(out_features))

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.effective_bias())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation!r}, eps={self.eps}")


class BinaryConv2d(_NormLayer):
    """BNCVL: ``act(Normalize(conv(x, Wb) + bb))``, stride 1, 'same' padding, odd k.

    ``norm="chw"`` normalizes over (C, H, W) of each example; ``norm="c"`` over
    C at each spatial position. Input ``(N, C, H, W)`` or ``(C, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 activation: str | None = None, norm: str = "chw", eps: float = 1e-5):
        super().__init__()
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.out_channels = _check_positive_int("out_channels", out_channels)
        self.kernel_size = _check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        if norm not in CONV_NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {tuple(CONV_NORMS)}")
        self.activation = _check_activation(activation)
        self.norm = norm
        self.eps = _check_eps(eps)
        self.padding = kernel_size // 2
        self._norm_dims = CONV_NORMS[norm]
        self._channel_dim = -3
        self._init_params((out_channels, in_channels, kernel_size, kernel_size), out_channels)
        if not self.binary:
            self.norm_weight = nn.Parameter(torch.ones(out_channels))
            self.norm_bias = nn.Parameter(torch.zeros(out_channels))

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.effective_bias(), padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"activation={self.activation!r}, norm={self.norm!r}, eps={self.eps}")


class FloatLinear(BinaryLinear):
    """fp32 baseline of BinaryLinear: float weights, Normalize with learnable
    per-unit scale ``norm_weight`` and shift ``norm_bias`` (i.e. LayerNorm)."""

    binary = False


class FloatConv2d(BinaryConv2d):
    """fp32 baseline of BinaryConv2d: float weights, Normalize over the same
    axes with learnable per-channel scale ``norm_weight`` and shift ``norm_bias``."""

    binary = False


class GlobalAvgPool2d(nn.Module):
    """(N, C, H, W) -> (N, C): mean over H and W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


# --------------------------------------------------------------------------
# Image classifier (Alg. 7)
# --------------------------------------------------------------------------

class BinaryCNN(nn.Module):
    """BCVNN (docs/maths.md, The image classifier) for any widths and depth.

    ``len(channels)`` blocks of two 'same' convolutions (relu); a 2x2/2 max-pool
    (floor) after every block but the last; global average pooling; one
    relu fully connected layer per entry of ``fc_units``; a final
    ``num_classes`` layer with softmax. ``forward`` returns class
    probabilities; train with ``F.cross_entropy(model.logits(x), y)``.

    ``binary=False`` builds the paper's fp32 baseline of the same shape
    (:class:`FloatConv2d` / :class:`FloatLinear`, and dropout
    ``dropout[i]`` after the i-th hidden fully connected layer). Binary models
    have no dropout. The constructor arguments are kept in ``model.config``.

    Input: float ``(N, in_channels, H, W)`` (already preprocessed).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 101,
                 channels: Sequence[int] = (32, 64, 64, 128, 256), kernel_size: int = 3,
                 fc_units: Sequence[int] = (256, 256), norm: str = "chw", binary: bool = True,
                 eps: float = 1e-5, dropout: Sequence[float] = (0.4, 0.3)):
        super().__init__()
        channels = [_check_positive_int("channels[i]", c) for c in _as_list("channels", channels)]
        fc_units = [_check_positive_int("fc_units[i]", u) for u in _as_list("fc_units", fc_units)]
        dropout = [float(p) for p in _as_list("dropout", dropout)]
        if not channels:
            raise ValueError("channels must name at least one block")
        if any(not 0.0 <= p < 1.0 for p in dropout):
            raise ValueError(f"dropout probabilities must be in [0, 1), got {dropout}")
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_classes", num_classes)
        self.config = {
            "in_channels": in_channels, "num_classes": num_classes, "channels": channels,
            "kernel_size": kernel_size, "fc_units": fc_units, "norm": norm,
            "binary": bool(binary), "eps": float(eps), "dropout": dropout,
        }
        self.binary = bool(binary)
        conv_cls = BinaryConv2d if binary else FloatConv2d
        lin_cls = BinaryLinear if binary else FloatLinear

        feats: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels):
            feats.append(conv_cls(c_in, c, kernel_size, "relu", norm, eps))
            feats.append(conv_cls(c, c, kernel_size, "relu", norm, eps))
            if i < len(channels) - 1:
                feats.append(nn.MaxPool2d(2, 2))
            c_in = c
        feats.append(GlobalAvgPool2d())
        self.features = nn.Sequential(*feats)

        head: list[nn.Module] = []
        f_in = c_in
        for i, u in enumerate(fc_units):
            head.append(lin_cls(f_in, u, "relu", eps))
            if not binary and i < len(dropout) and dropout[i] > 0:
                head.append(nn.Dropout(dropout[i]))
            f_in = u
        self.hidden = nn.Sequential(*head)
        self.output = lin_cls(f_in, num_classes, "softmax", eps)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize(z) of the final layer: ``forward(x) == softmax(logits(x), -1)``."""
        return self.output.preact(self.hidden(self.features(x)))

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)

    def ops(self) -> list[tuple[str, nn.Module]]:
        """The inference graph in forward order, dropout left out.

        Kinds: ``"conv"`` (BinaryConv2d/FloatConv2d), ``"maxpool"`` (2x2 stride
        2, floor), ``"gap"`` (global average pool, NCHW -> NC), ``"linear"``
        (BinaryLinear/FloatLinear; the last one has activation "softmax").
        """
        out: list[tuple[str, nn.Module]] = []
        for m in list(self.features) + list(self.hidden) + [self.output]:
            if isinstance(m, BinaryConv2d):
                out.append(("conv", m))
            elif isinstance(m, nn.MaxPool2d):
                out.append(("maxpool", m))
            elif isinstance(m, GlobalAvgPool2d):
                out.append(("gap", m))
            elif isinstance(m, BinaryLinear):
                out.append(("linear", m))
            elif isinstance(m, nn.Dropout):
                continue
            else:  # pragma: no cover - construction only adds the kinds above
                raise TypeError(f"unexpected module {type(m).__name__}")
        return out


class FloatCNN(BinaryCNN):
    """The fp32 baseline: ``BinaryCNN(..., binary=False)``."""

    def __init__(self, *args, **kwargs):
        kwargs["binary"] = False
        super().__init__(*args, **kwargs)


def _as_list(name: str, value) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a sequence, got {value!r}")
    return list(value)


# --------------------------------------------------------------------------
# Language decoder (docs/maths.md, The language decoder; csrc/graph/lm.c)
# --------------------------------------------------------------------------

class Normalize(nn.Module):
    """Normalize over the last axis: parameterless in binary models; with a
    learnable per-feature scale and shift (``norm_weight``, ``norm_bias``,
    i.e. LayerNorm) in the fp32 twin (``binary=False``)."""

    def __init__(self, features: int, eps: float = 1e-5, binary: bool = True):
        super().__init__()
        self.features = _check_positive_int("features", features)
        self.eps = _check_eps(eps)
        self.binary = bool(binary)
        if not self.binary:
            self.norm_weight = nn.Parameter(torch.ones(features))
            self.norm_bias = nn.Parameter(torch.zeros(features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return F.layer_norm(z, (self.features,), eps=self.eps)
        return F.layer_norm(z, (self.features,), self.norm_weight, self.norm_bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.features}, eps={self.eps}, binary={self.binary}"


def _gather_normalized(layer: BinaryLinear, idx: torch.Tensor) -> torch.Tensor:
    """``layer`` applied to one-hot inputs ``idx``: Normalize(W[:, idx] + b).

    A gather of the (quantized) weight's columns, never a one-hot matmul; the
    same value as ``layer.preact(one_hot(idx))`` (a linear layer has no
    activation to apply).
    """
    z = F.embedding(idx, layer.effective_weight().t()) + layer.effective_bias()
    h = normalize(z, -1, layer.eps)
    if not layer.binary:
        h = h * layer.norm_weight + layer.norm_bias
    return h


class BinaryEmbedding(nn.Module):
    """BEMBL (docs/maths.md, Embedding): ``Normalize(Wb_tok[:, t] + bb_tok) +
    Normalize(Wb_pos[:, p] + bb_pos)`` for token ``t`` at position ``p``.

    ``token`` is a BinaryLinear(vocab_size -> emb_dim, linear) applied to the
    one-hot token and ``position`` one applied to the one-hot position
    ``0..max_len-1``; both are computed as column gathers. Returns the SUM of
    the two normalized embeddings; :class:`BinaryLM` applies the outer
    Normalize (as csrc/graph/lm.c does). ``forward(ids)``: int ``(B, T)`` (or
    ``(T,)``) -> ``(..., T, emb_dim)``; positions are ``0..T-1``.
    """

    def __init__(self, vocab_size: int, max_len: int, emb_dim: int, eps: float = 1e-5,
                 binary: bool = True):
        super().__init__()
        self.vocab_size = _check_positive_int("vocab_size", vocab_size)
        self.max_len = _check_positive_int("max_len", max_len)
        self.emb_dim = _check_positive_int("emb_dim", emb_dim)
        self.eps = _check_eps(eps)
        self.binary = bool(binary)
        lin_cls = BinaryLinear if binary else FloatLinear
        self.token = lin_cls(vocab_size, emb_dim, "linear", eps)
        self.position = lin_cls(max_len, emb_dim, "linear", eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[-1]
        if T > self.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_len {self.max_len}")
        pos = torch.arange(T, device=ids.device)
        return _gather_normalized(self.token, ids) + _gather_normalized(self.position, pos)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, max_len={self.max_len}, "
                f"emb_dim={self.emb_dim}, binary={self.binary}")


class BinaryMultiHeadAttention(nn.Module):
    """BATL (docs/maths.md, Attention), causal.

    ``q``, ``k``, ``v``, ``out``: BinaryLinear(emb_dim -> emb_dim, linear), each
    normalized per token over the full emb_dim. Heads of ``emb_dim //
    num_heads``; scores ``Q K^T / sqrt(head_dim)``, causal mask (-inf),
    softmax, ``A V``, heads merged, then ``out``. Input ``(B, T, emb_dim)``.
    """

    def __init__(self, emb_dim: int, num_heads: int, eps: float = 1e-5, binary: bool = True):
        super().__init__()
        self.emb_dim = _check_positive_int("emb_dim", emb_dim)
        self.num_heads = _check_positive_int("num_heads", num_heads)
        if emb_dim % num_heads:
            raise ValueError(f"emb_dim {emb_dim} is not divisible by num_heads {num_heads}")
        self.head_dim = emb_dim // num_heads
        self.eps = _check_eps(eps)
        self.binary = bool(binary)
        lin_cls = BinaryLinear if binary else FloatLinear
        self.q = lin_cls(emb_dim, emb_dim, "linear", eps)
        self.k = lin_cls(emb_dim, emb_dim, "linear", eps)
        self.v = lin_cls(emb_dim, emb_dim, "linear", eps)
        self.out = lin_cls(emb_dim, emb_dim, "linear", eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, T, D = x.shape
        H, hd = self.num_heads, self.head_dim

        def heads(t):  # (..., T, D) -> (..., H, T, hd)
            return t.reshape(*lead, T, H, hd).transpose(-3, -2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        # Same math as softmax(QK^T / sqrt(hd) + causal -inf mask) V (the scale
        # is 1/sqrt(head_dim)); torch's fused kernel is faster on CPU.
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(a.transpose(-3, -2).reshape(*lead, T, D))

    def extra_repr(self) -> str:
        return f"emb_dim={self.emb_dim}, num_heads={self.num_heads}, binary={self.binary}"


class BinaryTransformerBlock(nn.Module):
    """BTFB (docs/maths.md, Transformer block): ``h = Normalize(x + attn(x))``;
    ``out = Normalize(h + ff2(ff1(h)))`` with ff1 = BinaryLinear(emb_dim ->
    ff_dim, gelu), ff2 = BinaryLinear(ff_dim -> emb_dim, linear)."""

    def __init__(self, emb_dim: int, num_heads: int, ff_dim: int | None = None,
                 eps: float = 1e-5, binary: bool = True):
        super().__init__()
        ff_dim = 2 * emb_dim if ff_dim is None else ff_dim
        self.emb_dim = _check_positive_int("emb_dim", emb_dim)
        self.ff_dim = _check_positive_int("ff_dim", ff_dim)
        self.binary = bool(binary)
        lin_cls = BinaryLinear if binary else FloatLinear
        self.attn = BinaryMultiHeadAttention(emb_dim, num_heads, eps, binary)
        self.norm1 = Normalize(emb_dim, eps, binary)
        self.ff1 = lin_cls(emb_dim, ff_dim, "gelu", eps)
        self.ff2 = lin_cls(ff_dim, emb_dim, "linear", eps)
        self.norm2 = Normalize(emb_dim, eps, binary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x + self.attn(x))
        return self.norm2(h + self.ff2(self.ff1(h)))


class BinaryLM(nn.Module):
    """BLM, the binary language decoder (docs/maths.md; runtime csrc/graph/lm.c).

    ``x = Normalize(embedding(ids))``; ``num_blocks`` transformer blocks
    (``ff_dim``, default ``2 * emb_dim``); an MLP head of one
    BinaryLinear(gelu) per entry of ``mlp_units`` (may be empty); ``output``
    BinaryLinear(vocab_size, linear). ``forward(ids)`` takes int ``(B, T)``
    ids, ``1 <= T <= max_len``, and returns the final layer's normalized
    scores (before the softmax) ``(B, T, vocab_size)``: position ``t`` scores
    the token that follows ``ids[:, :t+1]``. Train with
    ``F.cross_entropy(scores.flatten(0, 1), targets.flatten())``. Note that the
    final Normalize bounds the scores' scale (zero mean, unit variance over
    the vocabulary), as in the paper.

    ``binary=False`` (or :class:`FloatLM`) is the fp32 twin of the same
    shape: float weights, and every Normalize with a learnable per-feature
    scale and shift. The constructor arguments are kept in ``model.config``.
    """

    def __init__(self, vocab_size: int, max_len: int, emb_dim: int, num_heads: int,
                 num_blocks: int, mlp_units: Sequence[int] = (4096, 2048), eps: float = 1e-5,
                 binary: bool = True, ff_dim: int | None = None):
        super().__init__()
        _check_positive_int("vocab_size", vocab_size)
        _check_positive_int("max_len", max_len)
        _check_positive_int("emb_dim", emb_dim)
        _check_positive_int("num_heads", num_heads)
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be a non-negative integer, got {num_blocks!r}")
        if emb_dim % num_heads:
            raise ValueError(f"emb_dim {emb_dim} is not divisible by num_heads {num_heads}")
        ff_dim = 2 * emb_dim if ff_dim is None else _check_positive_int("ff_dim", ff_dim)
        mlp_units = [_check_positive_int("mlp_units[i]", u)
                     for u in _as_list("mlp_units", mlp_units)]
        eps = _check_eps(eps)
        self.binary = bool(binary)
        self.config = {
            "vocab_size": vocab_size, "max_len": max_len, "emb_dim": emb_dim,
            "num_heads": num_heads, "num_blocks": num_blocks, "mlp_units": mlp_units,
            "eps": eps, "binary": self.binary, "ff_dim": ff_dim,
        }
        self.vocab_size, self.max_len, self.emb_dim = vocab_size, max_len, emb_dim
        self.num_heads, self.num_blocks, self.ff_dim = num_heads, num_blocks, ff_dim
        self.mlp_units, self.eps = mlp_units, eps
        lin_cls = BinaryLinear if binary else FloatLinear
        self.embedding = BinaryEmbedding(vocab_size, max_len, emb_dim, eps, binary)
        self.embed_norm = Normalize(emb_dim, eps, binary)
        self.blocks = nn.ModuleList(BinaryTransformerBlock(emb_dim, num_heads, ff_dim, eps, binary)
                                    for _ in range(num_blocks))
        head, width = [], emb_dim
        for u in mlp_units:
            head.append(lin_cls(width, u, "gelu", eps))
            width = u
        self.head = nn.ModuleList(head)
        self.output = lin_cls(width, vocab_size, "linear", eps)

    def _check_ids(self, ids) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(ids)
        if ids.dim() != 2:
            raise ValueError(f"ids must be a (batch, time) tensor, got shape {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        T = ids.shape[1]
        if T < 1 or ids.shape[0] < 1:
            raise ValueError(f"ids must hold at least one token, got shape {tuple(ids.shape)}")
        if T > self.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_len {self.max_len}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is out of the vocabulary (0..{self.vocab_size - 1})")
        return ids.long()

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """The last block's output ``(B, T, emb_dim)`` (before the MLP head)."""
        x = self.embed_norm(self.embedding(self._check_ids(ids)))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.features(ids)
        for layer in self.head:
            x = layer(x)
        return self.output(x)

    def log_probs(self, ids: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.forward(ids), dim=-1)


class FloatLM(BinaryLM):
    """The fp32 twin: ``BinaryLM(..., binary=False)``."""

    def __init__(self, *args, **kwargs):
        kwargs["binary"] = False
        super().__init__(*args, **kwargs)
