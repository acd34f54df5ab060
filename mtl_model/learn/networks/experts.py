"""Expert banks, gates and their mixture: the batched kernels that MMoE and PLE share.

A mixture of experts (Jacobs, Jordan, Nowlan, Hinton, 1991, "Adaptive Mixtures of Local Experts",
Neural Computation 3(1)) outputs Σ_i g(x)_i f_i(x) with a softmax gate g. MMoE
(:mod:`~mtl_model.learn.networks.mmoe`) gives every task a gate of its own over shared experts; PLE
(:mod:`~mtl_model.learn.networks.ple`) adds task-specific experts and stacks the layers.

CPU speed (``bench/bench_train.py``): the experts of a bank run as batched matmuls over stacked
weights, gate logits batch-last (softmax along the batch) and every gate's mixture as one batched
matmul. Shapes: B batch, I input dim, E (or n) experts, H hidden dim, G gates, D embedding dim.

Dropout (``dropout`` = p, the ``TANDEM_DROPOUT`` setting): inverted dropout (Srivastava et al., 2014,
"Dropout: A Simple Way to Prevent Neural Networks from Overfitting", JMLR 15) after each hidden ReLU,
in train mode only. It is applied functionally, not as ``nn.Dropout`` modules, so the parameter names
(``bottom.0.weight``, ``bottom.2.weight``) are those of models trained without it; p = 0 draws nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def uniform_(tensor: torch.Tensor, fan_in: int) -> None:
    """In-place U(−1/√fan_in, 1/√fan_in), the initialisation of ``nn.Linear``."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    nn.init.uniform_(tensor, -bound, bound)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout of ``x`` in training with p > 0; ``x`` itself otherwise (no random draws)."""
    return F.dropout(x, p, training=True) if training and p > 0.0 else x


class MLP(nn.Sequential):
    """``Linear → ReLU`` layers (an ``nn.Sequential``, so its parameter names are those of one) with
    dropout ``p`` after each ReLU in train mode."""

    def __init__(self, *layers: nn.Module, p: float = 0.0) -> None:
        super().__init__(*layers)
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                x = dropout(x, self.p, self.training)
        return x

    def extra_repr(self) -> str:
        return f"dropout={self.p}" if self.p else ""


def mlp(in_dim: int, dims: Sequence[int], p: float = 0.0) -> tuple[MLP, int]:
    """``Linear → ReLU`` per entry of ``dims`` (dropout ``p`` after each ReLU in training):
    [B, in_dim] → [B, dims[-1]]; returns (net, out dim)."""
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(in_dim, dim), nn.ReLU()]
        in_dim = dim
    return MLP(*layers, p=p), in_dim


def gate_logits(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, scene_emb: torch.Tensor | None
) -> torch.Tensor:
    """Batch-last logits of gates reading concat(x, scene embedding): weight [G, I (+ D)], bias [G],
    x [B, I], scene_emb [B, D] or None → [G, B] (one GEMM; see :func:`softmax_gates`)."""
    gate_in = x if scene_emb is None else torch.cat([x, scene_emb], dim=1)  # [B, I (+ D)]
    return torch.addmm(bias.unsqueeze(1), weight, gate_in.t())


def softmax_gates(logits: torch.Tensor) -> torch.Tensor:
    """Gate weights from batch-last logits: [..., m, B] → softmax over the m experts → [B, ..., m].

    Batch-last, the softmax runs vectorised along the batch; over a last dim of 3–5 experts it is ~6×
    slower on CPU. The result is made contiguous for :func:`mixture`.
    """
    return torch.softmax(logits, dim=-2).movedim(-1, 0).contiguous()


def mixture(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sums of experts for G gates at once: Σ_e weights[b, g, e] · experts[e, b, :].

    weights [B, G, E], experts [E, B, H] → [G, B, H] (a view of [B, G, H]): one batched matmul, a
    [G, E] @ [E, H] product per row. The weights are made contiguous (strided small matrices send
    MKL's batched GEMM down a path ~8× slower); the experts are read as they are, contiguous [E, B, H]
    or a view of batch-first [B, E, H] (:func:`run_experts`), without a copy.
    """
    return torch.bmm(weights.contiguous(), experts.transpose(0, 1)).transpose(0, 1)


class ExpertBank(nn.Module):
    """``n`` independent MLP experts evaluated as batched matmuls (one GEMM / ``bmm`` per layer).

    Input [B, I] (the same input for every expert) or [n, B, I] (one input per expert); output
    [n, B, H_last]. Weights per layer: [n, in, out]; initialised like ``nn.Linear``. ``p``: dropout
    after each ReLU in train mode.
    """

    def __init__(self, n: int, in_dim: int, dims: Sequence[int], p: float = 0.0) -> None:
        super().__init__()
        if n < 1 or not dims:
            raise ValueError("an expert bank needs at least one expert and one layer")
        self.n = n
        self.p = float(p)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for dim in dims:
            w, b = torch.empty(n, in_dim, dim), torch.empty(n, 1, dim)  # [n, in, out], [n, 1, out]
            uniform_(w, in_dim)
            uniform_(b, in_dim)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
            in_dim = dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_experts([self], x)

    def extra_repr(self) -> str:
        return f"n={self.n}, out_dim={self.out_dim}" + (f", dropout={self.p}" if self.p else "")


def run_experts(banks: Sequence[ExpertBank], x: torch.Tensor) -> torch.Tensor:
    """Banks with the same layer sizes evaluated as one (their weights stacked per layer, a small copy):
    x [B, I] (shared) or [n, B, I] (one input per expert, n = Σ bank sizes) → [n, B, H_last].

    A one-layer bank on a shared input runs as one GEMM [B, I] @ [I, n·H] and returns the batch-first
    result [B, n, H] as the view [n, B, H]: the input's gradient is then one GEMM too (not n products
    and a sum over the experts), and :func:`mixture` reads the view without a copy. (Deeper banks keep
    [n, B, I] inputs: their second layer on such a view measured slower.) Dropout: the first bank's
    ``p``, in its train mode, after each ReLU.
    """
    n = sum(bank.n for bank in banks)
    p, training = banks[0].p, banks[0].training

    def stacked(k: int) -> tuple[torch.Tensor, torch.Tensor]:  # layer k's weights [n, in, out], biases
        if len(banks) == 1:
            return banks[0].weights[k], banks[0].biases[k]
        return torch.cat([bank.weights[k] for bank in banks]), torch.cat([bank.biases[k] for bank in banks])

    layers = [stacked(k) for k in range(len(banks[0].weights))]
    if x.dim() == 2 and len(layers) == 1:
        w, b = layers[0]  # [n, I, H], [n, 1, H]
        i, out = w.shape[1:]
        h = torch.addmm(b.reshape(n * out), x, w.transpose(0, 1).reshape(i, n * out)).relu_()  # [B, n·H]
        h = dropout(h, p, training)
        return h.view(-1, n, out).transpose(0, 1)  # [n, B, H] (a view)
    h = x.expand(n, -1, -1) if x.dim() == 2 else x  # a shared input broadcast (no copy): [n, B, I]
    for w, b in layers:
        h = torch.baddbmm(b, h, w).relu_()  # [n, B, in] @ [n, in, out] → [n, B, out] (ReLU in place)
        h = dropout(h, p, training)
    return h
