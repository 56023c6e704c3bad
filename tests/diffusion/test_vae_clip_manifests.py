"""Released SD files (manifests: key → shape) load into the VAE and text encoders built from shapes alone.

Everything runs on the meta device: a strict load proves every VAE / text-encoder key is consumed and
every parameter filled; shapes and parameter counts are compared with the manifests and spec §3."""

import json
from pathlib import Path

import pytest
import torch

from diffusion.keymaps_clip import to_module_keys
from diffusion.keymaps_vae import is_diffusers_vae
from diffusion.text_encoders import load_clip_text
from diffusion.vae import load_vae
from tests.paths import SHARED

MANIFESTS = SHARED / "reference/manifests"
VAE_PARAMS = 83_653_863  # spec §3, 248 tensors
# Single-file text-encoder prefixes (spec §0, §1.2) → expected (params incl. projection, layers, heads, activation).
CLIP_L = (123_060_480, 12, 12, "quick_gelu")
CLIP_H = (352_984_064 + 1_048_576, 24, 16, "gelu")
CLIP_G = (693_021_440 + 1_638_400, 32, 20, "gelu")
SINGLE_FILES = {
    "sd15_v1-5-pruned-emaonly": {"cond_stage_model.transformer.": CLIP_L},
    "sd21_768_v": {"cond_stage_model.model.": CLIP_H},
    "sdxl_base_1.0": {"conditioner.embedders.0.transformer.": CLIP_L, "conditioner.embedders.1.model.": CLIP_G},
    "sdxl_refiner_1.0": {"conditioner.embedders.0.model.": CLIP_G},
}
IGNORABLE = ("position_ids", "logit_scale")  # documented auxiliary keys (keymaps_clip.IGNORED_SUFFIXES)


def _manifest(name):
    path = MANIFESTS / f"{name}.json"
    if not path.exists():
        pytest.skip("reference manifests not available")
    return json.loads(path.read_text())


def _meta(keys, prefix=""):
    return {k[len(prefix) :]: torch.empty(s, device="meta") for k, s in keys.items() if k.startswith(prefix)}


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _check_loaded(module, source_shapes):
    """The strict load already passed; also check the assigned tensors kept the file's shapes."""
    state = module.state_dict()
    for key, tensor in state.items():
        assert tensor.device.type == "meta" and tuple(tensor.shape) == source_shapes[key], key


@pytest.mark.parametrize("name", SINGLE_FILES)
def test_single_file_vae(name):
    keys = _manifest(name)["keys"]
    sd = _meta(keys, "first_stage_model.")
    vae = load_vae(sd, device="meta")
    assert len(sd) == 248 and _count(vae) == VAE_PARAMS
    assert _manifest(name)["params_by_part"]["vae (first_stage_model.)"] == VAE_PARAMS
    _check_loaded(vae, {k: tuple(v.shape) for k, v in sd.items()})
    assert (vae.downscale_factor, vae.latent_channels) == (8, 4)


@pytest.mark.parametrize("name", SINGLE_FILES)
def test_single_file_text_encoders(name):
    manifest = _manifest(name)
    keys = manifest["keys"]
    total = 0
    for prefix, (params, layers, heads, activation) in SINGLE_FILES[name].items():
        sd = _meta(keys, prefix)
        encoder = load_clip_text(sd, device="meta")
        c = encoder.config
        assert (c.layers, c.heads, c.activation, c.width // c.heads) == (layers, heads, activation, 64), prefix
        assert _count(encoder) == params, prefix
        _check_loaded(encoder, {k: tuple(v.shape) for k, v in to_module_keys(sd).items()})
        # Every element of every non-auxiliary tensor lands in exactly one parameter.
        used = {k: v for k, v in sd.items() if not k.endswith(IGNORABLE)}
        assert sum(v.numel() for v in used.values()) == params
        total += params + sum(v.numel() for k, v in sd.items() if k.endswith("logit_scale"))
    assert manifest["params_by_part"]["text_encoders"] == total
    # Every key of the file belongs to the UNet, the VAE, a text encoder or the known auxiliary set.
    inferred = set(manifest.get("inferred_keys", {}))
    owned = ("model.diffusion_model.", "first_stage_model.", *SINGLE_FILES[name])
    assert all(k.startswith(owned) or k in inferred for k in keys)


def test_open_clip_tensor_counts():
    keys = _manifest("sdxl_base_1.0")["keys"]
    g = _meta(keys, "conditioner.embedders.1.model.")
    # 32 fused in_proj pairs become 64 q/k/v tensors more; logit_scale is dropped.
    assert len(to_module_keys(g)) == len(g) + 2 * 32 * 2 - 1


@pytest.mark.parametrize(
    "name, params, layers, width",
    [("paintsundo_single_frame_text_encoder", 115_972_608, 11, 768), ("paintsundo_multi_frame_text_encoder", 340_387_840, 23, 1024)],
)
def test_diffusers_folder_text_encoders(name, params, layers, width):
    manifest = _manifest(name)
    encoder = load_clip_text(_meta(manifest["keys"]), device="meta")
    assert manifest["params"] == params == _count(encoder)
    assert (encoder.config.layers, encoder.config.width, encoder.config.projection_dim) == (layers, width, None)


def test_diffusers_folder_vae():
    manifest = _manifest("paintsundo_single_frame_vae")
    sd = _meta(manifest["keys"])
    assert is_diffusers_vae(sd)
    vae = load_vae(sd, device="meta")
    assert manifest["params"] == _count(vae) == VAE_PARAMS and len(vae.state_dict()) == manifest["tensor_count"]
