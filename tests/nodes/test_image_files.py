"""LoadImage / SaveImage / PreviewImage: naming, counters, metadata, pixels and path containment."""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_management.folders import Folders, PathRefused
from nodes.image import LoadImage, PreviewImage, SaveImage
from nodes.runtime import NodeRuntime, NodeServices

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 2, "height": 2, "batch_size": 1, "color": 0},
                "_meta": {"title": "Ünïcode title"}}}
WORKFLOW = {"version": 0.4, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": []}


def png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, read straight from the file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def text_chunks(path: Path) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1")
            for t, d in png_chunks(path) if t == b"tEXt" for k, v in [d.split(b"\0", 1)]}


def grey(batch: int = 1, height: int = 2, width: int = 3, value: float = 0.5) -> torch.Tensor:
    return torch.full((batch, height, width, 3), value)


# ---- SaveImage ------------------------------------------------------------------------------

def test_save_names_counter_and_ui(rt):
    result = SaveImage().execute(grey(batch=2), rt=rt)
    assert result == {"ui": {"images": [
        {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"},
        {"filename": "ComfyUI_00002_.png", "subfolder": "", "type": "output"}]}}
    assert sorted(os.listdir(rt.folders.output)) == ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]


def test_save_counter_continues_after_existing_files(rt):
    out = rt.folders.output
    for name in ("ComfyUI_00007_.png", "ComfyUI_temp_abcde_00020_.png", "Other_00050_.png", "ComfyUI.png"):
        (out / name).write_bytes(b"")
    result = SaveImage().execute(grey(), rt=rt, filename_prefix="ComfyUI")
    assert result["ui"]["images"][0]["filename"] == "ComfyUI_00008_.png"


def test_save_counter_continues_after_restart(rt):
    SaveImage().execute(grey(batch=3), rt=rt)
    # A new app on the same base directory: fresh Folders, services and node instance.
    folders = Folders.create(rt.folders.base)
    folders.ensure()
    rt2 = NodeRuntime(NodeServices(folders), "p2", "9", "9", lambda *a: None, lambda: False, lambda t: None)
    result = SaveImage().execute(grey(), rt=rt2)
    assert result["ui"]["images"][0]["filename"] == "ComfyUI_00004_.png"


def test_save_subfolder_and_prefix_variables(rt):
    year = time.localtime().tm_year
    result = SaveImage().execute(grey(height=2, width=5), rt=rt, filename_prefix="probe/%year%/s_%width%x%height%")
    entry = result["ui"]["images"][0]
    assert entry == {"filename": "s_5x2_00001_.png", "subfolder": f"probe/{year}", "type": "output"}
    assert (rt.folders.output / "probe" / str(year) / "s_5x2_00001_.png").is_file()


def test_save_batch_num_in_prefix(rt):
    result = SaveImage().execute(grey(batch=2), rt=rt, filename_prefix="b_%batch_num%")
    assert [e["filename"] for e in result["ui"]["images"]] == ["b_0_00001_.png", "b_1_00002_.png"]


def test_save_pixels_quantized_like_comfyui(rt):
    image = torch.tensor([[[[0.0, 0.5, 1.0], [1.2, -0.1, 0.999]]]])  # 1×1×2×3
    SaveImage().execute(image, rt=rt)
    with Image.open(rt.folders.output / "ComfyUI_00001_.png") as img:
        assert img.mode == "RGB"
        assert np.array(img).tolist() == [[[0, 127, 255], [255, 0, 254]]]


def test_save_png_metadata_chunks_are_exact_json(rt):
    SaveImage().execute(grey(), rt=rt, prompt=PROMPT, extra_pnginfo={"workflow": WORKFLOW, "extra": [1, 2]})
    path = rt.folders.output / "ComfyUI_00001_.png"
    assert text_chunks(path) == {"prompt": json.dumps(PROMPT), "workflow": json.dumps(WORKFLOW),
                                 "extra": json.dumps([1, 2])}
    assert [t for t, _ in png_chunks(path)].count(b"tEXt") == 3


def test_save_without_prompt_writes_only_extra_keys(rt):
    SaveImage().execute(grey(), rt=rt, extra_pnginfo={"workflow": WORKFLOW})
    assert text_chunks(rt.folders.output / "ComfyUI_00001_.png") == {"workflow": json.dumps(WORKFLOW)}


