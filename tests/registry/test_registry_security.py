"""The registry against tampering and races, on moto's S3 server: a push uploads only the
export, a lost answer never deletes a committed version, aliases and versions never share a
name, and an InferenceService pins the manifest the serve image checks."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ihl.edge.registry import store as registry
from ihl.edge.registry.kserve import kserve_manifest
from ihl.edge.registry.store import RegistryError

REPO = Path(__file__).resolve().parents[2]


def _verify_models():
    path = REPO / "serving" / "verify_models.py"
    spec = importlib.util.spec_from_file_location("verify_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _precondition_failed() -> ClientError:
    return ClientError(
        {"Error": {"Code": "PreconditionFailed", "Message": "At least one precondition failed"}},
        "PutObject",
    )


def test_push_uploads_only_the_exports_own_files(s3, bucket, make_export, tmp_path):
    export = make_export("export")
    secret = tmp_path / "secret.txt"
    secret.write_text("AWS_SECRET_ACCESS_KEY=outside")
    (export / ".env").write_text("TOKEN=1")
    (export / "key_file.json").write_text("{}")
    (export / "config" / "card.md").symlink_to(secret)
    (export / "linked").symlink_to(tmp_path)
    with pytest.raises(RegistryError) as err:
        registry.push(export, f"s3://{bucket}", "ihl", "1")
    for name in (".env", "key_file.json", "config/card.md (a symlink)", "linked (a symlink)"):
        assert name in str(err.value)
    assert keys(s3, bucket) == []  # refused before anything was uploaded


def test_a_second_archive_is_refused(s3, bucket, make_export):
    export = make_export("export")
    (export / "model-store" / "other.mar").write_bytes(b"x")
    with pytest.raises(RegistryError, match="other.mar"):
        registry.push(export, f"s3://{bucket}", "ihl", "1")


def test_a_lost_answer_to_the_manifest_write_keeps_the_committed_version(
    s3, bucket, make_export, monkeypatch, tmp_path
):
    """The manifest write succeeds, its answer is lost, the retry meets 412: the push
    committed, and its cleanup must not delete the committed version's files."""
    real = registry._Store.put_json

    def lost_answer(self, key, value, **conditions):
        real(self, key, value, **conditions)
        if key.endswith(registry.MANIFEST):
            raise _precondition_failed()

    monkeypatch.setattr(registry._Store, "put_json", lost_answer)
    uri = f"s3://{bucket}"
    export = make_export("export")
    assert registry.push(export, uri, "ihl", "1") == f"{uri}/ihl/1"
    pulled = registry.pull(uri, "ihl", "1", tmp_path / "pulled")
    assert (pulled / "model-store" / "ihl.mar").read_bytes() == (
        export / "model-store" / "ihl.mar"
    ).read_bytes()
    assert json.loads((pulled / "manifest.json").read_text())["push_id"]


def test_a_failed_push_deletes_nothing_once_another_push_committed(
    s3, bucket, make_export, monkeypatch
):
    real = registry._Store.put_json

    def other_push_commits_first(self, key, value, **conditions):
        if key.endswith(registry.MANIFEST):
            real(self, key, value | {"push_id": "another-push"}, **conditions)
            raise _precondition_failed()
        real(self, key, value, **conditions)

    monkeypatch.setattr(registry._Store, "put_json", other_push_commits_first)
    with pytest.raises(RegistryError):
        registry.push(make_export("export"), f"s3://{bucket}", "ihl", "1")
    assert keys(s3, bucket) == [
        f"ihl/1/{p}"
        for p in (
            ".push-claim.json",
            "config/config.properties",
            "manifest.json",
            "model-store/ihl.mar",
            "model_card.md",
        )
    ]


def test_an_alias_cannot_take_the_name_of_a_version_being_pushed(s3, bucket, make_export):
    uri = f"s3://{bucket}"
    registry.push(make_export("a"), uri, "ihl", "1")
    s3.put_object(Bucket=bucket, Key="ihl/2/.push-claim.json", Body=b'{"push_id": "x"}')
    with pytest.raises(RegistryError, match="being pushed"):
        registry.promote(uri, "ihl", "1", "2")
    assert registry.list_versions(uri, "ihl")[0]["aliases"] == []


def test_a_push_that_meets_an_alias_after_its_claim_refuses_and_leaves_nothing(
    s3, bucket, make_export, monkeypatch
):
    uri = f"s3://{bucket}"
    registry.push(make_export("a"), uri, "ihl", "1")
    real = registry._Store.put_json

    def promoted_meanwhile(self, key, value, **conditions):
        real(self, key, value, **conditions)
        if key.endswith(registry.CLAIM):  # another client promotes "2" right now
            alias = {"version": "1", "previous": None, "promoted_at": "now", "by": "other"}
            s3.put_object(Bucket=bucket, Key="ihl/_aliases/2.json", Body=json.dumps(alias))

    monkeypatch.setattr(registry._Store, "put_json", promoted_meanwhile)
    with pytest.raises(RegistryError, match="alias '2'"):
        registry.push(make_export("b", payload=b"b"), uri, "ihl", "2")
    assert not [k for k in keys(s3, bucket) if k.startswith("ihl/2/")]
    assert registry.resolve(uri, "ihl", "2") == "1"


