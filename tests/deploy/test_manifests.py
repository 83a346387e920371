"""`edgecli export`: each manifest validates against its engine's published schema, and carries the
project's limits and secret references (never secret values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_helpers import SECRET_VALUE, deploy_project, run

from edgecli.deploy import yaml as edge_yaml

pytestmark = pytest.mark.timeout(60)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
K8S_VERSION = "1.30"


def export(tmp_path: Path, target: str) -> tuple[str, list[dict[str, Any]]]:
    project = deploy_project(tmp_path / "project")
    result = run("export", target, "--image", "registry.example/shop:1.0", cwd=project)
    assert result.returncode == 0, result.stderr
    assert SECRET_VALUE not in result.stdout + result.stderr
    return result.stdout, [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def strict_schema(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema, as a cluster applies it with strict field validation:
    an object's unknown fields are errors unless it preserves them."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def knative_schema() -> dict[str, Any]:
    crd = yaml.safe_load((FIXTURES / "knative-service-crd.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict_schema(version["schema"]["openAPIV3Schema"])


def test_knative_service_validates_against_the_crd_and_carries_the_limits(tmp_path: Path) -> None:
    _, docs = export(tmp_path, "knative")
    (service,) = docs
    jsonschema.validate(service, knative_schema())
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    assert service["metadata"]["name"] == "shop-functions"
    spec = service["spec"]["template"]["spec"]
    assert spec["containerConcurrency"] == 2 + 3  # max_parallelism of mail + orders
    assert spec["timeoutSeconds"] == 120  # the wall-clock limit; also the pod's grace (≥ 15 s drain)
    (container,) = spec["containers"]
    assert container["image"] == "registry.example/shop:1.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/_internal/health"
    # Alive is the port answering: a function in boot error keeps the pod unready, never restarting.
    assert (
        container["livenessProbe"]["tcpSocket"] == {"port": 8080}
        and "httpGet" not in container["livenessProbe"]
    )
    assert container["env"] == [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": "shop-functions-secrets", "key": name}}}
        for name in ("STRIPE_KEY", "SHOP_JWT_SECRET")
    ]


def test_the_knative_check_is_strict_enough_to_catch_a_field_knative_refuses() -> None:
    service = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [{"image": "x"}], "terminationGracePeriodSeconds": 5}}},
    }
    schema = knative_schema()
    # RevisionSpec keeps unknown fields for Knative's webhook to judge, so the schema lets this through...
    jsonschema.validate(service, schema)
    # ...but a wrong type in a field it defines is refused.
    service["spec"]["template"]["spec"]["containerConcurrency"] = "ten"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, schema)


def test_kubernetes_deployment_and_service_validate_against_the_kubernetes_schemas(tmp_path: Path) -> None:
    _, docs = export(tmp_path, "kubernetes")
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deployment, service = docs
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 15  # graceful_exit_timeout_sec
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/_internal/health", "port": 8080}
    assert {e["name"] for e in container["env"]} == {"STRIPE_KEY", "SHOP_JWT_SECRET"}
    assert all("value" not in e for e in container["env"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_kubernetes_check_catches_a_misspelt_field() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_compose_service_validates_against_the_compose_spec_and_names_the_gateway_route(
    tmp_path: Path,
) -> None:
    text, docs = export(tmp_path, "compose")
    (compose,) = docs
    schema = json.loads((FIXTURES / "compose-spec.json").read_text())
    jsonschema.validate(compose, schema, cls=jsonschema.Draft202012Validator)
    service = compose["services"]["functions"]
    assert service["environment"]["STRIPE_KEY"] == "${STRIPE_KEY}"
    assert service["stop_signal"] == "SIGTERM"
    assert service["stop_grace_period"] == "20s"
    # The gateway route, as comments after the document: the Kong service entry, valid YAML itself.
    route_lines = [line[4:] for line in text.splitlines() if line.startswith("#   ")]
    (route,) = yaml.safe_load("\n".join(route_lines))
    assert route["url"] == "http://functions:8080/functions/v1/"
    assert route["routes"][0]["paths"] == ["/functions/v1/"] and route["routes"][0]["strip_path"] is True


def test_the_compose_check_catches_a_misspelt_field() -> None:
    schema = json.loads((FIXTURES / "compose-spec.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"services": {"x": {"imag": "y"}}}, schema, cls=jsonschema.Draft202012Validator)


def test_an_unknown_target_is_bad_usage(tmp_path: Path) -> None:
    result = run("export", "nomad", cwd=deploy_project(tmp_path / "project"))
    assert result.returncode == 2
    assert "unknown target; allowed: knative, kubernetes, compose" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [{"x": "y", "z": [1, 2.5, {"q": "true"}]}, "s: t", [3, [4]]]},
        {"empty": {}, "none": [], "null": None, "url": "http://x:1/", "octal": "0123", "dash": "-x"},
        {"quote": 'say "hi"', "unicode": "é ✓", "newline": "a\nb", "yes": "yes", "bool": False},
    ],
)
def test_the_yaml_printer_round_trips(value: dict[str, Any]) -> None:
    assert yaml.safe_load(edge_yaml.dump(value)) == value
