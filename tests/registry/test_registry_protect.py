"""`ihl registry protect`: a bucket policy under which no version can be replaced or deleted,
and which no key can lift, while the registry's own writes satisfy it. moto stores bucket
policies but does not enforce them, so the policy is evaluated here as S3 evaluates it (an
explicit Deny wins), on the requests a push sends and on the actions that would lift it."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from urllib.parse import unquote, urlsplit

from ihl.edge.registry import store as registry


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def denied(policy: dict, action: str, bucket: str, key: str | None, headers: dict) -> bool:
    """Whether ``policy`` denies ``action`` on the object ``key`` (None: on the bucket)."""
    arn = f"arn:aws:s3:::{bucket}" + ("" if key is None else f"/{key}")
    for statement in policy["Statement"]:
        if not any(fnmatch(action, pattern) for pattern in _listed(statement["Action"])):
            continue
        if "NotResource" in statement and any(
            fnmatch(arn, pattern) for pattern in _listed(statement["NotResource"])
        ):
            continue
        if "Resource" in statement and not any(
            fnmatch(arn, pattern) for pattern in _listed(statement["Resource"])
        ):
            continue
        absent = statement.get("Condition", {}).get("Null", {}).get("s3:if-none-match")
        if absent == "true" and "If-None-Match" in headers:
            continue
        if statement["Effect"] == "Deny":
            return True
    return False


def test_protect_puts_the_policy_and_keeps_other_statements(s3, bucket):
    other = {"Sid": "Theirs", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{bucket}/private/*"}  # fmt: skip
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [other]})
    )
    registry.protect(f"s3://{bucket}/models")
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    sids = [statement["Sid"] for statement in policy["Statement"]]
    assert sids == [
        "Theirs", "IhlRegistryNoOverwrite", "IhlRegistryNoDelete", "IhlRegistryKeepPolicy"
    ]  # fmt: skip
    registry.protect(f"s3://{bucket}/models")  # again: nothing doubled
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == policy


def test_the_policy_refuses_overwrites_and_deletes_but_not_the_registrys_writes(
    s3, bucket, make_export, monkeypatch
):
    uri = f"s3://{bucket}/models"
    policy = registry.protect(uri)
    sent: list[tuple[str, str, dict]] = []
    real_init = registry._Store.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)

        def record(request, **_):
            path = unquote(urlsplit(request.url).path).lstrip("/")
            sent.append((request.method, path.partition("/")[2], dict(request.headers)))

        self.client.meta.events.register("before-send.s3", record)

    monkeypatch.setattr(registry._Store, "__init__", recording_init)
    registry.push(make_export("a"), uri, "ihl", "1")
    registry.push(make_export("b", payload=b"b"), uri, "ihl", "2")
    registry.promote(uri, "ihl", "1")
    registry.promote(uri, "ihl", "2")  # rewrites the alias (If-Match)
    writes = [(m, k, h) for m, k, h in sent if m in ("PUT", "DELETE", "POST")]
    assert len(writes) >= 12
    for method, key, headers in writes:
        assert method == "PUT", (method, key)
        assert not denied(policy, "s3:PutObject", bucket, key, headers), key

    mar = "models/ihl/1/model-store/ihl.mar"
    assert denied(policy, "s3:PutObject", bucket, mar, {})  # a plain overwrite
    assert denied(policy, "s3:DeleteObject", bucket, mar, {})  # delete, then put anew
    assert denied(policy, "s3:DeleteObject", bucket, "models/ihl/1/manifest.json", {})
    assert not denied(policy, "s3:DeleteObject", bucket, "models/ihl/_aliases/x.json", {})


def test_no_key_can_lift_the_policy_or_expire_the_versions(s3, bucket):
    """The bucket-level actions that would undo the protection without deleting an object
    by name: replace or delete the policy, a lifecycle rule that expires every version,
    suspending versioning, object lock or replication settings."""
    policy = registry.protect(f"s3://{bucket}/models")
    for action in (
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:PutLifecycleConfiguration",  # also what DeleteBucketLifecycle needs
        "s3:PutBucketVersioning",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutReplicationConfiguration",
    ):
        assert denied(policy, action, bucket, None, {}), action
    assert not denied(policy, "s3:ListBucket", bucket, None, {})
    assert not denied(policy, "s3:GetObject", bucket, "models/ihl/1/manifest.json", {})
    # Protecting again is a no-op: the policy in force denies its own replacement.
    assert registry.protect(f"s3://{bucket}/models") == policy