def test_a_promote_that_meets_a_push_after_its_write_undoes_it(
    s3, bucket, make_export, monkeypatch
):
    uri = f"s3://{bucket}"
    registry.push(make_export("a"), uri, "ihl", "1")
    real = registry._Store.put_json

    def pushed_meanwhile(self, key, value, **conditions):
        real(self, key, value, **conditions)
        if "/_aliases/" in key:  # another client claims version "2" right now
            s3.put_object(Bucket=bucket, Key="ihl/2/.push-claim.json", Body=b'{"push_id": "y"}')

    monkeypatch.setattr(registry._Store, "put_json", pushed_meanwhile)
    with pytest.raises(RegistryError, match="being pushed"):
        registry.promote(uri, "ihl", "1", "2")
    assert "ihl/_aliases/2.json" not in keys(s3, bucket)


def _download_all(s3, bucket: str, prefix: str, dest: Path) -> Path:
    """What KServe's storage initializer does: every object under the prefix, unchecked."""
    for key in keys(s3, bucket):
        if key.startswith(prefix):
            target = dest / key[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return dest


def test_the_inference_service_pins_the_manifest_the_serve_image_checks(
    s3, bucket, make_export, tmp_path
):
    uri = f"s3://{bucket}/models"
    registry.push(make_export("export"), uri, "ihl", "1")
    registry.promote(uri, "ihl", "1")
    service = kserve_manifest(uri, "ihl", "production")
    env = {e["name"]: e["value"] for e in service["spec"]["predictor"]["model"]["env"]}
    stored = s3.get_object(Bucket=bucket, Key="models/ihl/1/manifest.json")["Body"].read()
    assert env["IHL_MANIFEST_SHA256"] == hashlib.sha256(stored).hexdigest()

    verify = _verify_models()
    mounted = _download_all(s3, bucket, "models/ihl/1/", tmp_path / "mnt-models")
    assert verify.verify(mounted, env["IHL_MANIFEST_SHA256"]) == 3
    pulled = registry.pull(uri, "ihl", "production", tmp_path / "pulled")
    assert verify.verify(pulled, env["IHL_MANIFEST_SHA256"]) == 3

    # Someone who can write the bucket swaps the archive and rewrites the manifest to match.
    evil = b"an archive with other handler code"
    manifest = json.loads(stored)
    manifest["files"]["model-store/ihl.mar"] = {
        "sha256": hashlib.sha256(evil).hexdigest(),
        "size": len(evil),
    }
    s3.put_object(Bucket=bucket, Key="models/ihl/1/model-store/ihl.mar", Body=evil)
    s3.put_object(Bucket=bucket, Key="models/ihl/1/manifest.json", Body=json.dumps(manifest))
    tampered = _download_all(s3, bucket, "models/ihl/1/", tmp_path / "tampered")
    with pytest.raises(verify.Refused, match="pinned"):
        verify.verify(tampered, env["IHL_MANIFEST_SHA256"])


def _rewrite_archive_and_manifest(s3, bucket: str, prefix: str) -> None:
    """What someone who can write the bucket does: a new archive, and a manifest to match."""
    stored = s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read()
    evil = b"an archive with other handler code"
    manifest = json.loads(stored)
    manifest["files"]["model-store/ihl.mar"] = {
        "sha256": hashlib.sha256(evil).hexdigest(),
        "size": len(evil),
    }
    s3.put_object(Bucket=bucket, Key=f"{prefix}/model-store/ihl.mar", Body=evil)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest))


def test_pull_and_register_pinned_to_a_manifest_refuse_a_rewritten_version(
    cli, s3, bucket, make_export, dead_endpoint, tmp_path
):
    uri = f"s3://{bucket}/models"
    registry.push(make_export("export"), uri, "ihl", "1")
    [listed] = json.loads(cli("registry", "list", uri, "ihl", "--json").stdout)
    pin = listed["manifest_sha256"]
    stored = s3.get_object(Bucket=bucket, Key="models/ihl/1/manifest.json")["Body"].read()
    assert pin == hashlib.sha256(stored).hexdigest()
    store = tmp_path / "model-store"
    store.mkdir()
    register = ["registry", "register", uri, "ihl", "1", "--model-store", store,
                "--management-url", dead_endpoint, "--sha256", pin]  # fmt: skip

    pulled = cli("registry", "pull", uri, "ihl", "1", "-o", tmp_path / "good", "--sha256", pin)
    assert pulled.exit_code == 0, pulled.output
    reached = cli(*register)  # the pin holds: it goes on to the (absent) TorchServe
    assert reached.exit_code == 2 and "cannot reach the TorchServe management API" in reached.output

    _rewrite_archive_and_manifest(s3, bucket, "models/ihl/1")
    for command in (["registry", "pull", uri, "ihl", "1", "-o", tmp_path / "bad", "--sha256", pin],
                    register):  # fmt: skip
        refused = cli(*command)
        assert refused.exit_code == 2, refused.output
        assert f"not the pinned {pin}" in refused.output
    assert not (tmp_path / "bad").exists()
    assert list(store.iterdir()) == []
    with pytest.raises(registry.ChecksumError, match="rewritten since it was pinned"):
        registry.pull(uri, "ihl", "1", tmp_path / "bad", manifest_sha256=pin)


def test_registry_errors_never_print_the_endpoints_credentials(cli, bucket, dead_endpoint):
    """An endpoint URL with credentials in it (botocore quotes it when it cannot connect)."""
    secret_endpoint = dead_endpoint.replace("http://", "http://key:SECRET@")
    for command in (
        ["registry", "list", f"s3://{bucket}", "--endpoint-url", secret_endpoint],
        ["registry", "list", f"s3://{bucket}", "--endpoint-url", "ftp://key:SECRET@x"],
    ):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert "SECRET" not in result.output
        assert "***@" in result.output, result.output
