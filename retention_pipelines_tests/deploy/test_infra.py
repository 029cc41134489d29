"""The Kubernetes deployment as written in ``infra/``.

kustomize renders both overlays and the tuning Job; every object they hold is valid for the
Kubernetes version named below, strictly (an unknown field fails, as the API server would refuse
it); the pods keep the security settings, probes and limits the platform promises; the network
policies deny by default and open Postgres to the platform's pods only; every command a container
runs parses with the command line it names; the values for Dagster's Helm chart use only keys the
chart documents and mirror the instance config of a single machine; checkov fails nothing in the
rendered manifests and the Dockerfile, and every check it skips says why.

Nothing here needs a cluster: ``kubectl kustomize`` renders offline, kubernetes-validate ships the
API's schemas, and checkov runs in an isolated environment of its own (``uv tool run``), its
version pinned below.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
HELM_VALUES = INFRA / "helm" / "dagster-values.yaml"
CHART_DATA = Path(__file__).with_name("dagster_chart_values.json")
DOCKERFILE = REPO / "docker" / "Dockerfile"

# The API version the manifests are checked against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.32"
# checkov is not in the lock (its pins clash with the project's): uv runs it in its own
# environment, this exact version.
CHECKOV = "checkov==3.2.533"

RENDERS = {
    "dev": INFRA / "k8s" / "overlays" / "dev",
    "prod": INFRA / "k8s" / "overlays" / "prod",
    "tune-workers": INFRA / "k8s" / "jobs" / "tune-workers",
}
OVERLAYS = ("dev", "prod")
WORKLOADS = ("Deployment", "Job")

# What each service's probes ask for, and where the server of that path is defined.
PROBE_PATHS = {
    "retention-api": {"/live", "/ready"},
    "retention-dashboard": {"/_stcore/health"},
    "retention-exporter": {"/metrics"},
    "retention-mlflow": {"/health"},
}
# Placeholders the base holds until an overlay replaces them.
PLACEHOLDER_HOST = ".invalid"
PLACEHOLDER_CIDR = "192.0.2.0/24"
POSTGRES_CLIENT = "retention.io/postgres-client"
SECRET_SETTINGS = {"RETENTION_DATABASE_URL", "MLFLOW_BACKEND_STORE_URI"}
# Secrets that are no database's: they name customers (pseudonyms) and sign CRM hand-offs.
PERSONAL_DATA_SECRETS = {"RETENTION_PSEUDONYM_KEY", "RETENTION_CRM_WEBHOOK_SECRET"}
# The pods' one writable folder (HOME, caches, the API's metrics files): an emptyDir.
SCRATCH = "/tmp"  # noqa: S108  # a path inside the pods, not on this machine


# --- rendering ----------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: the infra checks need it (see .ci/run)")
    return path


@functools.cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize`` of one overlay or job folder, as objects."""
    result = subprocess.run(  # kubectl from PATH, a folder of this repo
        [_tool("kubectl"), "kustomize", str(RENDERS[name])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {RENDERS[name]}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(name) if doc["kind"] == kind]


def one(name: str, kind: str, object_name: str) -> dict[str, Any]:
    (found,) = (doc for doc in objects(name, kind) if doc["metadata"]["name"] == object_name)
    return found


def pod_templates(name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in rendered(name):
        if doc["kind"] in WORKLOADS:
            yield doc["metadata"]["name"], doc["spec"]["template"]


def containers(name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload, template in pod_templates(name):
        for container in template["spec"]["containers"]:
            yield workload, container


# --- every object is valid Kubernetes -----------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_every_rendered_object_validates_strictly(name: str) -> None:
    errors = []
    for doc in rendered(name):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_overlay_holds_the_whole_platform(name: str) -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered(name)}
    for service in (
        "retention-api",
        "retention-dashboard",
        "retention-exporter",
        "retention-mlflow",
    ):
        assert ("Deployment", service) in kinds
        assert ("Service", service) in kinds
        assert ("NetworkPolicy", service) in kinds
    for ingress in ("retention-api", "retention-dashboard", "retention-mlflow"):
        assert ("Ingress", ingress) in kinds
    assert ("HorizontalPodAutoscaler", "retention-api") in kinds
    assert {"retention-api", "retention-dashboard", "retention-mlflow"} <= {
        doc["metadata"]["name"] for doc in objects(name, "PodDisruptionBudget")
    }
    assert ("PersistentVolumeClaim", "retention-data") in kinds
    assert ("ConfigMap", "retention-platform") in kinds
    assert not objects(name, "Secret"), "secrets are created in the cluster, never committed"


# --- what every pod promises --------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_pods_run_unprivileged_on_a_read_only_root(name: str) -> None:
    for workload, template in pod_templates(name):
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False, workload
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        assert pod["securityContext"]["runAsUser"] >= 10000, workload
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, workload
            assert security["readOnlyRootFilesystem"] is True, workload
            assert security["capabilities"] == {"drop": ["ALL"]}, workload
            # HOME, caches and the API's metrics folder point at /tmp: it must be writable.
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == SCRATCH]
            assert tmp and tmp[0]["name"] in scratch, f"{workload}: /tmp is not an emptyDir"


@pytest.mark.parametrize("name", RENDERS)
def test_every_container_has_requests_and_limits(name: str) -> None:
    for workload, container in containers(name):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) == {"cpu", "memory"}, f"{workload} {bound}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_service_is_probed_on_its_health_routes(name: str) -> None:
    for workload, container in containers(name):
        assert {"livenessProbe", "readinessProbe"} <= set(container), workload
        probes = ("startupProbe", "livenessProbe", "readinessProbe")
        paths = {container[p]["httpGet"]["path"] for p in probes if p in container}
        assert paths == PROBE_PATHS[workload], workload


