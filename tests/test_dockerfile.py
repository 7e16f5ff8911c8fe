"""The Dockerfile's contract, read without building (scripts/build-images.sh builds it).

Non-root targets with OCI labels, a build context that can only carry the package's own
sources, and serve-image ports that agree with serving/config.properties, only the
inference API beyond loopback.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from ihl.edge.container_images import REPOSITORY, TARGETS

ROOT = Path(__file__).resolve().parents[1]
SERVING = (
    "config.properties",
    "kserve.config.properties",
    "ihl_handler.py",
    "model-config.yaml",
    "healthcheck.py",
    "verify_models.py",
)
ALLOWED = (
    "pyproject.toml", "uv.lock", "README.md", "ihl", "components", "pipelines",
    *(f"serving/{f}" for f in SERVING),
)  # fmt: skip
"""All the build context holds: the package's sources (the wheel's folders) and the serving
files."""


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments) list, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            current = result.setdefault(rest.split()[-1], [])
        current.append((word.upper(), rest.strip()))
    return result


def args(stage: str, instruction: str) -> list[str]:
    return [rest for word, rest in stages()[stage] if word == instruction]


def labels(stage: str) -> dict[str, str]:
    pairs = [shlex.split(rest) for rest in args(stage, "LABEL")]
    return dict(pair.split("=", 1) for line in pairs for pair in line)


def test_targets_are_the_images_targets():
    assert set(TARGETS) <= set(stages())


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_as_a_numeric_non_root_user(target):
    user = args(target, "USER")[-1]
    uid, _, gid = user.partition(":")
    # Numeric, or Kubernetes' runAsNonRoot cannot verify it.
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)


@pytest.mark.parametrize("target", TARGETS)
def test_target_carries_oci_labels_from_build_args(target):
    found = labels(target)
    for key, arg in (("source", "SOURCE"), ("version", "VERSION"), ("revision", "REVISION")):
        assert found[f"org.opencontainers.image.{key}"] == f"${{{arg}}}"
        assert any(rest.startswith(f"{arg}=") for rest in args(target, "ARG"))


def test_source_label_names_the_repository_of_the_image():
    # GHCR links a package to its repository through this label.
    default = next(r for r in args("train", "ARG") if r.startswith("SOURCE="))
    owner_name = REPOSITORY.split("/", 1)[1]
    assert default == f"SOURCE=https://github.com/{owner_name}"


def test_context_is_an_allow_list_without_data():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == set(ALLOWED)
    assert {"**/*.pt", "**/*.mar", "**/__pycache__"} <= set(lines)


def test_every_copy_from_the_context_is_allowed_and_exists():
    for stage in stages():
        for rest in args(stage, "COPY"):
            if rest.startswith("--from"):
                continue
            for source in shlex.split(rest)[:-1]:
                assert source in ALLOWED, f"{stage}: COPY {source}"
                assert (ROOT / source).exists(), f"{stage}: COPY {source} is not in the repo"


def test_the_wheel_stage_copies_everything_the_wheel_ships():
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    wheel = wheel["targets"]["wheel"]
    shipped = {*wheel["packages"], *wheel.get("force-include", {})}
    copied = {
        source
        for rest in args("wheel", "COPY")
        if not rest.startswith("--from")
        for source in shlex.split(rest)[:-1]
    }
    assert shipped <= copied, f"the wheel stage lacks {sorted(shipped - copied)}"


def addresses(text: str) -> dict[str, tuple[str, int]]:
    """``*_address`` hosts and ports of a config.properties, or of TS_*_ADDRESS in ENV."""
    found = re.findall(
        r"(?:TS_)?(\w+_address)\s*=\s*https?://([^:\s]+):(\d+)\b", text, re.IGNORECASE
    )
    return {key.lower(): (host, int(port)) for key, host, port in found}


def serve_addresses() -> dict[str, tuple[str, int]]:
    """Where the serve image's TorchServe listens: the image's TS_*_ADDRESS variables
    override its config file (enable_envvars_config)."""
    return addresses((ROOT / "serving" / "config.properties").read_text()) | addresses(
        " ".join(args("serve", "ENV"))
    )


def test_serve_image_exposes_only_the_inference_api():
    """The metrics API takes no key, and nothing outside the container needs management:
    both stay on loopback (docker/check_image.py serve checks the sockets themselves)."""
    config = serve_addresses()
    assert config["inference_address"][0] == "0.0.0.0"
    assert config["management_address"][0] == "127.0.0.1"
    assert config["metrics_address"][0] == "127.0.0.1"


def test_serve_ports_health_check_and_config_agree():
    text = (ROOT / "serving" / "config.properties").read_text()
    assert re.search(r"^enable_envvars_config\s*=\s*true", text, re.MULTILINE)
    config = {key: port for key, (_, port) in serve_addresses().items()}
    assert set(config) == {"inference_address", "management_address", "metrics_address"}
    exposed = {int(p) for rest in args("serve", "EXPOSE") for p in rest.split()}
    assert exposed == {config["inference_address"]}
    health = args("serve", "HEALTHCHECK")[0]
    assert f"127.0.0.1:{config['inference_address']}/ping" in health

    copied = [shlex.split(r) for r in args("serve", "COPY") if "serving/config.properties" in r]
    cmd = json.loads(args("serve", "CMD")[-1])
    assert cmd[:2] == ["torchserve", "--foreground"]
    assert cmd[cmd.index("--ts-config") + 1] == copied[0][-1]
