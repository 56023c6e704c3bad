"""Where files live: user folders (input/output/temp/user), model folders, extra_model_paths.yaml.

Every path that arrives from a request or a workflow goes through `contained()` before it is
opened: realpath first (so symlinks are followed), then a containment check.  Checking the
string before resolving symlinks is the bug behind ComfyUI#12285; we never do that.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

# folder key -> (default sub-directories of models/, allowed extensions; empty set = any file)
MODEL_FOLDERS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("checkpoints",), MODEL_EXTENSIONS),
    "configs": (("configs",), frozenset({".yaml"})),
    "loras": (("loras",), MODEL_EXTENSIONS),
    "vae": (("vae",), MODEL_EXTENSIONS),
    "text_encoders": (("text_encoders", "clip"), MODEL_EXTENSIONS),
    "diffusion_models": (("unet", "diffusion_models"), MODEL_EXTENSIONS),
    "clip_vision": (("clip_vision",), MODEL_EXTENSIONS),
    "style_models": (("style_models",), MODEL_EXTENSIONS),
    "embeddings": (("embeddings",), MODEL_EXTENSIONS),
    "diffusers": (("diffusers",), frozenset({"folder"})),
    "vae_approx": (("vae_approx",), MODEL_EXTENSIONS),
    "controlnet": (("controlnet", "t2i_adapter"), MODEL_EXTENSIONS),
    "gligen": (("gligen",), MODEL_EXTENSIONS),
    "upscale_models": (("upscale_models",), MODEL_EXTENSIONS),
    "latent_upscale_models": (("latent_upscale_models",), MODEL_EXTENSIONS),
    "hypernetworks": (("hypernetworks",), MODEL_EXTENSIONS),
    "photomaker": (("photomaker",), MODEL_EXTENSIONS),
    "classifiers": (("classifiers",), frozenset({""})),
    "model_patches": (("model_patches",), MODEL_EXTENSIONS),
    "audio_encoders": (("audio_encoders",), MODEL_EXTENSIONS),
}
# Sub-folders of output/ that saving nodes write to and loaders should also find.
OUTPUT_MODEL_FOLDERS = {"checkpoints": "checkpoints", "loras": "loras", "vae": "vae",
                        "text_encoders": "clip", "diffusion_models": "diffusion_models"}
# Models that ship with the repository (tracked, unlike models/), searched after the user's folders.
BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_MODEL_FOLDERS = {"checkpoints": "checkpoints"}
LEGACY_KEYS = {"unet": "diffusion_models", "clip": "text_encoders"}
FILE_TYPES = ("input", "output", "temp")


class PathRefused(ValueError):
    """A user-supplied path that would leave its allowed directory."""


def contained(root: str | os.PathLike, *parts: str) -> Path:
    """Join `parts` under `root`, resolve symlinks, and refuse anything that ends up outside root."""
    for part in parts:
        if part is None:
            continue
        if "\x00" in part:
            raise PathRefused(f"refused path {part!r}: NUL byte")
        if os.path.isabs(part) or part.startswith(("/", "\\")):
            raise PathRefused(f"refused path {part!r}: absolute paths are not allowed")
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, *[p for p in parts if p]))
    if candidate != real_root and not candidate.startswith(real_root + os.sep):
        raise PathRefused(f"refused path {os.path.join(*[p for p in parts if p] or [''])!r}: "
                          "it resolves outside its folder")
    return Path(candidate)


def split_annotation(name: str, default_type: str) -> tuple[str, str]:
    """`"a.png [output]"` -> ("a.png", "output"): ComfyUI's annotated file name convention."""
    for file_type in FILE_TYPES:
        suffix = f" [{file_type}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], file_type
    return name, default_type


