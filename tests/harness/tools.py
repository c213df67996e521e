"""The real helm, promtool and prometheus binaries that hack/tools.sh installs, and the manifest generator."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_gen_manifests() -> ModuleType:
    """hack/gen-manifests.py as a module (its file name is not importable)."""
    spec = importlib.util.spec_from_file_location("gen_manifests", ROOT / "hack" / "gen-manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_helm() -> str | None:
    path = load_gen_manifests().find_helm()
    return str(path) if path is not None and os.access(path, os.X_OK) else None


def find_binary(name: str) -> str | None:
    return shutil.which(name)
