"""Read TrainingJob manifests from files and validate them with the operator's own parser."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from torchjob_core import constants, spec


class ManifestError(ValueError):
    """The file is unreadable, not YAML, or holds no TrainingJob."""


def read_documents(path: Path) -> list[dict[str, Any]]:
    try:
        text = sys_stdin_or_file(path)
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise ManifestError(f"{path}: document {i} is not a mapping")
    return docs


def sys_stdin_or_file(path: Path) -> str:
    """`-` reads standard input, as kubectl -f - does."""
    return sys.stdin.read() if str(path) == "-" else path.read_text()


def training_jobs(path: Path) -> list[dict[str, Any]]:
    """Every TrainingJob document of the file (other kinds are not ours to run)."""
    every = read_documents(path)
    docs = [d for d in every if d.get("kind") == constants.KIND]
    if not docs and len(every) == 1:
        return every  # a lone document: let the parser name what is wrong (kind, apiVersion, ...)
    if not docs:
        raise ManifestError(f"{path}: no document of kind {constants.KIND}")
    return docs


def load_job_file(path: Path) -> spec.TrainingJob:
    """The one TrainingJob of the file, validated (SpecError names the field, as admission does)."""
    docs = training_jobs(path)
    if len(docs) > 1:
        raise ManifestError(f"{path}: {len(docs)} TrainingJobs; a local run takes one per file")
    return spec.load(docs[0])
