"""Weight adapters of LoRA-family files (spec sd_formats.md §4.1 suffixes, §4.2 patch math).

A file holds, per patched module, a base name X plus tensors under known suffixes. `group_tensors`
sorts a file's keys into {X: {role: tensor}}; `build_adapters` turns one group into the adapter for the
module's weight (and one for its bias where the file has a bias delta). Every adapter computes

    W' = adapter.apply(W, s)            (float32 in, float32 out; the caller casts back)

with s the strength. Formulas (α = the `alpha` tensor, r = rank):

* LoRA / LoCon: ΔW = up.flatten(1) @ down.flatten(1) reshaped to W, scale α/r (r = down.shape[0];
  1 without α). With a Tucker ``mid`` [r, r, kh, kw] the down projection is first composed with it.
  W' = W + s·scale·ΔW.
* LoHa: ΔW = (w1a @ w1b) ⊙ (w2a @ w2b) (CP form: per factor einsum('ijkl,jr,ip→prkl', t, wb, wa)),
  scale α / w1b.shape[0].
* LoKr: ΔW = kron(w1, w2), each factor whole or a product of two (w2 also in CP form with t2);
  scale α/dim only when a factor is decomposed (dim = that factor's b.shape[0]), else 1.
* GLoRA: new layout ΔW = (W@a1)@a2 + b1@b2, old layout ΔW = b2@b1 + (W@a2)@a1, told apart by shape;
  scale α/rank.
* OFT: Q = B − Bᵀ per block (rescaled to norm α when α > 0 and ‖Q‖ > α), R = (I+Q)(I−Q)⁻¹,
  W' = W + Σ_blocks (s·R − s·I)·W_block (the strength is inside).
* diff / w_norm / diff_b / b_norm: W' = W + s·Δ. set_weight: W' = the stored weight.
* DoRA (``dora_scale`` beside any of the above): W_c = W + scale·ΔW, normalised per output row by
  ‖W‖ (magnitude [out, …]) or per input column by ‖W_c‖ (kohya/LyCORIS [1, in] form), times the
  magnitude; W' = W + s·(W_c − W).

Several adapters on one weight are applied one after another in load order (`apply_chain`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

# Suffix → role. Spellings of one role (kohya, old diffusers processors, PEFT, …) share the role.
SUFFIXES: dict[str, str] = {
    ".lora_up.weight": "up", "_lora.up.weight": "up", ".lora_B.weight": "up", ".lora.up.weight": "up",
    ".lora_linear_layer.up.weight": "up", ".lora_B.default.weight": "up",
    ".lora_down.weight": "down", "_lora.down.weight": "down", ".lora_A.weight": "down",
    ".lora.down.weight": "down", ".lora_linear_layer.down.weight": "down", ".lora_A.default.weight": "down",
    ".lora_mid.weight": "mid",
    ".alpha": "alpha", ".dora_scale": "dora_scale",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2", ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b", ".lokr_t2": "lokr_t2",
    ".a1.weight": "a1", ".a2.weight": "a2", ".b1.weight": "b1", ".b2.weight": "b2",
    ".oft_blocks": "oft_blocks", ".rescale": "rescale",
    ".diff": "diff", ".diff_b": "diff_b", ".w_norm": "w_norm", ".b_norm": "b_norm", ".set_weight": "set_weight",
}
_BY_LENGTH = sorted(SUFFIXES, key=len, reverse=True)
DORA_EPS = torch.finfo(torch.float32).eps


class Adapter(Protocol):
    def apply(self, weight: Tensor, strength: float) -> Tensor:
        """The patched weight (float32) for the original `weight` at `strength`."""


def _f32(t: Tensor | None, like: Tensor) -> Tensor | None:
    return None if t is None else t.to(device=like.device, dtype=torch.float32)


def _alpha(alpha: Tensor | float | None) -> float | None:
    return None if alpha is None else float(alpha)


def _decomposed(weight: Tensor, strength: float, delta: Tensor, dora_scale: Tensor | None) -> Tensor:
    """W + s·ΔW, or DoRA's magnitude-normalised form when the file carries a dora_scale."""
    if dora_scale is None:
        return weight + strength * delta
    combined = weight + delta
    magnitude = _f32(dora_scale, weight)
    if magnitude.shape[0] == weight.shape[0]:
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1)
        norm = norm.reshape(weight.shape[0], *[1] * (weight.ndim - 1))
    else:
        norm = combined.transpose(0, 1).reshape(combined.shape[1], -1).norm(dim=1)
        norm = norm.reshape(1, combined.shape[1], *[1] * (weight.ndim - 2))
    combined = combined * (magnitude.reshape(norm.shape) / (norm + DORA_EPS))
    return weight + strength * (combined - weight)


