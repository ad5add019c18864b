"""Atomic writes: a file is replaced whole, or left as it was."""

from __future__ import annotations

import pytest

from dlprojects.core.files import atomic_path, write_atomic


def test_a_write_replaces_the_file_whole_and_leaves_no_scratch_file(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_atomic(target, "{}\n")
    assert write_atomic(target, "é\n".encode()) == target
    assert target.read_bytes() == "é\n".encode()
    assert [path.name for path in target.parent.iterdir()] == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as scratch:
        scratch.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["model.safetensors"]
