"""The registry against a real S3 endpoint (moto's server): round trip, immutability,
checksums, aliases and the errors a user meets."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ihl.edge.registry import store as registry
from ihl.edge.registry.store import ChecksumError, RegistryError, VersionExistsError

VERSION_FILES = [
    ".push-claim.json",
    "config/config.properties",
    "manifest.json",
    "model-store/ihl.mar",
    "model_card.md",
]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_round_trip(s3, bucket, make_export, tmp_path):
    export = make_export("export")
    uri = f"s3://{bucket}/team/models"

    assert registry.push(export, uri, "ihl", "1") == f"s3://{bucket}/team/models/ihl/1"
    assert keys(s3, bucket) == [f"team/models/ihl/1/{p}" for p in VERSION_FILES]
    [listed] = registry.list_versions(uri, "ihl")
    assert listed["version"] == "1" and listed["complete"] and listed["aliases"] == []
    assert listed["files"] == 3 and listed["size"] == sum(len(b) for b in tree(export).values())
    assert registry.list_models(uri) == ["ihl"]

    pulled = registry.pull(uri, "ihl", "1", tmp_path / "pulled")
    files = tree(pulled)
    manifest = json.loads(files.pop("manifest.json"))
    assert files == tree(export)
    assert manifest["version"] == "1" and set(manifest["files"]) == set(files)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_versions_are_immutable(s3, bucket, make_export):
    uri = f"s3://{bucket}"
    registry.push(make_export("a"), uri, "ihl", "1")
    before = s3.get_object(Bucket=bucket, Key="ihl/1/model-store/ihl.mar")["Body"].read()

    with pytest.raises(VersionExistsError, match="immutable"):
        registry.push(make_export("b", payload=b"other"), uri, "ihl", "1")
    after = s3.get_object(Bucket=bucket, Key="ihl/1/model-store/ihl.mar")["Body"].read()
    assert after == before


def test_a_claimed_version_stops_a_concurrent_push(s3, bucket, make_export):
    """Another push holds the claim: the conditional write fails before any upload."""
    claim = json.dumps({"pushed_by": "ci@runner-7", "started": "2025-01-01T00:00:00Z"})
    s3.put_object(Bucket=bucket, Key="ihl/2/.push-claim.json", Body=claim)

    with pytest.raises(RegistryError, match="being pushed by ci@runner-7"):
        registry.push(make_export("e"), f"s3://{bucket}", "ihl", "2")
    assert keys(s3, bucket) == ["ihl/2/.push-claim.json"]
    with pytest.raises(RegistryError, match="incomplete"):
        registry.pull(f"s3://{bucket}", "ihl", "2", Path("never-written"))
    assert not Path("never-written").exists()
    assert registry.list_versions(f"s3://{bucket}", "ihl")[0]["complete"] is False


def test_concurrent_pushes_of_one_version_leave_one_winner(bucket, make_export, tmp_path):
    uri = f"s3://{bucket}"
    exports = [make_export(f"e{i}", payload=bytes([i]) * 100) for i in range(4)]
    start = threading.Barrier(len(exports))
    outcomes: dict[int, object] = {}

    def push(i):
        start.wait()
        try:
            outcomes[i] = registry.push(exports[i], uri, "ihl", "1")
        except RegistryError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(exports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [i for i, outcome in outcomes.items() if isinstance(outcome, str)]
    assert len(winners) == 1 and len(outcomes) == len(exports)
    pulled = registry.pull(uri, "ihl", "1", tmp_path / "pulled")
    files = tree(pulled)
    files.pop("manifest.json")
    assert files == tree(exports[winners[0]])


def test_a_failed_push_leaves_nothing_and_can_be_retried(s3, bucket, make_export):
    export = make_export("e")
    calls = []

    def failing_progress(label, total):
        calls.append(label)
        if len(calls) == 2:
            raise OSError("disk read error")
        return lambda n: None

    with pytest.raises(OSError, match="disk read error"):
        registry.push(export, f"s3://{bucket}", "ihl", "1", progress=failing_progress)
    assert keys(s3, bucket) == []
    registry.push(export, f"s3://{bucket}", "ihl", "1")
    assert "ihl/1/manifest.json" in keys(s3, bucket)


def test_a_tampered_object_is_refused_on_pull(s3, bucket, make_export, tmp_path):
    uri = f"s3://{bucket}"
    registry.push(make_export("e"), uri, "ihl", "1")
    s3.put_object(Bucket=bucket, Key="ihl/1/model_card.md", Body=b"# ihl 1\n\nAP 0.9\n")
    dest = tmp_path / "out" / "pulled"

    with pytest.raises(ChecksumError, match="model_card.md does not match the manifest"):
        registry.pull(uri, "ihl", "1", dest)
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_a_manifest_cannot_write_outside_the_destination(s3, bucket, make_export, tmp_path):
    uri = f"s3://{bucket}"
    registry.push(make_export("e"), uri, "ihl", "1")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="ihl/1/manifest.json")["Body"].read())
    manifest["files"]["../escaped.txt"] = {"sha256": "0" * 64, "size": 1}
    s3.put_object(Bucket=bucket, Key="ihl/1/manifest.json", Body=json.dumps(manifest))

    with pytest.raises(RegistryError, match="unsafe path '../escaped.txt'"):
        registry.pull(uri, "ihl", "1", tmp_path / "out" / "pulled")
    assert not (tmp_path / "out" / "escaped.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_promote_moves_an_alias_that_pull_and_list_follow(s3, bucket, make_export, tmp_path):
    uri = f"s3://{bucket}/reg"
    registry.push(make_export("v1"), uri, "ihl", "1")
    registry.push(make_export("v2", payload=b"two"), uri, "ihl", "2")

    assert registry.promote(uri, "ihl", "1") is None
    assert registry.promote(uri, "ihl", "2") == "1"
    assert registry.promote(uri, "ihl", "production", alias="stable") is None
    assert registry.resolve(uri, "ihl", "production") == "2"
    assert registry.resolve(uri, "ihl", "stable") == "2"
    by_version = {v["version"]: v["aliases"] for v in registry.list_versions(uri, "ihl")}
    assert by_version == {"1": [], "2": ["production", "stable"]}

    pulled = registry.pull(uri, "ihl", "production", tmp_path / "prod")
    assert tree(pulled)["model_card.md"] == tree(tmp_path / "v2")["model_card.md"]
    assert json.loads((pulled / "manifest.json").read_text())["version"] == "2"


def test_aliases_and_versions_keep_apart(bucket, make_export):
    uri = f"s3://{bucket}"
    registry.push(make_export("e"), uri, "ihl", "1")
    registry.promote(uri, "ihl", "1", alias="staging")

    with pytest.raises(RegistryError, match="'1' is a version"):
        registry.promote(uri, "ihl", "1", alias="1")
    with pytest.raises(RegistryError, match="already has an alias 'staging'"):
        registry.push(make_export("f"), uri, "ihl", "staging")
    with pytest.raises(RegistryError, match=r"alias '7'.*versions: 1; aliases: staging"):
        registry.promote(uri, "ihl", "7")


def test_versions_sort_by_number(bucket, make_export):
    uri = f"s3://{bucket}"
    export = make_export("e")
    for version in ("10", "2", "1.10", "1.2"):
        registry.push(export, uri, "ihl", version)
    assert [v["version"] for v in registry.list_versions(uri, "ihl")] == ["1.2", "1.10", "2", "10"]


def test_bad_inputs_name_the_problem_and_write_nothing(s3, bucket, make_export, tmp_path):
    uri = f"s3://{bucket}"
    export = make_export("e")
    registry.push(export, uri, "ihl", "1")

    with pytest.raises(RegistryError, match="expected s3://BUCKET"):
        registry.push(export, "http://example.com/models", "ihl", "2")
    with pytest.raises(RegistryError, match="version '../2'"):
        registry.push(export, uri, "ihl", "../2")
    with pytest.raises(RegistryError, match="version '_aliases'"):
        registry.push(export, uri, "ihl", "_aliases")
    (export / "model_card.md").unlink()
    with pytest.raises(RegistryError, match="missing model_card.md"):
        registry.push(export, uri, "ihl", "2")
    with pytest.raises(RegistryError, match="export folder not found"):
        registry.push(tmp_path / "nowhere", uri, "ihl", "2")
    with pytest.raises(RegistryError, match="bucket 'no-such-bucket' does not exist"):
        registry.list_versions("s3://no-such-bucket", "ihl")
    with pytest.raises(RegistryError, match="no model 'other'"):
        registry.pull(uri, "other", "1", tmp_path / "p")
    with pytest.raises(RegistryError, match=r"no version or alias '3'.*versions: 1; aliases: none"):
        registry.pull(uri, "ihl", "3", tmp_path / "p")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        registry.pull(uri, "ihl", "1", tmp_path / "full")
    assert tree(tmp_path / "full") == {"keep.txt": b"mine"}
    assert not (tmp_path / "p").exists()
    assert keys(s3, bucket) == [f"ihl/1/{p}" for p in VERSION_FILES]


def test_missing_credentials_and_unreachable_endpoint(bucket, dead_endpoint, monkeypatch, tmp_path):
    uri = f"s3://{bucket}"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(RegistryError, match="no S3 credentials.*AWS_ACCESS_KEY_ID"):
        registry.list_versions(uri, "ihl")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    with pytest.raises(RegistryError, match="cannot reach the S3 endpoint.*--endpoint-url"):
        registry.pull(uri, "ihl", "1", tmp_path / "p", endpoint_url=dead_endpoint)
    assert not (tmp_path / "p").exists()


def _interrupted_push(s3, bucket: str, version: str, started: str) -> None:
    """What a push killed mid-upload leaves: its claim and some files, no manifest."""
    claim = json.dumps({"pushed_by": "ci@runner-7", "started": started})
    s3.put_object(Bucket=bucket, Key=f"ihl/{version}/.push-claim.json", Body=claim)
    s3.put_object(Bucket=bucket, Key=f"ihl/{version}/model_card.md", Body=b"# half")


def test_abandon_removes_an_interrupted_push_so_it_can_be_pushed_again(s3, bucket, make_export):
    uri = f"s3://{bucket}"
    registry.push(make_export("one"), uri, "ihl", "1")
    _interrupted_push(s3, bucket, "2", "2025-01-01T00:00:00Z")
    two = make_export("two")
    with pytest.raises(RegistryError, match="ihl registry abandon"):
        registry.push(two, uri, "ihl", "2")

    deleted = registry.abandon(uri, "ihl", "2")
    assert sorted(deleted) == ["ihl/2/.push-claim.json", "ihl/2/model_card.md"]
    assert [k for k in keys(s3, bucket) if k.startswith("ihl/2/")] == []
    registry.push(two, uri, "ihl", "2")
    assert [v["complete"] for v in registry.list_versions(uri, "ihl")] == [True, True]


def test_abandon_refuses_complete_missing_and_recent_versions(s3, bucket, make_export):
    uri = f"s3://{bucket}"
    registry.push(make_export("one"), uri, "ihl", "1")
    _interrupted_push(s3, bucket, "2", registry._now())
    before = keys(s3, bucket)

    with pytest.raises(RegistryError, match="complete; versions are immutable"):
        registry.abandon(uri, "ihl", "1")
    with pytest.raises(RegistryError, match="ihl/3 does not exist"):
        registry.abandon(uri, "ihl", "3")
    with pytest.raises(RegistryError, match="may still be running"):
        registry.abandon(uri, "ihl", "2")
    _interrupted_push(s3, bucket, "4", "yesterday")
    with pytest.raises(RegistryError, match=r"no readable start time \('yesterday'\)"):
        registry.abandon(uri, "ihl", "4")
    assert len(registry.abandon(uri, "ihl", "4", older_than_minutes=0)) == 2
    assert keys(s3, bucket) == before
    assert len(registry.abandon(uri, "ihl", "2", older_than_minutes=0)) == 2


@pytest.mark.parametrize("reclaimed", [False, True])
def test_a_push_abandoned_while_it_uploads_commits_nothing(s3, bucket, make_export, reclaimed):
    """Abandoned mid-upload, and perhaps claimed again by a new push: the first push must not
    write a manifest over files that are gone or not its own."""
    uri = f"s3://{bucket}"

    def abandon_on_last_file(label, total):
        if label == "model_card.md":
            registry.abandon(uri, "ihl", "1", older_than_minutes=0)
            if reclaimed:
                _interrupted_push(s3, bucket, "1", registry._now())
        return lambda n: None

    with pytest.raises(RegistryError, match="abandoned"):
        registry.push(make_export("e"), uri, "ihl", "1", progress=abandon_on_last_file)
    assert "ihl/1/manifest.json" not in keys(s3, bucket)
    claim = registry._Store(uri).get_json("ihl/1/.push-claim.json")
    if reclaimed:  # the new push's claim is left alone
        assert claim[0]["pushed_by"] == "ci@runner-7"
    else:
        assert claim is None
        assert registry.list_versions(uri, "ihl")[0]["complete"] is False
        registry.abandon(uri, "ihl", "1")
        assert keys(s3, bucket) == []


def test_a_push_that_commits_while_abandon_runs_keeps_its_version(
    s3, bucket, make_export, tmp_path, monkeypatch
):
    """A push whose claim is older than --older-than is still running: it commits between
    abandon's check for a manifest and its deletes. The committed version must survive whole.
    The interleaving is forced: abandon's first manifest read lets the push finish."""
    uri = f"s3://{bucket}"
    monkeypatch.setattr(registry, "_now", lambda: "2025-01-01T00:00:00Z")  # an old claim
    uploading, go = threading.Event(), threading.Event()

    def pause_before_last_file(label, total):
        if label == "model_card.md":
            uploading.set()
            go.wait(60)
        return lambda n: None

    export = make_export("slow")
    errors: list[BaseException] = []

    def slow_push():
        try:
            registry.push(export, uri, "ihl", "1", progress=pause_before_last_file)
        except BaseException as err:  # noqa: BLE001 - reported by the assert below
            errors.append(err)

    pusher = threading.Thread(target=slow_push)
    pusher.start()
    assert uploading.wait(60)
    real_manifest = registry._Store.manifest
    commits = []

    def manifest_then_commit(self, name, version):
        found = real_manifest(self, name, version)
        if threading.current_thread() is threading.main_thread() and not commits:
            commits.append(version)
            go.set()
            pusher.join(60)
        return found

    monkeypatch.setattr(registry._Store, "manifest", manifest_then_commit)
    with pytest.raises(RegistryError, match="committed by its push meanwhile"):
        registry.abandon(uri, "ihl", "1")
    assert commits == ["1"] and not pusher.is_alive() and errors == []
    monkeypatch.setattr(registry._Store, "manifest", real_manifest)
    assert registry.list_versions(uri, "ihl")[0]["complete"] is True
    assert tree(registry.pull(uri, "ihl", "1", tmp_path / "pulled")) == {
        **tree(export),
        "manifest.json": s3.get_object(Bucket=bucket, Key="ihl/1/manifest.json")["Body"].read(),
    }
    assert "ihl/1/.push-claim.json" in keys(s3, bucket)  # written back