@dataclass(frozen=True)
class LoRA:
    up: Tensor
    down: Tensor
    mid: Tensor | None = None
    alpha: float | None = None
    dora_scale: Tensor | None = None

    def delta(self, weight: Tensor) -> Tensor:
        up, down, mid = _f32(self.up, weight), _f32(self.down, weight), _f32(self.mid, weight)
        rank = down.shape[0]
        if mid is not None:  # Tucker LoCon: a 1×1 down conv followed by the kh×kw mid conv
            down = torch.einsum("jkyx,ki->jiyx", mid, down.flatten(1))
        scale = 1.0 if self.alpha is None else self.alpha / rank
        return scale * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        return _decomposed(weight, strength, self.delta(weight), self.dora_scale)


@dataclass(frozen=True)
class LoHa:
    w1a: Tensor
    w1b: Tensor
    w2a: Tensor
    w2b: Tensor
    t1: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    dora_scale: Tensor | None = None

    @staticmethod
    def _factor(a: Tensor, b: Tensor, t: Tensor | None) -> Tensor:
        if t is None:
            return a @ b.flatten(1)
        return torch.einsum("ijkl,jr,ip->prkl", t, b, a)

    def delta(self, weight: Tensor) -> Tensor:
        f = [_f32(x, weight) for x in (self.w1a, self.w1b, self.w2a, self.w2b, self.t1, self.t2)]
        product = self._factor(f[0], f[1], f[4]) * self._factor(f[2], f[3], f[5])
        scale = 1.0 if self.alpha is None else self.alpha / self.w1b.shape[0]
        return scale * product.reshape(weight.shape)

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        return _decomposed(weight, strength, self.delta(weight), self.dora_scale)


@dataclass(frozen=True)
class LoKr:
    w1: Tensor | None = None
    w1a: Tensor | None = None
    w1b: Tensor | None = None
    w2: Tensor | None = None
    w2a: Tensor | None = None
    w2b: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    dora_scale: Tensor | None = None

    def delta(self, weight: Tensor) -> Tensor:
        w1, w1a, w1b, w2, w2a, w2b, t2 = (_f32(x, weight) for x in
                                          (self.w1, self.w1a, self.w1b, self.w2, self.w2a, self.w2b, self.t2))
        dim = None
        if w1 is None:
            w1, dim = w1a @ w1b, w1b.shape[0]
        if w2 is None:
            dim = w2b.shape[0]
            w2 = w2a @ w2b.flatten(1) if t2 is None else torch.einsum("ijkl,jr,ip->prkl", t2, w2b, w2a)
            if t2 is None and weight.ndim == 4:
                w2 = w2.reshape(w2.shape[0], -1, *weight.shape[2:])
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        scale = self.alpha / dim if self.alpha is not None and dim is not None else 1.0
        return scale * torch.kron(w1, w2).reshape(weight.shape)

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        return _decomposed(weight, strength, self.delta(weight), self.dora_scale)


