"""hack/setup.sh installs with compiled bytecode, and both images check that pip compiled theirs.

These machines set PYTHONDONTWRITEBYTECODE=1, so a venv without .pyc files makes every rank of a local
run compile torch's sources at import (about 10 s of the README example's start-up on 2 cores).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["torch", "torch._dynamo", "kopf", "kubernetes.client"])
def test_the_dev_venv_holds_compiled_bytecode(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    cached = Path(importlib.util.cache_from_source(spec.origin))
    assert cached.is_file(), f"{module} has no bytecode at {cached}: install with --compile-bytecode"


@pytest.mark.parametrize(("image", "package"), [("operator", "kopf"), ("trainer", "torch/_dynamo")])
def test_each_image_fails_its_build_without_compiled_bytecode(image: str, package: str) -> None:
    dockerfile = (ROOT / image / "Dockerfile").read_text()
    assert f"site-packages/{package}/__pycache__/*.pyc" in dockerfile
