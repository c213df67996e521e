"""The real helm, promtool and prometheus binaries that hack/tools.sh installs, and the manifest generator."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(path: str, name: str) -> ModuleType:
    """A script of the repo (`hack/gen-manifests.py`, `benchmarks/startup.py`) as a module: their file names
    are not importable. Registered in sys.modules, as dataclasses look their module up there."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_gen_manifests() -> ModuleType:
    return load_script("hack/gen-manifests.py", "gen_manifests")


def find_helm() -> str | None:
    path = load_gen_manifests().find_helm()
    return str(path) if path is not None and os.access(path, os.X_OK) else None


def find_binary(name: str) -> str | None:
    return shutil.which(name)