@dataclass(frozen=True)
class GLoRA:
    a1: Tensor
    a2: Tensor
    b1: Tensor
    b2: Tensor
    alpha: float | None = None
    dora_scale: Tensor | None = None

    def delta(self, weight: Tensor) -> Tensor:
        a1, a2, b1, b2 = (_f32(x, weight).flatten(1) for x in (self.a1, self.a2, self.b1, self.b2))
        w = weight.flatten(1)
        if a1.shape[0] == w.shape[1]:  # new layout: a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in]
            rank = a1.shape[1]
            delta = (w @ a1) @ a2 + b1 @ b2
        else:  # old layout: a2 [in, r], a1 [r, in], b2 [out, r], b1 [r, in]
            rank = a1.shape[0]
            delta = b2 @ b1 + (w @ a2) @ a1
        scale = 1.0 if self.alpha is None else self.alpha / rank
        return scale * delta.reshape(weight.shape)

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        return _decomposed(weight, strength, self.delta(weight), self.dora_scale)


@dataclass(frozen=True)
class OFT:
    blocks: Tensor  # [n, b, b]
    alpha: float | None = None

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        blocks = _f32(self.blocks, weight)
        q = blocks - blocks.transpose(1, 2)
        norm = q.norm()
        if self.alpha and self.alpha > 0 and norm > self.alpha:
            q = q * (self.alpha / norm)
        eye = torch.eye(q.shape[-1], device=q.device, dtype=q.dtype).expand_as(q)
        rotation = (eye + q) @ torch.linalg.inv(eye - q)
        n, b, _ = blocks.shape
        w = weight.reshape(n, b, -1)
        delta = torch.einsum("nij,njk->nik", strength * rotation - strength * eye, w)
        return weight + delta.reshape(weight.shape)


@dataclass(frozen=True)
class Diff:
    """A full delta (LyCORIS "full", norm diffs, bias diffs): W + s·Δ."""

    diff: Tensor

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        return weight + strength * _f32(self.diff, weight).reshape(weight.shape)


@dataclass(frozen=True)
class SetWeight:
    weight: Tensor

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        return _f32(self.weight, weight).reshape(weight.shape).clone()


def apply_chain(weight: Tensor, adapters: Iterable[tuple[Adapter, float]]) -> Tensor:
    """Apply (adapter, strength) pairs in order, in float32; returns float32."""
    out = weight.float()
    for adapter, strength in adapters:
        out = adapter.apply(out, strength)
    return out


def group_tensors(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, dict[str, Tensor]], list[str]]:
    """({base name: {role: tensor}}, keys with no known suffix)."""
    groups: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        suffix = next((s for s in _BY_LENGTH if key.endswith(s)), None)
        if suffix is None:
            unknown.append(key)
            continue
        groups.setdefault(key[: -len(suffix)], {})[SUFFIXES[suffix]] = value
    return groups, unknown


def build_adapters(group: Mapping[str, Tensor]) -> tuple[Adapter | None, Adapter | None]:
    """(weight adapter, bias adapter) for one base name's tensors; (None, None) if nothing applies."""
    g = dict(group)
    alpha, dora = _alpha(g.get("alpha")), g.get("dora_scale")
    weight: Adapter | None = None
    if "up" in g and "down" in g:
        weight = LoRA(g["up"], g["down"], g.get("mid"), alpha, dora)
    elif {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= g.keys():
        weight = LoHa(g["hada_w1_a"], g["hada_w1_b"], g["hada_w2_a"], g["hada_w2_b"], g.get("hada_t1"),
                      g.get("hada_t2"), alpha, dora)
    elif any(k.startswith("lokr_") for k in g):
        weight = LoKr(g.get("lokr_w1"), g.get("lokr_w1_a"), g.get("lokr_w1_b"), g.get("lokr_w2"),
                      g.get("lokr_w2_a"), g.get("lokr_w2_b"), g.get("lokr_t2"), alpha, dora)
    elif {"a1", "a2", "b1", "b2"} <= g.keys():
        weight = GLoRA(g["a1"], g["a2"], g["b1"], g["b2"], alpha, dora)
    elif "oft_blocks" in g:
        weight = OFT(g["oft_blocks"], alpha)
    elif "diff" in g or "w_norm" in g:
        weight = Diff(g.get("diff", g.get("w_norm")))
    elif "set_weight" in g:
        weight = SetWeight(g["set_weight"])
    bias_delta = g.get("diff_b", g.get("b_norm"))
    return weight, None if bias_delta is None else Diff(bias_delta)