@dataclass
class Folders:
    """All directories of one app instance.  Tests build their own in a tmp dir."""

    base: Path
    input: Path
    output: Path
    temp: Path
    user: Path
    custom_nodes: list[Path]
    models: dict[str, list[Path]] = field(default_factory=dict)
    extensions: dict[str, frozenset[str]] = field(default_factory=dict)
    _listing_cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, base: str | os.PathLike, *, input_dir: str | None = None, output_dir: str | None = None,
               temp_dir: str | None = None, user_dir: str | None = None,
               extra_configs: list[str] | tuple[str, ...] = ()) -> "Folders":
        base = Path(base).resolve()
        folders = cls(
            base=base,
            input=Path(input_dir or base / "input").resolve(),
            output=Path(output_dir or base / "output").resolve(),
            temp=(Path(temp_dir) / "temp" if temp_dir else base / "temp").resolve(),
            user=Path(user_dir or base / "user").resolve(),
            custom_nodes=[base / "custom_nodes"],
        )
        for key, (subdirs, exts) in MODEL_FOLDERS.items():
            folders.models[key] = [base / "models" / d for d in subdirs]
            folders.extensions[key] = exts
        for key, sub in OUTPUT_MODEL_FOLDERS.items():
            folders.models[key].append(folders.output / sub)
        for key, sub in BUNDLED_MODEL_FOLDERS.items():
            folders.models[key].append(BUNDLED_MODELS / sub)
        for config in extra_configs:
            folders.load_extra_paths(config)
        return folders

    def ensure(self, clean_temp: bool = True) -> None:
        """Create user folders and the model sub-folder layout; empty temp like ComfyUI does at start."""
        if clean_temp:
            shutil.rmtree(self.temp, ignore_errors=True)
        for d in (self.input, self.output, self.temp, self.user):
            d.mkdir(parents=True, exist_ok=True)
        for key, (subdirs, _) in MODEL_FOLDERS.items():
            for d in subdirs:
                (self.base / "models" / d).mkdir(parents=True, exist_ok=True)

    def add_model_path(self, key: str, path: str | os.PathLike, *, first: bool = False) -> None:
        key = LEGACY_KEYS.get(key, key)
        if key == "custom_nodes":
            self.custom_nodes.append(Path(path))
            return
        paths = self.models.setdefault(key, [])
        self.extensions.setdefault(key, frozenset())
        path = Path(path)
        if path in paths:
            paths.remove(path)
        paths.insert(0, path) if first else paths.append(path)
        self._listing_cache.pop(key, None)

    def load_extra_paths(self, config_path: str | os.PathLike) -> None:
        """Apply an extra_model_paths.yaml (ComfyUI format: sections of folder key -> paths)."""
        config_path = Path(config_path)
        data = yaml.safe_load(config_path.read_text()) or {}
        for section in data.values():
            if not section:
                continue
            base = section.get("base_path")
            if base:
                base = Path(os.path.expandvars(os.path.expanduser(str(base))))
                if not base.is_absolute():
                    base = config_path.parent / base
            first = bool(section.get("is_default"))
            for key, value in section.items():
                if key in ("base_path", "is_default") or value is None:
                    continue
                for line in str(value).splitlines():
                    line = line.strip()
                    if not line:
                        continue
                    p = Path(os.path.expandvars(os.path.expanduser(line)))
                    if base:
                        p = base / p
                    elif not p.is_absolute():
                        p = config_path.parent / p
                    self.add_model_path(key, Path(os.path.normpath(p)), first=first)

    def type_dir(self, file_type: str) -> Path:
        if file_type not in FILE_TYPES:
            raise PathRefused(f"unknown file type {file_type!r}; expected one of {', '.join(FILE_TYPES)}")
        return getattr(self, file_type)

    def model_keys(self) -> list[str]:
        return list(self.models)

    def list_models(self, key: str) -> list[str]:
        """Sorted relative paths (forward slashes) of files in a model folder, cached by directory mtimes."""
        key = LEGACY_KEYS.get(key, key)
        if key not in self.models:
            raise KeyError(key)
        exts = self.extensions.get(key, frozenset())
        stamp = tuple(_tree_mtime(p) for p in self.models[key])
        cached = self._listing_cache.get(key)
        if cached and cached[0] == stamp:
            return cached[1]
        names: set[str] = set()
        for root in self.models[key]:
            if not root.is_dir():
                continue
            if exts == frozenset({"folder"}):
                names.update(d.name for d in root.iterdir() if d.is_dir())
                continue
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                dirnames[:] = [d for d in dirnames if d != ".git"]
                for fn in filenames:
                    ext = os.path.splitext(fn)[1].lower()
                    if exts and ext not in exts:
                        continue
                    rel = os.path.relpath(os.path.join(dirpath, fn), root)
                    names.add(rel.replace(os.sep, "/"))
        result = sorted(names)
        self._listing_cache[key] = (stamp, result)
        return result

    def model_path(self, key: str, name: str) -> Path:
        """Resolve a model file name chosen by a user; refuses escapes, raises FileNotFoundError if absent."""
        key = LEGACY_KEYS.get(key, key)
        for root in self.models.get(key, []):
            try:
                path = contained(root, name)
            except PathRefused:
                raise
            if path.exists():
                return path
        raise FileNotFoundError(f"{name!r} was not found in the {key!r} model folders")

    def list_files(self, file_type: str, extensions: frozenset[str] | None = None) -> list[str]:
        """Files (relative, forward slashes) under input/output/temp, for LoadImage-style dropdowns."""
        root = self.type_dir(file_type)
        if not root.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fn in filenames:
                if fn.startswith("."):
                    continue
                if extensions and os.path.splitext(fn)[1].lower() not in extensions:
                    continue
                out.append(os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/"))
        return sorted(out)

    def annotated_path(self, name: str, default_type: str = "input") -> Path:
        """Resolve `"sub/a.png [output]"` style names from workflows, contained in their folder."""
        name, file_type = split_annotation(name, default_type)
        return contained(self.type_dir(file_type), name)


def _tree_mtime(path: Path) -> float:
    try:
        newest = path.stat().st_mtime
    except OSError:
        return -1.0
    for dirpath, dirnames, _ in os.walk(path, followlinks=True):
        for d in dirnames:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, d)).st_mtime)
            except OSError:
                pass
    return newest
