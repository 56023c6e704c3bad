"""A1111-style hypernetworks: per attention width, two small MLPs that rewrite the context the keys and
the values of an attention layer are computed from: k_in = c + s·mlp_k(c), v_in = c + s·mlp_v(c).

File (a torch pickle): {width (int): [k_state, v_state], …} plus settings ``activation_func`` (linear,
relu, leakyrelu, elu, swish, tanh, sigmoid, softsign, mish), ``is_layer_norm``, ``activate_output``.
Each state dict holds ``linear.<i>.weight`` / ``.bias`` of one sequential stack; 2-D weights are Linear
layers, 1-D ones LayerNorms. The activation follows every Linear but the last (the last too with
``activate_output``); dropout layers are inference no-ops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

ACTIVATIONS = {"linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.SiLU,
               "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign, "mish": nn.Mish}


class HypernetworkMLP(nn.Module):
    """One stack: Linear / LayerNorm layers in file order with the activation after the Linear layers."""

    def __init__(self, state: Mapping[str, Tensor], activation: str, activate_output: bool) -> None:
        super().__init__()
        indices = sorted({int(m.group(1)) for k in state if (m := re.match(r"linear\.(\d+)\.weight$", k))})
        layers: list[nn.Module] = []
        for index in indices:
            weight, bias = state[f"linear.{index}.weight"], state.get(f"linear.{index}.bias")
            if weight.ndim == 2:
                layer: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            else:
                layer = nn.LayerNorm(weight.shape[0])
            layer.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
            layers.append(layer)
        linears = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
        stack: list[nn.Module] = []
        for i, layer in enumerate(layers):
            stack.append(layer)
            if i in linears and (i != linears[-1] or activate_output):
                stack.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*stack)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def load_hypernetwork(data: Mapping[Any, Any]) -> dict[int, tuple[HypernetworkMLP, HypernetworkMLP]]:
    """{attention context width: (k mlp, v mlp)} from a hypernetwork file's content."""
    activation = str(data.get("activation_func", "linear") or "linear").lower()
    if activation not in ACTIVATIONS:
        raise ValueError(f"hypernetwork activation {activation!r} is not supported ({', '.join(ACTIVATIONS)})")
    activate_output = bool(data.get("activate_output", False))
    out = {}
    for width, pair in data.items():
        if isinstance(width, int) and isinstance(pair, (list, tuple)) and len(pair) == 2:
            k, v = (HypernetworkMLP(state, activation, activate_output).eval() for state in pair)
            out[width] = (k, v)
    if not out:
        raise ValueError("the file holds no hypernetwork layers ({width: [k, v]} entries)")
    return out


class ContextHook:
    """A forward pre-hook for an attention projection: its input c becomes c + s·mlp(c)."""

    def __init__(self, mlp: HypernetworkMLP, strength: float) -> None:
        self.mlp, self.strength = mlp, strength

    @torch.no_grad()
    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        context = args[0]
        self.mlp.to(device=context.device, dtype=context.dtype)
        return (context + self.strength * self.mlp(context),) + tuple(args[1:])