def test_save_disable_metadata(rt):
    rt.services.disable_metadata = True
    SaveImage().execute(grey(), rt=rt, prompt=PROMPT, extra_pnginfo={"workflow": WORKFLOW})
    chunk_types = {t for t, _ in png_chunks(rt.folders.output / "ComfyUI_00001_.png")}
    assert not chunk_types & {b"tEXt", b"iTXt", b"zTXt"}


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/escape", "sub/../../../x"])
def test_save_prefix_escapes_are_refused(rt, prefix):
    with pytest.raises(PathRefused, match=r"Saving image outside the output folder is not allowed\.") as info:
        SaveImage().execute(grey(), rt=rt, filename_prefix=prefix)
    assert repr(prefix) in str(info.value)


def test_save_prefix_with_nul_byte_is_refused(rt):
    with pytest.raises(PathRefused, match="NUL byte"):
        SaveImage().execute(grey(), rt=rt, filename_prefix="bad\x00name")


def test_save_prefix_through_symlinked_folder_is_refused(tmp_path, rt):
    outside = tmp_path / "outside"
    outside.mkdir()
    (rt.folders.output / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathRefused, match="Saving image outside the output folder is not allowed"):
        SaveImage().execute(grey(), rt=rt, filename_prefix="link/x")
    assert list(outside.iterdir()) == []


def test_save_planted_file_symlink_is_not_followed(tmp_path, rt):
    # %batch_num% names are not seen by the counter scan, so a symlink can sit where the next file goes.
    outside = tmp_path / "outside"
    outside.mkdir()
    (rt.folders.output / "x_0_00001_.png").symlink_to(outside / "evil.png")
    with pytest.raises(PathRefused, match="outside"):
        SaveImage().execute(grey(), rt=rt, filename_prefix="x_%batch_num%")
    assert not (outside / "evil.png").exists()


def test_save_inner_dotdot_that_stays_inside_is_allowed(rt):
    result = SaveImage().execute(grey(), rt=rt, filename_prefix="a/../b/c")
    assert result["ui"]["images"][0] == {"filename": "c_00001_.png", "subfolder": "b", "type": "output"}


# ---- PreviewImage ---------------------------------------------------------------------------

def test_preview_writes_temp_with_instance_prefix(rt):
    node = PreviewImage()
    first = node.execute(grey(), rt=rt, prompt=PROMPT)["ui"]["images"][0]
    second = node.execute(grey(), rt=rt)["ui"]["images"][0]
    match = re.fullmatch(r"ComfyUI_temp_([a-z]{5})_00001_\.png", first["filename"])
    assert match and first["subfolder"] == "" and first["type"] == "temp"
    assert second["filename"] == f"ComfyUI_temp_{match.group(1)}_00002_.png"
    path = rt.folders.temp / first["filename"]
    assert text_chunks(path) == {"prompt": json.dumps(PROMPT)}
    assert not list(rt.folders.output.iterdir())


def test_preview_and_save_compression_levels(rt):
    image = torch.linspace(0, 1, 64 * 64 * 3).reshape(1, 64, 64, 3)
    save_name = SaveImage().execute(image, rt=rt)["ui"]["images"][0]["filename"]
    preview_name = PreviewImage().execute(image, rt=rt)["ui"]["images"][0]["filename"]
    with Image.open(rt.folders.output / save_name) as img:
        pixels = img.copy()
    for level, path in ((4, rt.folders.output / save_name), (1, rt.folders.temp / preview_name)):
        reference = rt.folders.base / f"ref{level}.png"
        pixels.save(reference, compress_level=level)
        assert path.read_bytes() == reference.read_bytes()


# ---- LoadImage ------------------------------------------------------------------------------

def test_load_rgba_png_gives_inverted_alpha_mask(rt, write_image):
    pixels = [[[255, 0, 0, 255], [0, 255, 0, 128]], [[0, 0, 255, 0], [10, 20, 30, 51]]]
    write_image(rt.folders.input / "rgba.png", pixels)
    image, mask = LoadImage().execute("rgba.png", rt=rt)
    assert image.shape == (1, 2, 2, 3) and image.dtype == torch.float32
    expected = torch.tensor(pixels, dtype=torch.float32)[None, ..., :3] / 255
    assert torch.equal(image, expected)
    assert mask.shape == (1, 2, 2)
    assert torch.allclose(mask, 1 - torch.tensor([[[1.0, 128 / 255], [0.0, 0.2]]]))


def test_load_rgb_png_gives_64x64_zero_mask(rt, write_image):
    write_image(rt.folders.input / "rgb.png", [[[1, 2, 3]]])
    image, mask = LoadImage().execute("rgb.png", rt=rt)
    assert torch.equal(image, torch.tensor([[[[1, 2, 3]]]]) / 255)
    assert mask.shape == (1, 64, 64) and not mask.any()


