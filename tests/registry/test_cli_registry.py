"""`ihl registry` commands end to end against moto's S3 server."""

from __future__ import annotations

import json

import pytest
import yaml

from ihl.edge.container_images import image


@pytest.mark.parametrize(
    "command", ["push", "list", "pull", "abandon", "promote", "register", "manifest"]
)
def test_every_registry_command_prints_its_help(cli, command):
    """The URI help "s3://BUCKET[/PREFIX]" once crashed Rich's markup parser on every --help."""
    result = cli("registry", command, "--help")
    assert result.exit_code == 0, result.exception
    assert "s3://BUCKET[/PREFIX]" in result.output


def test_push_list_promote_pull_manifest(cli, bucket, make_export, s3_server, tmp_path):
    uri = f"s3://{bucket}/models"
    for version, payload in (("1", b""), ("2", b"two")):
        result = cli(
            "registry", "push", make_export(f"v{version}", payload=payload), uri, "ihl", version
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"s3://{bucket}/models/ihl/{version}"

    again = cli("registry", "push", tmp_path / "v1", uri, "ihl", "2", "--endpoint-url", s3_server)
    assert again.exit_code == 2 and "immutable" in again.output

    promoted = cli("registry", "promote", uri, "ihl", "1")
    assert promoted.exit_code == 0 and "production: (none) -> 1" in promoted.stdout
    promoted = cli("registry", "promote", uri, "ihl", "2")
    assert "production: 1 -> 2" in promoted.stdout

    assert cli("registry", "list", uri).stdout.split() == ["ihl"]
    header, *lines = cli("registry", "list", uri, "ihl").stdout.splitlines()
    assert header.split() == ["version", "pushed", "size", "aliases"]
    assert [line.split()[0] for line in lines] == ["1", "2"]
    assert lines[1].endswith("  production") and "production" not in lines[0]
    listed = json.loads(cli("registry", "list", uri, "ihl", "--json").stdout)
    assert [v["aliases"] for v in listed] == [[], ["production"]]

    out = tmp_path / "pulled"
    pulled = cli("registry", "pull", uri, "ihl", "production", "-o", out)
    assert pulled.exit_code == 0, pulled.output
    card = (out / "model_card.md").read_bytes()
    assert card == (tmp_path / "v2" / "model_card.md").read_bytes()

    written = cli(
        "registry", "manifest", uri, "ihl", "production", "--gpus", "2", "-o", tmp_path / "i.yaml"
    )
    assert written.exit_code == 0, written.output
    isvc = yaml.safe_load((tmp_path / "i.yaml").read_text())
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"] == f"s3://{bucket}/models/ihl/2/"
    assert model["modelFormat"] == {"name": "pytorch"} and model["image"] == image("serve")
    assert model["ports"][0]["containerPort"] == 8080
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_errors_are_one_line_with_exit_code_2(cli, bucket, make_export, tmp_path):
    missing = cli("registry", "list", "s3://no-such-bucket-here", "ihl")
    assert missing.exit_code == 2
    assert missing.output.startswith("error: registry s3://no-such-bucket-here: bucket")
    assert "Traceback" not in missing.output

    empty = cli("registry", "list", f"s3://{bucket}", "ihl")
    assert empty.exit_code == 2 and "no versions of model 'ihl'" in empty.output
    no_models = cli("registry", "list", f"s3://{bucket}/typo")
    assert no_models.exit_code == 2 and f"no models in s3://{bucket}/typo" in no_models.output

    not_export = cli("registry", "push", tmp_path, f"s3://{bucket}", "ihl", "1")
    assert not_export.exit_code == 2 and "is not an export folder" in not_export.output

    unknown = cli("registry", "pull", f"s3://{bucket}", "ihl", "production", "-o", tmp_path / "x")
    assert unknown.exit_code == 2 and "no model 'ihl'" in unknown.output
    assert not (tmp_path / "x").exists()

    cli("registry", "push", make_export("e"), f"s3://{bucket}", "ihl", "1")
    bad_name = cli("registry", "manifest", f"s3://{bucket}", "ihl", "1", "--service-name", "IHL_1")
    assert bad_name.exit_code == 2 and "InferenceService name 'IHL_1'" in bad_name.output


def test_abandon_an_interrupted_push(cli, bucket, s3):
    s3.put_object(
        Bucket=bucket,
        Key="ihl/7/.push-claim.json",
        Body=json.dumps({"pushed_by": "me@host", "started": "2025-01-01T00:00:00Z"}),
    )
    listed = cli("registry", "list", f"s3://{bucket}", "ihl").stdout
    assert "INCOMPLETE" in listed
    done = cli("registry", "abandon", f"s3://{bucket}", "ihl", "7")
    assert done.exit_code == 0, done.output
    assert "removed 1 objects of incomplete version ihl/7" in done.stdout
    again = cli("registry", "abandon", f"s3://{bucket}", "ihl", "7")
    assert again.exit_code == 2 and "does not exist" in again.output