@pytest.mark.slow  # imports the three servers
def test_the_probed_routes_exist_in_the_servers() -> None:
    from mlflow.server.security_utils import HEALTH_ENDPOINTS  # noqa: PLC0415
    from streamlit.web.server.starlette.starlette_routes import ROUTE_HEALTH  # noqa: PLC0415

    from retention_pipelines.serving.routes import health  # noqa: PLC0415

    assert {route.path for route in health.router.routes} >= PROBE_PATHS["retention-api"]
    assert {f"/{ROUTE_HEALTH}"} == PROBE_PATHS["retention-dashboard"]
    # MLflow answers its health routes whatever the Host header (probes come by pod IP).
    assert set(HEALTH_ENDPOINTS) >= PROBE_PATHS["retention-mlflow"]


@pytest.mark.parametrize("name", RENDERS)
def test_secrets_come_from_secret_references_only(name: str) -> None:
    for workload, container in containers(name):
        for variable in container.get("env", []):
            secret = variable["name"] in SECRET_SETTINGS | PERSONAL_DATA_SECRETS
            if secret:
                assert "secretKeyRef" in variable["valueFrom"], f"{workload}: {variable['name']}"
            assert "value" not in variable or not secret


# --- network policies ----------------------------------------------------------------------------


def _reads_postgres(container: dict[str, Any]) -> bool:
    return any(variable["name"] in SECRET_SETTINGS for variable in container.get("env", []))


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_is_default_deny_with_postgres_for_platform_pods_only(name: str) -> None:
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in objects(name, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    to_postgres = [
        policy
        for policy in policies.values()
        for rule in policy.get("egress", [])
        if any(port.get("port") == 5432 for port in rule.get("ports", []))
    ]
    assert [p["podSelector"] for p in to_postgres] == [{"matchLabels": {POSTGRES_CLIENT: "true"}}]
    (rule,) = to_postgres[0]["egress"]
    assert rule["to"][0]["ipBlock"]["cidr"] != PLACEHOLDER_CIDR, "the overlay sets the DB CIDR"
    for workload, template in pod_templates(name):
        labelled = template["metadata"]["labels"].get(POSTGRES_CLIENT) == "true"
        assert labelled == any(_reads_postgres(c) for c in template["spec"]["containers"]), workload


@pytest.mark.parametrize("name", OVERLAYS)
def test_only_the_ingress_controller_and_prometheus_reach_the_services(name: str) -> None:
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in objects(name, "NetworkPolicy")}
    expected = {
        "retention-api": {("ingress-nginx", 8000), ("monitoring", 8000)},
        "retention-dashboard": {("ingress-nginx", 8501)},
        "retention-mlflow": {("ingress-nginx", 5000)},
        "retention-exporter": {("monitoring", 9464)},
    }
    for service, allowed in expected.items():
        found = {
            (peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], port["port"])
            for rule in policies[service]["ingress"]
            for peer in rule["from"]
            for port in rule["ports"]
        }
        assert found == allowed, service
    assert PLACEHOLDER_CIDR not in json.dumps(policies), "the overlay sets the API server CIDR"


