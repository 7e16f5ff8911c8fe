"""Prepare on an unchanged dataset stats its files instead of reading them, and decodes only
when asked."""

import hashlib
import os
import shutil

import pytest
from sample_data import COCO_SAMPLE

from ihl import prepare as prepare_mod
from ihl.data.errors import DatasetError
from ihl.prepare import fingerprint, prepare


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(COCO_SAMPLE, root)
    return root


@pytest.fixture
def hashed(monkeypatch):
    """The files whose bytes fingerprint reads."""
    names = []
    real = hashlib.file_digest

    def counting(handle, digest):
        names.append(os.path.basename(handle.name))
        return real(handle, digest)

    monkeypatch.setattr(prepare_mod.hashlib, "file_digest", counting)
    return names


def test_cached_fingerprint_equals_the_full_one_and_rereads_only_changed_files(
    coco, tmp_path, hashed
):
    cache = tmp_path / "cache" / "fingerprint.json"
    full = fingerprint(coco)
    count = len(hashed)
    assert fingerprint(coco, cache) == full and cache.is_file()
    hashed.clear()
    assert fingerprint(coco, cache) == full
    assert hashed == []

    image = next((coco / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    changed = fingerprint(coco, cache)
    assert hashed == [image.name] and changed != full
    hashed.clear()
    assert fingerprint(coco) == changed and len(hashed) == count


def test_same_size_and_mtime_keeps_the_cached_digest(coco, tmp_path):
    """The documented trade: (path, size, mtime) is the key, not the bytes."""
    cache = tmp_path / "fingerprint.json"
    before = fingerprint(coco, cache)
    image = next((coco / "images").iterdir())
    stat = image.stat()
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF
    image.write_bytes(bytes(data))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(coco, cache) == before
    assert fingerprint(coco) != before


def test_a_corrupt_cache_is_only_slower(coco, tmp_path):
    cache = tmp_path / "fingerprint.json"
    cache.write_text("{not json")
    assert fingerprint(coco, cache) == fingerprint(coco)


def test_decoding_every_image_is_opt_in(coco, tmp_path):
    image = next((coco / "images").iterdir())
    image.write_bytes(image.read_bytes()[:200])  # truncated JPEG: found, not decodable
    summary = prepare("coco", coco, tmp_path / "out", fingerprint_cache=tmp_path / "c.json")
    assert summary["fingerprint"] == fingerprint(coco)
    with pytest.raises(DatasetError, match=image.name):
        prepare("coco", coco, tmp_path / "out2", decode_images=True)


def test_prepare_command_decodes_only_when_asked(cli, coco, tmp_path):
    image = next((coco / "images").iterdir())
    image.write_bytes(image.read_bytes()[:200])
    cache = tmp_path / "cache.json"
    args = ("prepare", "--dataset", "coco", "--root", coco, "--out", tmp_path / "o")
    result = cli(*args, "--fingerprint-cache", cache)
    assert result.exit_code == 0, result.output
    assert cache.is_file()
    decoded = cli(*args, "--decode")
    assert decoded.exit_code != 0 and image.name in decoded.output
