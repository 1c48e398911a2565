"""deploy/kubernetes: both overlays render with ``kubectl kustomize``, every object validates against a
named Kubernetes version (kubernetes-validate's bundled schemas, offline), and the manifests keep
Flywheel's own rules: resources, probes, non-root and pinned images for every container; secrets only
by reference; GPUs only in the gpu overlay; each server kind beside its agent on one shared folder;
generated files equal to what their one source gives today."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import typing
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from flywheel.settings import FlywheelSettings
from monitoring.grafana.build import GRAFANA_DIR
from monitoring.prometheus.config import monitored_jobs, render_rules
from serving.backends.registry import backend_kinds, get_plugin

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
#: The Kubernetes version every object is validated against (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.33"
OVERLAYS = ("cpu", "gpu")
GPU_RESOURCE = "nvidia.com/gpu"
PLATFORM_IMAGE = "ghcr.io/flywheel-ml/flywheel"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
#: Prometheus Operator kinds: kubernetes-validate has no schema for them, so the models below check them.
OPERATOR_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
REGENERATE = "run `.venv/bin/python deploy/kubernetes/generate.py`"


def _load_generator() -> ModuleType:
    """deploy/ is not a package: load the generator from its file, as its usage line runs it."""
    spec = importlib.util.spec_from_file_location(
        "deploy_kubernetes_generate", KUBERNETES_DIR / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


@cache
def _rendered_text(overlay: str) -> str:
    assert Path(KUBECTL).exists(), "kubectl (with kustomize) is required: deploy/local/setup.sh checks for it"
    result = subprocess.run(
        [KUBECTL, "kustomize", str(KUBERNETES_DIR / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}"
    return result.stdout


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects, a fresh copy each call (tests may change them)."""
    return [document for document in yaml.safe_load_all(_rendered_text(overlay)) if document]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [item for item in of_kind(objects, kind) if item["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (deployment["metadata"]["name"], item)
        for deployment in of_kind(objects, "Deployment")
        for item in deployment["spec"]["template"]["spec"]["containers"]
    ]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def settings_config_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config_map,) = [
        c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("flywheel-settings")
    ]
    return dict(config_map["data"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# Our rules for every container and pod ---------------------------------------------------------------
def image_is_pinned(image: str) -> bool:
    """A digest, or a tag that is not ``latest``; a bare name would float with the registry."""
    if "@sha256:" in image:
        return True
    repository, _, tag = image.rpartition(":")
    return bool(repository) and bool(tag) and "/" not in tag and tag != "latest"


def container_problems(item: dict[str, Any]) -> list[str]:
    name = item.get("name", "?")
    problems = []
    resources = item.get("resources", {})
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(bound, {}):
                problems.append(f"{name}: no {bound}.{resource}")
    for probe in ("readinessProbe", "livenessProbe"):
        if probe not in item:
            problems.append(f"{name}: no {probe}")
    security = item.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problems.append(f"{name}: runAsNonRoot is not true")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation is not false")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{name}: readOnlyRootFilesystem is not true")
    if "ALL" not in security.get("capabilities", {}).get("drop", []):
        problems.append(f"{name}: capabilities do not drop ALL")
    if not image_is_pinned(item.get("image", "")):
        problems.append(f"{name}: image {item.get('image')!r} is not pinned")
    return problems


def pod_problems(name: str, pod: dict[str, Any]) -> list[str]:
    security = pod.get("securityContext", {})
    problems = []
    if security.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod runAsNonRoot is not true")
    if not isinstance(security.get("runAsUser"), int) or security["runAsUser"] <= 0:
        problems.append(f"{name}: pod has no non-root runAsUser")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(
            f"{name}: pod seccompProfile is not RuntimeDefault (the namespace enforces restricted)"
        )
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service account token it never uses")
    for init in pod.get("initContainers", []):
        problems.extend(container_problems(init))
    return problems


# Prometheus Operator resources: the fields these manifests use, as the operator's CRDs define them ------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LabelSelector(_Strict):
    matchLabels: dict[str, str] = Field(min_length=1)


class Relabeling(_Strict):
    targetLabel: str
    replacement: str


class MonitorEndpoint(_Strict):
    port: str
    path: str = Field(pattern=r"^/")
    interval: str = Field(pattern=r"^[0-9]+(ms|s|m|h)$")
    relabelings: list[Relabeling] = []


class ServiceMonitorSpec(_Strict):
    selector: LabelSelector
    endpoints: list[MonitorEndpoint] = Field(min_length=1)


class Rule(_Strict):
    record: str | None = None
    alert: str | None = None
    expr: str
    for_: str | None = Field(default=None, alias="for", pattern=r"^[0-9]+(ms|s|m|h)$")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _record_or_alert(self) -> Rule:
        if (self.record is None) == (self.alert is None):
            raise ValueError("a rule is either a record or an alert")
        return self


class RuleGroup(_Strict):
    name: str
    rules: list[Rule] = Field(min_length=1)


class PrometheusRuleSpec(_Strict):
    groups: list[RuleGroup] = Field(min_length=1)


class Metadata(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str
    labels: dict[str, str] = {}


# Rendering and validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_named_kubernetes_version(overlay: str) -> None:
    objects = render(overlay)
    errors = []
    for item in objects:
        if (item["apiVersion"], item["kind"]) in OPERATOR_KINDS:
            continue  # no bundled schema: test_operator_resources_have_what_the_operator_requires
        where = f"{item['kind']}/{item['metadata']['name']}"
        try:
            validated = kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{where}: {error.message}")
        else:
            assert validated == KUBERNETES_VERSION
    assert not errors, "\n".join(errors)
    kinds = {item["kind"] for item in objects}
    wanted = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"}
    assert wanted | {"NetworkPolicy", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert not of_kind(objects, "Secret"), "secrets are created by the operator (README), never rendered"


def test_the_validator_refuses_objects_kubernetes_would_refuse() -> None:
    gateway = named(render("cpu"), "Deployment", "flywheel-gateway")
    misspelt = copy.deepcopy(gateway)
    misspelt["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    wrong_type = copy.deepcopy(gateway)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_resources_have_what_the_operator_requires(overlay: str) -> None:
    objects = render(overlay)
    services = of_kind(objects, "Service")
    for monitor in of_kind(objects, "ServiceMonitor"):
        Metadata.model_validate(monitor["metadata"])
        spec = ServiceMonitorSpec.model_validate(monitor["spec"])
        (service,) = [
            s for s in services if selects(spec.selector.matchLabels, s["metadata"].get("labels", {}))
        ]
        port_names = {port["name"] for port in service["spec"]["ports"]}
        assert {endpoint.port for endpoint in spec.endpoints} <= port_names, monitor["metadata"]["name"]
    (rule,) = of_kind(objects, "PrometheusRule")
    Metadata.model_validate(rule["metadata"])
    PrometheusRuleSpec.model_validate(rule["spec"])
    with pytest.raises(ValueError, match="record or an alert"):
        Rule.model_validate({"expr": "up", "record": "a", "alert": "B"})


def test_prometheus_rule_is_the_rules_file_and_passes_promtool(tmp_path: Path) -> None:
    (rule,) = of_kind(render("cpu"), "PrometheusRule")
    default_for = FlywheelSettings.model_fields["drift_alert_for"].default
    assert rule["spec"]["groups"] == yaml.safe_load(render_rules(default_for))["groups"]
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_committed_generated_files_match_the_generator() -> None:
    files = generate.generated_files()
    for relative, text in files.items():
        committed = KUBERNETES_DIR / relative
        assert committed.exists(), f"{relative} missing: {REGENERATE}"
        assert committed.read_text() == text, f"{relative} is stale: {REGENERATE}"
    on_disk = {
        path.relative_to(KUBERNETES_DIR)
        for folder in (generate.GENERATED_DIR, KUBERNETES_DIR / "katib")
        for path in folder.rglob("*")
        if path.is_file()
    }
    assert on_disk == set(files), f"files the generator no longer writes: {on_disk - set(files)}"
    assert generate.generated_files() == files, "the generator's output is not deterministic"


def test_dashboard_config_map_has_the_sidecar_label_and_the_committed_dashboard() -> None:
    config_maps = of_kind(render("cpu"), "ConfigMap")
    (dashboard,) = [c for c in config_maps if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert dashboard["data"] == {"flywheel.json": (GRAFANA_DIR / "dashboards/flywheel.json").read_text()}
    (datasource,) = [
        c for c in config_maps if c["metadata"].get("labels", {}).get("grafana_datasource") == "1"
    ]
    provisioned = yaml.safe_load(datasource["data"]["datasource.yaml"])["datasources"][0]
    panel_uids = {
        panel["datasource"]["uid"] for panel in yaml.safe_load(dashboard["data"]["flywheel.json"])["panels"]
    }
    assert panel_uids == {provisioned["uid"]}
    assert provisioned["url"] == settings_config_map(config_maps)["FLYWHEEL_ROLLOUT_PROMETHEUS_URL"]


# Our own rules --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_resources_probes_a_non_root_context_and_a_pinned_image(overlay: str) -> None:
    objects = render(overlay)
    problems = [f"{owner}/{p}" for owner, item in containers(objects) for p in container_problems(item)]
    for deployment in of_kind(objects, "Deployment"):
        problems += pod_problems(deployment["metadata"]["name"], deployment["spec"]["template"]["spec"])
    assert not problems, "\n".join(problems)
    assert len(containers(objects)) >= 2 + 2 * len(backend_kinds())


def test_the_rule_checks_catch_what_they_look_for() -> None:
    assert container_problems({"name": "bare", "image": "nginx"}) == [
        "bare: no requests.cpu",
        "bare: no requests.memory",
        "bare: no limits.cpu",
        "bare: no limits.memory",
        "bare: no readinessProbe",
        "bare: no livenessProbe",
        "bare: runAsNonRoot is not true",
        "bare: allowPrivilegeEscalation is not false",
        "bare: readOnlyRootFilesystem is not true",
        "bare: capabilities do not drop ALL",
        "bare: image 'nginx' is not pinned",
    ]
    assert not image_is_pinned("nginx:latest") and not image_is_pinned("localhost:5000/nginx")
    assert image_is_pinned("localhost:5000/nginx:1.27") and image_is_pinned("nginx@sha256:" + "0" * 64)
    assert len(pod_problems("bare", {})) == 4


def test_gpus_are_asked_for_in_the_gpu_overlay_and_nowhere_else() -> None:
    assert (
        GPU_RESOURCE not in _rendered_text("cpu") and "gpu" not in settings_config_map(render("cpu")).values()
    )
    objects = render("gpu")
    assert settings_config_map(objects)["FLYWHEEL_SERVING_DEVICE"] == "gpu"
    servers = set()
    for deployment in of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        is_server = deployment["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"
        for item in pod["containers"]:
            gpus = item["resources"]["limits"].get(GPU_RESOURCE)
            if is_server and item["name"] == "server":
                assert gpus == 1, deployment["metadata"]["name"]
                servers.add(deployment["metadata"]["name"])
            else:
                assert gpus is None, f"{deployment['metadata']['name']}/{item['name']} asks for a GPU"
        if is_server:
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        else:
            assert "nodeSelector" not in pod and "tolerations" not in pod
    assert servers == {f"flywheel-{kind}" for kind in backend_kinds()}
    images = {item["image"] for _, item in containers(objects)}
    assert {"pytorch/torchserve:0.12.0-gpu", "tensorflow/serving:2.18.0-gpu"} <= images
    assert not any("gpu" in item["image"] for _, item in containers(render("cpu")))
    torchserve = container(named(objects, "Deployment", "flywheel-torchserve"), "server")
    assert {"name": "TS_NUMBER_OF_GPU", "value": "1"} in torchserve["env"]


def _probe_target(probe: dict[str, Any], pod_ports: dict[str, int]) -> tuple[str, int, str | None]:
    """(kind of check, port number, HTTP path) of a probe, resolving named ports."""
    for kind in ("httpGet", "tcpSocket"):
        if kind in probe:
            port = probe[kind]["port"]
            return kind, pod_ports[port] if isinstance(port, str) else port, probe[kind].get("path")
    raise AssertionError(f"unexpected probe {probe}")


@pytest.mark.parametrize("kind", backend_kinds())
def test_every_server_kind_runs_beside_its_agent_on_one_shared_folder(kind: str) -> None:
    plugin = get_plugin(kind)
    settings = generate.pod_settings()
    objects = render("cpu")
    deployment = named(objects, "Deployment", f"flywheel-{kind}")
    # An agent's report is agents/<kind>/<replica name>.json: two pods of one kind would share it.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    server, agent = container(deployment, "server"), container(deployment, "agent")
    assert agent["image"].startswith(f"{PLATFORM_IMAGE}:")
    expected = f"python -m serving.agent --kind {kind} --replica 0 --port {settings.agent_port}"
    assert agent["command"] == expected.split()

    repository = str(generate.server_repository(kind))
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    server_mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    agent_mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert server_mounts[repository]["name"] == agent_mounts[repository]["name"], "not one shared folder"
    assert "emptyDir" in volumes[agent_mounts[repository]["name"]]
    assert server_mounts[repository].get("readOnly") is True, "only the agent writes a server's folder"
    assert not agent_mounts[repository].get("readOnly")
    assert agent_mounts[str(settings.var_path)]["name"] == "var"

    server_ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert {port.default for port in plugin.ports} <= set(server_ports.values())
    by_name = {port.name: port.default for port in plugin.ports}
    health_port, health_path, health_status = plugin.health
    readiness = _probe_target(server["readinessProbe"], server_ports)
    if health_status == 200:  # Kubernetes counts 200-399 as healthy: probe the plug-in's own health path
        assert readiness == ("httpGet", by_name[health_port], health_path)
    else:  # a health check that expects an error status cannot be an httpGet probe
        assert readiness == ("tcpSocket", by_name[health_port], None)
    assert _probe_target(server["livenessProbe"], server_ports)[1] in server_ports.values()
    agent_ports = {port["name"]: port["containerPort"] for port in agent["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert _probe_target(agent[probe], agent_ports) == ("httpGet", settings.agent_port, "/healthz")

    metrics_port, metrics_path = plugin.metrics
    monitor = named(objects, "ServiceMonitor", f"flywheel-{kind}")
    (endpoint,) = [e for e in monitor["spec"]["endpoints"] if e["relabelings"][0]["replacement"] == kind]
    assert endpoint["path"] == metrics_path
    service = named(objects, "Service", f"flywheel-{kind}")
    (service_port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert server_ports[service_port["targetPort"]] == by_name[metrics_port]


def test_service_monitors_give_every_job_the_rules_watch() -> None:
    jobs = [
        relabeling["replacement"]
        for monitor in of_kind(render("cpu"), "ServiceMonitor")
        for endpoint in monitor["spec"]["endpoints"]
        for relabeling in endpoint["relabelings"]
        if relabeling["targetLabel"] == "job"
    ]
    assert set(jobs) == set(monitored_jobs())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_policies_and_the_autoscaler_point_at_real_pods_and_ports(overlay: str) -> None:
    objects = render(overlay)
    pods = {
        d["metadata"]["name"]: (
            d["spec"]["template"]["metadata"]["labels"],
            {
                p["name"]: p["containerPort"]
                for c in d["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            },
        )
        for d in of_kind(objects, "Deployment")
    }
    for service in of_kind(objects, "Service"):
        (owner,) = [
            name for name, (labels, _) in pods.items() if selects(service["spec"]["selector"], labels)
        ]
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(pods[owner][1]), owner
    for policy in of_kind(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        matched = [name for name, (labels, _) in pods.items() if selects(selector, labels)]
        assert matched, policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                assert all(port["port"] in pods[name][1] for name in matched), (
                    policy["metadata"]["name"],
                    port,
                )
    gateway_labels = pods["flywheel-gateway"][0]
    (autoscaler,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "flywheel-gateway",
    }
    assert 2 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]
    (budget,) = of_kind(objects, "PodDisruptionBudget")
    assert selects(budget["spec"]["selector"]["matchLabels"], gateway_labels)
    assert budget["spec"]["minAvailable"] < autoscaler["spec"]["minReplicas"], "a drain could never proceed"
    gateway_service = named(objects, "Service", "flywheel-gateway")
    assert {9080, 9081} <= {port["port"] for port in gateway_service["spec"]["ports"]}


# Settings and secrets -------------------------------------------------------------------------------------
def _secret_settings() -> set[str]:
    """FLYWHEEL_* variables of every SecretStr setting: these may only come from secretKeyRef."""
    secret = set()
    for name, field in FlywheelSettings.model_fields.items():
        if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation):
            secret.add(f"FLYWHEEL_{name.upper()}")
    return secret


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_by_reference(overlay: str) -> None:
    objects = render(overlay)
    secret = _secret_settings()
    assert {"FLYWHEEL_ADMIN_TOKEN", "FLYWHEEL_S3_SECRET_ACCESS_KEY"} <= secret
    for config_map in of_kind(objects, "ConfigMap"):
        assert not secret & set(config_map.get("data", {})), config_map["metadata"]["name"]
    references = set()
    for owner, item in containers(objects):
        for variable in item.get("env", []):
            if variable["name"] in secret:
                assert "value" not in variable, f"{owner}/{item['name']} has {variable['name']} inline"
                reference = variable["valueFrom"]["secretKeyRef"]
                references.add((reference["name"], reference["key"]))
    gateway = container(named(objects, "Deployment", "flywheel-gateway"), "gateway")
    assert "FLYWHEEL_ADMIN_TOKEN" in {
        v["name"] for v in gateway["env"] if "secretKeyRef" in v.get("valueFrom", {})
    }
    # Every secret the pods read is one the README tells the operator how to create.
    readme = (KUBERNETES_DIR / "README.md").read_text()
    documented = {
        (match["name"], key)
        for match in re.finditer(r"create secret generic (?P<name>[-a-z0-9]+)(?P<options>[^\n]*)", readme)
        for key in re.findall(r"--from-(?:literal|file)=([-a-z0-9]+)=", match["options"])
    }
    assert references and references <= documented, references - documented


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_get_real_settings_and_flywheel_processes_bind_their_pod_ip(overlay: str) -> None:
    objects = render(overlay)
    fields = {f"FLYWHEEL_{name.upper()}" for name in FlywheelSettings.model_fields}
    config = settings_config_map(objects)
    assert set(config) <= fields, set(config) - fields
    FlywheelSettings.model_validate({name.removeprefix("FLYWHEEL_").lower(): v for name, v in config.items()})
    config_maps = {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}
    for owner, item in containers(objects):
        variables = {variable["name"]: variable for variable in item.get("env", [])}
        assert {name for name in variables if name.startswith("FLYWHEEL_")} <= fields
        assert {ref["configMapRef"]["name"] for ref in item.get("envFrom", [])} <= config_maps
        serves = item["image"].startswith(f"{PLATFORM_IMAGE}:") and "ports" in item
        if serves:  # it binds FLYWHEEL_HOST, and agents report it to gateways in other pods
            assert variables["FLYWHEEL_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, (
                owner
            )
    for deployment in of_kind(objects, "Deployment"):
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps


def test_rollout_controller_probes_the_heartbeat_file_it_touches(tmp_path: Path) -> None:
    heartbeat = str(generate.pod_settings().run_dir / "rollout-controller.heartbeat")
    controller = container(named(render("cpu"), "Deployment", "flywheel-rollout-controller"), "controller")
    commands = [controller[probe]["exec"]["command"] for probe in ("readinessProbe", "livenessProbe")]
    assert commands[0] == commands[1] and commands[0][:2] == ["python", "-c"] and heartbeat in commands[0][2]

    def probe(path: Path) -> int:
        check = commands[0][2].replace(heartbeat, str(path))
        return subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=60).returncode

    fresh, stale = tmp_path / "fresh", tmp_path / "stale"
    fresh.touch()
    stale.touch()
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert probe(fresh) == 0
    assert probe(stale) != 0
    assert probe(tmp_path / "missing") != 0


def test_servers_read_their_generated_config_where_the_generator_says() -> None:
    objects = render("cpu")
    for kind, directory, config_map in (
        ("torchserve", generate.TORCHSERVE_CONFIG_DIR, "flywheel-torchserve-config"),
        ("tfserving", generate.TFSERVING_CONFIG_DIR, "flywheel-tfserving-config"),
    ):
        deployment = named(objects, "Deployment", f"flywheel-{kind}")
        server = container(deployment, "server")
        (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == str(directory)]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mount["name"]]["configMap"]["name"].startswith(config_map)
        (data,) = [
            c["data"] for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith(config_map)
        ]
        # Flags name files as "--flag=PATH" (TF Serving) or as the next argument (TorchServe).
        paths = [Path(argument.rpartition("=")[2]) for argument in server["args"]]
        read = {path.name for path in paths if path.parent == directory}
        assert read and read <= set(data), (kind, read)


# Images ---------------------------------------------------------------------------------------------------
def test_every_flywheel_image_the_manifests_name_has_a_dockerfile_from_pinned_bases() -> None:
    docker_dir = ROOT / "deploy" / "docker"
    dockerfiles = {path: path.read_text() for path in docker_dir.glob("*Dockerfile")}
    images = {item["image"] for overlay in OVERLAYS for _, item in containers(render(overlay))}
    own = {image for image in images if image.startswith("ghcr.io/flywheel-ml/")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"{PLATFORM_IMAGE}:{project['project']['version']}" in own
    for image in own:
        assert any(f"-t {image} " in text for text in dockerfiles.values()), f"no Dockerfile builds {image}"
    for path, text in dockerfiles.items():
        bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
        assert bases and all(image_is_pinned(base) for base in bases), path.name
    # The platform image holds every package the project installs.
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfiles[docker_dir / "Dockerfile"], flags=re.MULTILINE))
    packages = {
        pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, packages - copied


# Katib: the tasks' search spaces as Experiments ------------------------------------------------------
def katib_experiments() -> list[dict[str, Any]]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(KUBERNETES_DIR / "katib")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def test_each_tasks_katib_experiment_is_its_search_space_budget_and_metric() -> None:
    from tasks.registry import get_task
    from training.tune import parse_trial_arguments

    experiments = {item["metadata"]["name"]: item for item in katib_experiments()}
    assert set(experiments) == {f"flywheel-tune-{name.replace('_', '-')}" for name in generate.KATIB_MODELS}
    for task_name in generate.KATIB_MODELS:
        task = get_task(task_name)
        spec = experiments[f"flywheel-tune-{task_name.replace('_', '-')}"]["spec"]
        assert spec["objective"] == {
            "type": "maximize" if task.metric.higher_is_better else "minimize",
            "objectiveMetricName": task.metric.primary,
        }
        assert (
            spec["algorithm"]["algorithmName"] == "tpe" and spec["maxTrialCount"] == task.search_budget.trials
        )
        seed = FlywheelSettings.model_fields["hpo_seed"].default
        assert spec["algorithm"]["algorithmSettings"] == [{"name": "random_state", "value": str(seed)}]
        space = task.search_space()
        assert [parameter["name"] for parameter in spec["parameters"]] == list(space)
        template = spec["trialTemplate"]
        references = {parameter["reference"] for parameter in template["trialParameters"]}
        assert references == set(space), "every trial parameter names a searched parameter"
        (trial,) = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
        assert trial["command"] == ["flywheel"] and trial["args"][:2] == ["pipeline", "tune"]
        # What Katib substitutes for each categorical value is what `--trial` reads back.
        for parameter in spec["parameters"]:
            dimension = space[parameter["name"]]
            if parameter["parameterType"] == "categorical":
                read = [
                    parse_trial_arguments([f"{parameter['name']}={value}"])[parameter["name"]]
                    for value in parameter["feasibleSpace"]["list"]
                ]
                assert read == [list(c) if isinstance(c, tuple) else c for c in dimension.choices]
            else:
                assert float(parameter["feasibleSpace"]["min"]) == dimension.low
                assert float(parameter["feasibleSpace"]["max"]) == dimension.high
                assert (parameter["feasibleSpace"].get("distribution") == "logUniform") == (
                    dimension.kind == "log_float"
                )
            assert f"{parameter['name']}=${{trialParameters.{parameter['name']}}}" in trial["args"]
        # Katib's StdOut collector runs the trial as `sh -c` with command and arguments joined by
        # spaces, unquoted: each substituted argument must stay one word and glob nothing.
        for parameter in spec["parameters"]:
            for value in parameter["feasibleSpace"].get("list", []):
                line = [*trial["command"], *trial["args"]]
                substituted = [
                    word.replace(f"${{trialParameters.{parameter['name']}}}", value) for word in line
                ]
                assert shlex.split(" ".join(substituted)) == substituted, value
                assert not set(value) & set("[]*?{}$;&|<> '\""), value


def test_katib_trial_jobs_validate_and_run_like_the_dags_training_pods() -> None:
    runners = (ROOT / "dags" / "flywheel_runners.py").read_text()
    for experiment in katib_experiments():
        job = experiment["spec"]["trialTemplate"]["trialSpec"]
        job = {**job, "metadata": {"name": experiment["metadata"]["name"]}}
        assert kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
        pod = job["spec"]["template"]["spec"]
        (trial,) = pod["containers"]
        assert f'"{trial["image"]}"' in runners, "the DAG's training image, pinned"
        assert trial["resources"]["limits"]["nvidia.com/gpu"] == "1" and trial["resources"]["requests"]
        assert pod["securityContext"]["runAsNonRoot"] and trial["securityContext"]["readOnlyRootFilesystem"]
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        secrets = [variable for variable in trial["env"] if variable["name"].startswith("FLYWHEEL_S3_")]
        assert secrets and all(
            "value" not in variable and "secretKeyRef" in variable["valueFrom"] for variable in secrets
        )
