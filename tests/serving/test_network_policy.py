"""serving/kserve/networkpolicy.yaml, evaluated as Kubernetes evaluates a NetworkPolicy:
only KServe's ingress path reaches TorchServe in the predictor pods."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
POLICY = yaml.safe_load((REPO / "serving" / "kserve" / "networkpolicy.yaml").read_text())
SERVICE = yaml.safe_load((REPO / "serving" / "kserve" / "inferenceservice.yaml").read_text())
PREDICTOR = {"serving.kserve.io/inferenceservice": SERVICE["metadata"]["name"]}
GATEWAY = ("istio-system", {"istio": "ingressgateway"})
ACTIVATOR = ("knative-serving", {"app": "activator"})


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def admits(policy: dict, target: dict, source: tuple[str, dict], port: int) -> bool:
    """Whether ``policy`` lets a pod (namespace, labels) reach port ``port`` of a pod labelled
    ``target`` in the policy's namespace (a pod no policy selects admits everything)."""
    spec = policy["spec"]
    if not _matches(spec["podSelector"], target) or "Ingress" not in spec["policyTypes"]:
        return True
    namespace, labels = source
    for rule in spec.get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        peers = rule.get("from")
        if not peers:
            return True  # no peers: from everywhere
        for peer in peers:
            in_namespace = (
                _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
                if "namespaceSelector" in peer
                else namespace == "ihl-namespace"
            )
            if in_namespace and _matches(peer.get("podSelector", {}), labels):
                return True
    return False


def test_the_policy_selects_the_predictor_pods():
    assert _matches(POLICY["spec"]["podSelector"], PREDICTOR)
    assert POLICY["spec"]["policyTypes"] == ["Ingress"]


def test_only_the_ingress_path_reaches_torchserve():
    [port] = [p["containerPort"] for p in SERVICE["spec"]["predictor"]["model"]["ports"]]
    for source in (GATEWAY, ACTIVATOR):
        assert admits(POLICY, PREDICTOR, source, 8012)
    assert admits(POLICY, PREDICTOR, GATEWAY, port)
    for source in (
        ("default", {"app": "anything"}),
        ("ihl-namespace", {"app": "pipeline-step"}),
        ("istio-system", {"app": "not-the-gateway"}),
        ("monitoring", {"app": "prometheus"}),
    ):
        assert not admits(POLICY, PREDICTOR, source, port), source
        assert not admits(POLICY, PREDICTOR, source, 8012), source
    assert admits(POLICY, PREDICTOR, ("monitoring", {"app": "prometheus"}), 8082)
    assert not admits(POLICY, PREDICTOR, ("default", {"app": "anything"}), 8082)


def test_no_rule_admits_every_pod():
    for rule in POLICY["spec"]["ingress"]:
        assert rule.get("from"), rule
        for peer in rule["from"]:
            assert "namespaceSelector" in peer and peer["namespaceSelector"], peer
            assert "ipBlock" not in peer


def test_the_kserve_config_no_longer_claims_the_pod_is_unreachable():
    text = (REPO / "serving" / "kserve.config.properties").read_text()
    assert "nothing outside the pod can reach" not in text
    assert "networkpolicy.yaml" in text
