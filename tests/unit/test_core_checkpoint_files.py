"""Checkpoint file names, shared by the trainer (writes, resumes) and the CLI (names the resume)."""

from __future__ import annotations

from pathlib import Path

from torchjob_core import checkpoint_files


def test_names_sort_by_step_newest_first(tmp_path: Path) -> None:
    for step in (3, 120, 40):
        (tmp_path / checkpoint_files.file_name(step)).write_bytes(b"")
    (tmp_path / "ckpt-000000200.pt.123.tmp").write_bytes(b"")  # a write in flight is no checkpoint
    (tmp_path / "notes.txt").write_text("")
    assert checkpoint_files.file_name(40) == "ckpt-000000040.pt"
    assert [(s, p.name) for s, p in checkpoint_files.listed(tmp_path)] == [
        (120, "ckpt-000000120.pt"),
        (40, "ckpt-000000040.pt"),
        (3, "ckpt-000000003.pt"),
    ]


def test_a_missing_dir_holds_none(tmp_path: Path) -> None:
    assert checkpoint_files.listed(tmp_path / "absent") == []