def test_load_palette_transparency_becomes_mask(rt):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 255, 255])
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    img.save(rt.folders.input / "pal.png", transparency=0)
    image, mask = LoadImage().execute("pal.png", rt=rt)
    assert image[0, 0].tolist() == [[0, 0, 0], [1, 1, 1]]
    assert mask.tolist() == [[[1.0, 0.0]]]


def test_load_applies_exif_orientation(rt):
    img = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10)  # W=3, H=2
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    img.save(rt.folders.input / "exif.png", exif=exif)
    image, _ = LoadImage().execute("exif.png", rt=rt)
    assert image.shape == (1, 3, 2, 3)
    expected = torch.from_numpy(np.array(img.transpose(Image.Transpose.ROTATE_270))).float() / 255
    assert torch.equal(image[0], expected)


def test_load_multi_frame_keeps_frames_of_first_size(rt):
    pages = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (2, 2), (0, 255, 0)),
             Image.new("RGB", (4, 4), (0, 0, 255))]
    pages[0].save(rt.folders.input / "pages.tiff", save_all=True, append_images=pages[1:])
    image, mask = LoadImage().execute("pages.tiff", rt=rt)
    assert image.shape == (2, 4, 4, 3)
    assert image[:, 0, 0].tolist() == [[1, 0, 0], [0, 0, 1]]
    assert mask.shape == (2, 64, 64)


def test_load_16_bit_grey_is_scaled_not_clipped(rt):
    Image.fromarray(np.array([[0, 25500, 65535]], dtype=np.uint16)).save(rt.folders.input / "deep.png")
    image, _ = LoadImage().execute("deep.png", rt=rt)
    assert (image[0, 0] * 255).round().tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]


def test_load_annotated_and_subfolder_names(rt, write_image):
    write_image(rt.folders.output / "sub" / "o.png", [[[9, 9, 9]]])
    write_image(rt.folders.input / "clipspace" / "c.png", [[[7, 7, 7]]])
    assert LoadImage().execute("sub/o.png [output]", rt=rt)[0][0, 0, 0, 0] == pytest.approx(9 / 255)
    assert LoadImage().execute("clipspace/c.png [input]", rt=rt)[0][0, 0, 0, 0] == pytest.approx(7 / 255)


def test_load_is_changed_is_file_sha256(rt, write_image):
    path = write_image(rt.folders.input / "a.png", [[[1, 2, 3]]])
    first = LoadImage.IS_CHANGED("a.png", rt=rt)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    write_image(path, [[[3, 2, 1]]])
    assert LoadImage.IS_CHANGED("a.png", rt=rt) != first


def test_load_validate_inputs(rt, write_image):
    write_image(rt.folders.input / "a.png", [[[1, 2, 3]]])
    assert LoadImage.VALIDATE_INPUTS("a.png", rt=rt) is True
    assert LoadImage.VALIDATE_INPUTS("missing.png", rt=rt) == "Invalid image file: missing.png"
    assert LoadImage.VALIDATE_INPUTS("../app/input/a.png", rt=rt) == "Invalid image file: ../app/input/a.png"
    assert LoadImage.VALIDATE_INPUTS(None, rt=rt) is True  # a linked input is only known at run time


@pytest.mark.parametrize("name", ["../secret.png", "sub/../../secret.png", "/etc/passwd", "../secret.png [output]"])
def test_load_escapes_are_refused(rt, write_image, name):
    write_image(rt.folders.base / "secret.png", [[[1, 2, 3]]])
    with pytest.raises(PathRefused) as info:
        LoadImage().execute(name, rt=rt)
    message = str(info.value)
    assert message.startswith("image: refused path")
    assert LoadImage.VALIDATE_INPUTS(name, rt=rt) == f"Invalid image file: {name}"


@pytest.mark.parametrize("link", ["link.png", "linkdir/secret.png"])
def test_load_symlink_escapes_are_refused(tmp_path, rt, write_image, link):
    secret = write_image(tmp_path / "outside" / "secret.png", [[[1, 2, 3]]])
    (rt.folders.input / "link.png").symlink_to(secret)
    (rt.folders.input / "linkdir").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(PathRefused, match=re.escape(f"'{link}'")):
        LoadImage().execute(link, rt=rt)
    assert LoadImage.VALIDATE_INPUTS(link, rt=rt) == f"Invalid image file: {link}"
    with pytest.raises(PathRefused):
        LoadImage.IS_CHANGED(link, rt=rt)