# --- overlays ------------------------------------------------------------------------------------


def _images(name: str) -> set[str]:
    return {container["image"] for _, container in containers(name)}


def test_one_image_serves_every_workload() -> None:
    prod_images = _images("prod")
    assert len(prod_images) == 1
    (image,) = prod_images
    assert re.fullmatch(r"[\w.-]+(/[\w.-]+)+:[\w.-]+(@sha256:[0-9a-f]{64})?", image), image
    assert _images("tune-workers") == prod_images
    assert len(_images("dev")) == 1


def test_prod_runs_more_and_bigger_pods_than_dev() -> None:
    def hpa(name: str) -> dict[str, Any]:
        return one(name, "HorizontalPodAutoscaler", "retention-api")["spec"]

    def memory_limit(name: str) -> str:
        api = one(name, "Deployment", "retention-api")
        return api["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]

    assert hpa("dev")["minReplicas"] == 1 < hpa("prod")["minReplicas"]
    assert hpa("dev")["maxReplicas"] < hpa("prod")["maxReplicas"]
    for service in ("retention-dashboard", "retention-mlflow"):
        dev = one("dev", "Deployment", service)["spec"]["replicas"]
        assert dev == 1 < one("prod", "Deployment", service)["spec"]["replicas"]
    assert (memory_limit("dev"), memory_limit("prod")) == ("1536Mi", "3Gi")
    assert "replicas" not in one("prod", "Deployment", "retention-api")["spec"], "the HPA owns it"


@pytest.mark.parametrize(
    ("name", "domain"), [("dev", "dev.retention.example.com"), ("prod", "retention.example.com")]
)
def test_every_host_is_the_overlays_own_and_served_over_tls(name: str, domain: str) -> None:
    for ingress in objects(name, "Ingress"):
        spec = ingress["spec"]
        hosts = {rule["host"] for rule in spec["rules"]}
        assert hosts == {host for tls in spec["tls"] for host in tls["hosts"]}
        assert all(host.split(".", 1)[1] == domain for host in hosts), hosts
        assert all(tls["secretName"] for tls in spec["tls"])
    assert PLACEHOLDER_HOST not in json.dumps(rendered(name))


# --- commands ------------------------------------------------------------------------------------


def _expanded(container: dict[str, Any], config_maps: dict[str, dict[str, str]]) -> list[str]:
    """The container's command line with its ``$(VAR)`` references to ConfigMap keys filled in."""
    values = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            values[variable["name"]] = config_maps[ref["name"]][ref["key"]]
    line = [*container["command"], *container.get("args", [])]
    return [re.sub(r"\$\((\w+)\)", lambda m: values.get(m[1], m[0]), part) for part in line]


def _parse(root: Any, line: list[str]) -> Any:
    """Parse ``line`` with the click command ``root`` without running it: an unknown command,
    an unknown option or a value of the wrong type raises the CLI's own usage error."""
    command, context, rest = root, root.context_class(root, info_name=line[0]), line[1:]
    while hasattr(command, "resolve_command"):
        name, command, rest = command.resolve_command(context, rest)
        context = command.context_class(command, info_name=name, parent=context)
    return command.make_context(context.info_name, rest, parent=context.parent)


@functools.cache
def _cli(program: str) -> Any:
    if program == "retention":
        import typer  # noqa: PLC0415

        from retention_pipelines.cli import app  # noqa: PLC0415

        return typer.main.get_command(app)
    if program == "mlflow":
        from mlflow.cli import cli  # noqa: PLC0415

        return cli
    if program == "dagster":
        # The group behind the `dagster` script (its entry point wraps it in a function).
        from dagster._cli import cli  # noqa: PLC0415

        return cli
    raise AssertionError(f"no known command line: {program}")


def _helm_command_lines() -> Iterator[list[str]]:
    """What Dagster's chart runs in the project image: the code server's command line."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    for deployment in values["dagster-user-deployments"]["deployments"]:
        port = str(deployment["port"])
        bind = ["-h", "0.0.0.0", "-p", port]  # noqa: S104  # what the chart passes
        yield ["dagster", "api", "grpc", *bind, *deployment["dagsterApiGrpcArgs"]]


@pytest.mark.slow
def test_every_command_parses_with_the_cli_it_names() -> None:
    lines = list(_helm_command_lines())
    for name in RENDERS:
        config_maps = {doc["metadata"]["name"]: doc["data"] for doc in objects(name, "ConfigMap")}
        lines += [_expanded(container, config_maps) for _, container in containers(name)]
    parsed = {_parse(_cli(line[0]), line).command_path for line in lines}
    assert parsed == {
        "retention serve",
        "retention dashboard",
        "retention exporter",
        "retention tune-worker",
        "mlflow server",
        "dagster api grpc",
    }


# --- the values for Dagster's chart ---------------------------------------------------------------


@functools.cache
def chart() -> dict[str, Any]:
    return json.loads(CHART_DATA.read_text())


def helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _kubernetes_definitions() -> referencing.Resource:
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    strict = folder / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json"
    return referencing.Resource.from_contents(json.loads(strict.read_text()))


def test_helm_values_set_only_top_level_keys_the_chart_documents() -> None:
    assert set(helm_values()) <= set(chart()["topLevelKeys"])
    assert f"chart version {chart()['chart']['version']}" in HELM_VALUES.read_text()


def test_every_helm_key_path_is_one_the_chart_documents() -> None:
    registry = _kubernetes_definitions() @ referencing.Registry()
    validator = jsonschema.Draft202012Validator(chart()["schema"], registry=registry)
    errors = [
        f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(helm_values())
    ]
    assert not errors, "\n".join(errors)


def test_raw_kubernetes_config_of_run_pods_is_valid_kubernetes() -> None:
    raw = helm_values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "run"},
        "spec": {"containers": [{"name": "dagster", "image": "retention"}], **raw["podSpecConfig"]},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "run"},
        "spec": {
            "template": {"spec": pod["spec"] | {"restartPolicy": "Never"}},
            **raw["jobSpecConfig"],
        },
    }
    for doc in (pod, job):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_helm_values_mirror_the_single_machine_instance() -> None:
    instance = yaml.safe_load((REPO / "dagster.yaml").read_text())
    daemon = helm_values()["dagsterDaemon"]
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = instance["run_coordinator"]
    assert daemon["runCoordinator"]["type"] == coordinator["class"] == "QueuedRunCoordinator"
    assert queue["maxConcurrentRuns"] == coordinator["config"]["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == coordinator["config"]["tag_concurrency_limits"]
    monitoring, retries = instance["run_monitoring"], instance["run_retries"]
    assert daemon["runMonitoring"]["enabled"] == monitoring["enabled"]
    assert daemon["runMonitoring"]["startTimeoutSeconds"] == monitoring["start_timeout_seconds"]
    assert daemon["runMonitoring"]["maxResumeRunAttempts"] == monitoring["max_resume_run_attempts"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
    }
    assert helm_values()["telemetry"]["enabled"] == instance["telemetry"]["enabled"]


def test_helm_values_use_what_the_prod_overlay_provides() -> None:
    values = helm_values()
    (code,) = values["dagster-user-deployments"]["deployments"]
    (image,) = _images("prod")
    assert f"{code['image']['repository']}:{code['image']['tag']}" == image.split("@")[0]
    for section in (values["dagsterWebserver"], values["dagsterDaemon"], code):
        assert section["image"] == code["image"]
        assert section["envConfigMaps"] == [{"name": "retention-platform"}]
        assert section["labels"]["retention.io/dagster"] == "true"
        assert section["labels"][POSTGRES_CLIENT] == "true"
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["labels"] == code["labels"]
    # The runs hand tasks to the CRM: they get its secrets and may reach it.
    assert {"name": "retention-personal-data"} in code["envSecrets"]
    crm_policy = one("prod", "NetworkPolicy", "crm-webhook")["spec"]
    (crm_label,) = crm_policy["podSelector"]["matchLabels"].items()
    assert code["labels"][crm_label[0]] == crm_label[1]
    assert crm_policy["egress"][0]["to"][0]["ipBlock"]["cidr"] != PLACEHOLDER_CIDR
    (claim,) = (v["persistentVolumeClaim"]["claimName"] for v in code["volumes"])
    assert ("PersistentVolumeClaim", claim) in {
        (d["kind"], d["metadata"]["name"]) for d in rendered("prod")
    }
    config = one("prod", "ConfigMap", "retention-platform")["data"]
    (mount,) = code["volumeMounts"]
    assert config["RETENTION_MLFLOW_ARTIFACT_ROOT"].startswith(mount["mountPath"] + "/")
    dagster_policy = one("prod", "NetworkPolicy", "dagster")["spec"]
    assert [p["port"] for p in dagster_policy["ingress"][0]["ports"]] == [code["port"]]
    assert [p["port"] for p in dagster_policy["ingress"][1]["ports"]] == [
        values["dagsterWebserver"]["service"]["port"]
    ]
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["dagsterWebserver"]["enableReadOnly"] is True
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


# --- checkov -------------------------------------------------------------------------------------


def _uv() -> str:
    local = REPO / ".tools" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is neither at .tools/bin/uv nor on PATH: checkov runs through it")
    return found


def _checkov_reports(folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(  # uv from the repo or PATH, a pinned checkov
        [
            _uv(), "tool", "run", "--from", CHECKOV, "checkov",
            "--directory", str(folder),
            "--framework", "kubernetes", "dockerfile",
            "--output", "json", "--compact", "--skip-download",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )  # fmt: skip
    assert result.returncode in {0, 1}, f"checkov crashed:\n{result.stderr[-4000:]}"
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


@pytest.mark.slow
def test_checkov_fails_nothing_and_every_skip_says_why(tmp_path: Path) -> None:
    assert DOCKERFILE.exists(), "docker/Dockerfile is scanned with the manifests"
    for name in RENDERS:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(rendered(name)))
    shutil.copy(DOCKERFILE, tmp_path / "Dockerfile")
    reports = {report["check_type"]: report for report in _checkov_reports(tmp_path)}
    assert set(reports) == {"kubernetes", "dockerfile"}, "both were scanned"
    failed = [
        f"{report['check_type']}: {check['check_id']} {check['resource']} ({check['check_name']})"
        for report in reports.values()
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    for report in reports.values():
        assert report["summary"]["passed"] > 0, report["check_type"]
        for check in report["results"]["skipped_checks"]:
            reason = check["check_result"].get("suppress_comment", "")
            assert len(reason) > 20, f"{check['check_id']} skipped without a reason"
