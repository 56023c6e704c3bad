"""CLIP text encoders of SD1 (CLIP-L), SD2 (OpenCLIP ViT-H) and SDXL (CLIP-L + bigG), ComfyUI semantics.

The transformer is transformers' CLIPTextModel built from a config read off the weight shapes (no hub
access). Sumi drives its layers itself because ComfyUI needs three things the HF forward does not
give: textual-inversion vectors in place of token ids, the output of an intermediate layer with or
without the final LayerNorm (CLIPSetLastLayer / clip skip) and per-token prompt weights applied
against the encoding of an empty prompt (spec §5.3).

ComfyUI runs text encoders in float32 even when the file is fp16 (spec §9 item 12); load with
`dtype=torch.float32` for parity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # the modeling import costs ~1 s of start-up; it happens when an encoder is built
    from transformers import CLIPTextConfig

from .keymaps_clip import to_module_keys
from .prompt import EmbeddingLookup, WeightedToken, layers_to_run, tokenize_prompt
from .tokenizer import BOS_TOKEN, EOS_TOKEN, VOCAB_SIZE, ClipTokenizer

HEAD_DIM = 64  # CLIP-L (768/12), ViT-H (1024/16) and bigG (1280/20) all use 64-wide heads


@dataclass(frozen=True)
class ClipTextConfig:
    width: int
    layers: int
    heads: int
    mlp_width: int
    activation: str  # "quick_gelu" for OpenAI CLIP-L, "gelu" for the OpenCLIP models
    projection_dim: int | None = None
    vocab_size: int = VOCAB_SIZE
    max_positions: int = 77

    @classmethod
    def from_state_dict(
        cls, sd: Mapping[str, torch.Tensor], heads: int | None = None, activation: str | None = None
    ) -> ClipTextConfig:
        """Config from the shapes of a `ClipTextEncoder` state dict (see `keymaps_clip.to_module_keys`).

        Heads and activation are not visible in shapes: heads default to width/64, the activation to
        quick_gelu for the 768-wide OpenAI CLIP-L and gelu otherwise (the OpenCLIP H and bigG towers)."""
        vocab_size, width = sd["transformer.embeddings.token_embedding.weight"].shape
        prefix = "transformer.encoder.layers."
        proj = sd.get("text_projection.weight")
        return cls(
            width=width,
            layers=len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)}),
            heads=heads or max(width // HEAD_DIM, 1),
            mlp_width=sd[prefix + "0.mlp.fc1.weight"].shape[0],
            activation=activation or ("quick_gelu" if width == 768 else "gelu"),
            projection_dim=None if proj is None else proj.shape[0],
            vocab_size=vocab_size,
            max_positions=sd["transformer.embeddings.position_embedding.weight"].shape[0],
        )

    def to_hf(self) -> CLIPTextConfig:
        from transformers import CLIPTextConfig

        config = CLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.width,
            intermediate_size=self.mlp_width,
            projection_dim=self.projection_dim,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            max_position_embeddings=self.max_positions,
            hidden_act=self.activation,
            layer_norm_eps=1e-5,
            bos_token_id=BOS_TOKEN,
            eos_token_id=EOS_TOKEN,
        )
        config._attn_implementation = "sdpa"  # the causal flag below is only honoured by SDPA
        return config


@dataclass(frozen=True)
class ClipUsage:
    """How a model family reads one CLIP tower in ComfyUI (spec §1.6, §7.10)."""

    key: str  # "clip_l" | "clip_h" | "clip_g": embedding-file key and conditioning name
    layers: int  # depth that CLIPSetLastLayer indices count from (files may store fewer)
    default_layer: int  # CLIPSetLastLayer value in effect when none is set
    hidden_layer_norm: bool  # apply the final LayerNorm to a selected hidden layer
    pad_token: int


SD1_CLIP_L = ClipUsage("clip_l", 12, -1, True, EOS_TOKEN)
SD2_CLIP_H = ClipUsage("clip_h", 24, -2, True, 0)
SDXL_CLIP_L = ClipUsage("clip_l", 12, -2, False, EOS_TOKEN)
SDXL_CLIP_G = ClipUsage("clip_g", 32, -2, False, 0)


class ClipTextEncoder(nn.Module):
    """A CLIP text transformer (HF modules under `transformer`) plus the optional pooled projection."""

    def __init__(self, config: ClipTextConfig):
        super().__init__()
        self.config = config
        from transformers import CLIPTextModel

        self.transformer = CLIPTextModel(config.to_hf())
        self.text_projection = (
            nn.Linear(config.width, config.projection_dim, bias=False) if config.projection_dim else None
        )

    def embed(self, chunks: Sequence[Sequence[int | torch.Tensor]]) -> torch.Tensor:
        """Token + position embeddings [B, T, D]; a tensor entry is a textual-inversion vector used
        as the token embedding itself."""
        embeddings = self.transformer.embeddings
        weight = embeddings.token_embedding.weight
        ids = torch.tensor([[t if isinstance(t, int) else 0 for t in c] for c in chunks], device=weight.device)
        x = embeddings.token_embedding(ids)
        for b, chunk in enumerate(chunks):
            for i, t in enumerate(chunk):
                if isinstance(t, torch.Tensor):
                    x[b, i] = t.to(x)
        return x + embeddings.position_embedding.weight[: x.shape[1]]

    def forward(
        self, x: torch.Tensor, eos_index: torch.Tensor, n_layers: int | None, hidden_layer_norm: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden, pooled) for embedded tokens `x`.

        `hidden` is the output after `n_layers` layers (final LayerNorm applied if `hidden_layer_norm`)
        or, for None, the last layer after the final LayerNorm. `pooled` is always the last layer after
        the final LayerNorm at `eos_index`, projected when the model has a projection."""
        hidden = None
        for i, layer in enumerate(self.transformer.encoder.layers):
            x = layer(x, None, is_causal=True)
            if i + 1 == n_layers:
                hidden = x
        final = self.transformer.final_layer_norm(x)
        if hidden is None:
            hidden = final
        elif hidden_layer_norm:
            hidden = self.transformer.final_layer_norm(hidden)
        pooled = final[torch.arange(x.shape[0], device=x.device), eos_index.to(x.device)]
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)
        return hidden, pooled


