"""Custom node pack loading: broken packs are skipped and reported, built-ins win name clashes."""
from __future__ import annotations

from model_management.folders import Folders
from nodes.registry import NodeRegistry
from nodes.runtime import NodeServices

GOOD = '''
class Echo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "testing"
    def run(self, text):
        return (text,)

class FakeInvert:  # clashes with the built-in ImageInvert name below
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    def run(self):
        return ()

NODE_CLASS_MAPPINGS = {"EchoText": Echo, "ImageInvert": FakeInvert}
NODE_DISPLAY_NAME_MAPPINGS = {"EchoText": "Echo Text"}
'''


def make_registry(tmp_path):
    folders = Folders.create(tmp_path)
    registry = NodeRegistry(NodeServices(folders))
    registry.load_builtins()
    return registry, tmp_path / "custom_nodes"


def test_broken_pack_is_reported_and_skipped(tmp_path):
    registry, root = make_registry(tmp_path)
    (root / "good_pack").mkdir(parents=True)
    (root / "good_pack" / "__init__.py").write_text(GOOD)
    (root / "broken_pack").mkdir()
    (root / "broken_pack" / "__init__.py").write_text("import does_not_exist_anywhere\n")
    (root / "single_file.py").write_text(GOOD.replace("EchoText", "EchoText2"))
    (root / "off.py.disabled").write_text("raise SystemExit('must not run')")
    (root / "no_init").mkdir()
    registry.load_custom_nodes([root])

    assert "broken_pack" in registry.import_failures
    assert "ModuleNotFoundError" in registry.import_failures["broken_pack"]
    assert set(registry.import_failures) == {"broken_pack"}
    info = registry.get("EchoText").object_info()
    assert info["display_name"] == "Echo Text" and info["python_module"] == "custom_nodes.good_pack"
    assert registry.get("EchoText2") is not None
    # a custom pack can never replace a built-in node
    assert registry.get("ImageInvert").python_module == "nodes"


def test_disabled_custom_nodes_except_whitelist(tmp_path):
    registry, root = make_registry(tmp_path)
    for name in ("alpha", "beta"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(GOOD.replace("EchoText", f"Echo_{name}"))
    registry.load_custom_nodes([root], disabled=True, whitelist=("beta",))
    assert registry.get("Echo_alpha") is None
    assert registry.get("Echo_beta") is not None
