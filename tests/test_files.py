"""ihl.files: outputs appear whole or not at all; JSON errors name the file."""

from __future__ import annotations

import json

import pytest
import torch

from ihl import files


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"AP": 0.5})
    with pytest.raises(ValueError), files.replacing(target) as handle:
        handle.write(b'{"AP": ')
        raise ValueError("crash halfway")
    assert json.loads(target.read_text()) == {"AP": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_json_refuses_nan_without_touching_the_target(tmp_path):
    target = files.write_json(tmp_path / "m.json", {"AP": 0.5})
    with pytest.raises(ValueError):
        files.write_json(target, {"AP": float("nan")})
    assert json.loads(target.read_text()) == {"AP": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_text_bytes_and_torch_round_trip(tmp_path):
    assert files.write_text(tmp_path / "a.txt", "é").read_text(encoding="utf-8") == "é"
    assert files.write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    saved = files.torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(saved)["w"], torch.arange(3))


class Bad(Exception):
    pass


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), ("{oops", "not valid JSON"), (b"\xff\xfe{", "not valid JSON")],
)
def test_load_json_raises_the_callers_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "x.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(Bad, match=message) as err:
        files.load_json(path, Bad)
    assert str(path) in str(err.value)


def test_replacing_folder_swaps_whole_folders_or_nothing(tmp_path):
    out = tmp_path / "out"
    with files.replacing_folder(out) as partial:
        (partial / "a.txt").write_text("first")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["a.txt"]

    with pytest.raises(FileExistsError, match="pass overwrite"):
        with files.replacing_folder(out, hint="pass overwrite"):
            pass
    with pytest.raises(RuntimeError), files.replacing_folder(out, overwrite=True) as partial:
        (partial / "b.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert [p.name for p in out.iterdir()] == ["a.txt"]

    with files.replacing_folder(out, overwrite=True) as partial:
        (partial / "b.txt").write_text("second")
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no scratch left behind