def load_clip_text(
    sd: Mapping[str, torch.Tensor],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    heads: int | None = None,
    activation: str | None = None,
) -> ClipTextEncoder:
    """Build a `ClipTextEncoder` from HF, old-SD1 or open_clip keys (prefix stripped).

    Built on the meta device and assigned, so no memory goes into a random init. Strict: missing or
    unexpected keys raise (position_ids and logit_scale are dropped beforehand)."""
    weights = to_module_keys(sd)
    with torch.device("meta"):
        encoder = ClipTextEncoder(ClipTextConfig.from_state_dict(weights, heads, activation))
    weights = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in weights.items()}
    encoder.load_state_dict(weights, strict=True, assign=True)
    # HF keeps a non-persistent position_ids buffer that stayed on meta; the forward above never reads
    # it, but it must hold real memory for .to() to work.
    embeddings = encoder.transformer.embeddings
    embeddings.position_ids = torch.arange(encoder.config.max_positions, device=device).unsqueeze(0)
    return encoder.eval()


@lru_cache(maxsize=4)
def _tokenizer(pad_token: int) -> ClipTokenizer:
    return ClipTokenizer(pad_token)


def encode_chunks(
    encoder: ClipTextEncoder, usage: ClipUsage, chunks: list[list[WeightedToken]], stop_at_clip_layer: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode 77-token chunks: ([1, 77·k, D] conditioning, [1, P] pooled of the first chunk).

    When any weight differs from 1, an empty prompt [BOS, EOS, pad…] is encoded alongside and each token
    becomes z_empty + w·(z − z_empty) (ComfyUI's rule, spec §5.3)."""
    tokens = [[t for t, _ in c] for c in chunks]
    weights = torch.tensor([[w for _, w in c] for c in chunks])
    weighted = bool((weights != 1.0).any())
    if weighted:
        tokens.append([BOS_TOKEN, EOS_TOKEN] + [usage.pad_token] * (len(tokens[0]) - 2))
    eos_index = torch.tensor([next(i for i, t in enumerate(c) if isinstance(t, int) and t == EOS_TOKEN) for c in tokens])
    layer = usage.default_layer if stop_at_clip_layer is None else stop_at_clip_layer
    n_layers = layers_to_run(layer, usage.layers)
    if n_layers is not None and n_layers >= encoder.config.layers:
        # Trimmed towers (e.g. diffusers SD2 with 23 of 24 layers) end at the selected layer already.
        n_layers = encoder.config.layers
    hidden, pooled = encoder(encoder.embed(tokens), eos_index, n_layers, usage.hidden_layer_norm)
    if weighted:
        empty, hidden = hidden[-1:], hidden[:-1]
        hidden = empty + (hidden - empty) * weights.to(hidden)[..., None]
    return hidden.reshape(1, -1, hidden.shape[-1]), pooled[:1]


def encode_prompt(
    encoders: Sequence[tuple[ClipTextEncoder, ClipUsage]],
    text: str,
    stop_at_clip_layer: int | None = None,
    embedding_lookup: EmbeddingLookup | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIPTextEncode: (conditioning [1, 77·k, ΣD], pooled [1, P]).

    With several encoders (SDXL: [clip_l, clip_g]) each tokenizes on its own, the outputs are cut to the
    shorter token length and concatenated on the feature axis, and the pooled output is the last
    encoder's (bigG). `stop_at_clip_layer` (CLIPSetLastLayer) applies to every encoder."""
    conds, pooled = [], None
    for encoder, usage in encoders:
        chunks = tokenize_prompt(text, _tokenizer(usage.pad_token), embedding_lookup, usage.key, encoder.config.width)
        cond, pooled = encode_chunks(encoder, usage, chunks, stop_at_clip_layer)
        conds.append(cond)
    length = min(c.shape[1] for c in conds)
    return torch.cat([c[:, :length] for c in conds], dim=-1), pooled
