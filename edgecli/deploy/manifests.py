"""`edgecli export`: the manifests of an engine that runs the image `edgecli build` makes.

- knative: a Knative Serving `Service` (Cloud Run reads the same format);
- kubernetes: a plain `Deployment` + `Service`;
- compose: a service for a self-hosted Supabase's docker-compose file, in place of its `functions`
  service, and the gateway (Kong) route that sends `/functions/v1/*` to it.

Secrets appear as references only: a `secretKeyRef` into one Kubernetes Secret, or `${NAME}` for compose
to fill in from its environment.
"""

from __future__ import annotations

from typing import Any

from edgecli.deploy.spec import DeploySpec

TARGETS = ("knative", "kubernetes", "compose")
KNATIVE_DEFAULT_TIMEOUT_S = 300
COMPOSE_SERVICE = "functions"  # the name a self-hosted Supabase's gateway already routes to
# The self-hosted stack's own variables (its .env), as its edge runtime service gets them.
COMPOSE_SUPABASE_ENV = {
    "SUPABASE_URL": "http://kong:8000",
    "SUPABASE_ANON_KEY": "${ANON_KEY}",
    "SUPABASE_SERVICE_ROLE_KEY": "${SERVICE_ROLE_KEY}",
    "SUPABASE_DB_URL": "postgresql://postgres:${POSTGRES_PASSWORD}@${POSTGRES_HOST}:${POSTGRES_PORT}/${POSTGRES_DB}",
}


def secret_name(spec: DeploySpec) -> str:
    return f"{spec.name}-secrets"


def _env(spec: DeploySpec) -> list[dict[str, Any]]:
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name(spec), "key": name}}}
        for name in spec.secret_env
    ]


def _probe(spec: DeploySpec, *, port: bool, period: int) -> dict[str, Any]:
    get: dict[str, Any] = {"path": spec.health_path}
    if port:
        get["port"] = spec.port
    return {"httpGet": get, "periodSeconds": period, "failureThreshold": 3}


def _container(spec: DeploySpec, image: str, *, knative: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "functions",
        "image": image,
        # Knative names the one port it routes to (http1) and gives its number to the container as $PORT.
        "ports": [{"name": "http1", "containerPort": spec.port}]
        if knative
        else [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "readinessProbe": _probe(spec, port=not knative, period=2),
        # Alive is the server answering at all, not every function booted: one function in boot error
        # keeps the pod out of the Service (readiness), it must not restart it forever.
        "livenessProbe": {
            "tcpSocket": {"port": spec.port},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "initialDelaySeconds": 30,
        },
        # Knative's Revision allows only a few securityContext fields; runAsNonRoot is one of them.
        "securityContext": {"runAsNonRoot": True}
        if knative
        else {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    env = _env(spec)
    if env:
        container["env"] = env
    return container


def knative(spec: DeploySpec, image: str) -> list[dict[str, Any]]:
    template_spec: dict[str, Any] = {
        "containerConcurrency": spec.container_concurrency,
        "containers": [_container(spec, image, knative=True)],
    }
    # Knative gives a pod its revision's timeoutSeconds as its termination grace period, so the timeout
    # is never shorter than the drain (KNATIVE_DEFAULT_TIMEOUT_S applies when it is not set).
    timeout = spec.timeout_seconds
    if timeout is not None or spec.grace_seconds > KNATIVE_DEFAULT_TIMEOUT_S:
        template_spec["timeoutSeconds"] = max(timeout or 0, spec.grace_seconds)
    return [
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": spec.name, "labels": _labels(spec)},
            "spec": {"template": {"metadata": {"labels": _labels(spec)}, "spec": template_spec}},
        }
    ]


def kubernetes(spec: DeploySpec, image: str) -> list[dict[str, Any]]:
    selector = {"app.kubernetes.io/name": spec.name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": _labels(spec)},
                "spec": {
                    "terminationGracePeriodSeconds": spec.grace_seconds,
                    "containers": [_container(spec, image, knative=False)],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def compose(spec: DeploySpec, image: str) -> list[dict[str, Any]]:
    environment = {"PORT": str(spec.port), **COMPOSE_SUPABASE_ENV}
    environment.update({name: f"${{{name}}}" for name in spec.secret_env})
    health = f"http://127.0.0.1:{spec.port}{spec.health_path}"
    service = {
        "image": image,
        "restart": "unless-stopped",
        "environment": environment,
        "expose": [str(spec.port)],
        "healthcheck": {
            "test": [
                "CMD",
                "python",
                "-c",
                f"import urllib.request; urllib.request.urlopen({health!r}, timeout=2)",
            ],
            "interval": "10s",
            "timeout": "3s",
            "retries": 3,
            "start_period": "30s",
        },
        "stop_signal": "SIGTERM",
        "stop_grace_period": f"{spec.grace_seconds}s",
    }
    return [{"services": {COMPOSE_SERVICE: service}}]


def kong_route(spec: DeploySpec) -> dict[str, Any]:
    """The self-hosted gateway's service for /functions/v1/*. Kong strips the route's path and appends the
    rest to the service URL's path, so the URL keeps /functions/v1/: edgecli serves functions there."""
    return {
        "name": "functions-v1",
        "url": f"http://{COMPOSE_SERVICE}:{spec.port}/functions/v1/",
        "routes": [{"name": "functions-v1-all", "strip_path": True, "paths": ["/functions/v1/"]}],
        "plugins": [{"name": "cors"}],
    }


def _labels(spec: DeploySpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/managed-by": "edgecli"}
