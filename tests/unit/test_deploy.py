"""tritonforge deploy k8s: rendering, schema validation (Kubernetes OpenAPI + vendored CRDs), Helm parity, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonforge.deploy.k8s import (
    DATA,
    DeployOptions,
    build_values,
    deploy_k8s,
    helm_chart,
    load_documents,
    network_policy,
    render_kserve,
    render_manifests,
)
from tritonforge.errors import DeployError, TritonForgeError
from tritonforge.spec_deploy import NetworkPolicySettings
from tritonforge.validator import RateLimit

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

K8S_VERSION = "1.37.0"  # the newest schemas kubernetes-validate ships (strict: unknown fields are errors)
TRTLLM_IMAGE = "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"  # ships TensorRT-LLM 0.16.0
LLMAPI_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"  # TensorRT-LLM 1.2.1: serves runtime llmapi
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com_v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.serving.kserve.io_v1beta1.json",
}


# ------------------------------------------------------------------------------------------------ repositories


@pytest.fixture(scope="module")
def cpu_repo(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.build import build
    from tritonforge.spec import parse_spec

    spec = parse_spec(
        {
            "name": "Tiny Embed",
            "models": {"tiny": {"kind": "embedding", "checkpoint": str(tiny_bert), "max_batch_size": 8}},
            "deploy": {"autoscaling": {"max_replicas": 6, "target_queue_time_us": 20000}},
        }
    )
    repo = tmp_path_factory.mktemp("deploy-cpu") / "repo"
    build(spec, repo, target="cpu")
    return repo


def _gpu_repo(
    root: Path, tiny_bert: Path, decoder: Path, *, tp: int = 2, deploy: dict[str, Any] | None = None,
    default_engine_dir: bool = False,
) -> Path:
    """A gpu-target repository for TRTLLM_IMAGE (embedder on GPU 0 + a TensorRT-LLM engine model with tp_size `tp`),
    with the engine's manifest as a TensorRT-LLM 0.16.0 build would write it (no engine can be built here)."""
    from tritonforge.build import plan_repository
    from tritonforge.repository import write_repository
    from tritonforge.spec import parse_spec

    spec = parse_spec(
        {
            "name": "rag-gpu",
            "target": "gpu",
            "image": TRTLLM_IMAGE,
            "models": {
                "tiny": {
                    "kind": "embedding",
                    "checkpoint": str(tiny_bert),
                    "max_batch_size": 8,
                    "gpu_precision": "fp32",
                    "instance_groups": [{"count": 1, "kind": "gpu", "gpus": [0]}],
                },
                # where the pods have the engine: the default, /models/..., holds only with the repository on a
                # volume at /models, and most tests here deploy from s3:// (test_engine_paths_...)
                "chat": {"kind": "llm", "checkpoint": str(decoder), "runtime": "engine", "engine": {"tp_size": tp},
                         **({} if default_engine_dir else {"engine_dir_in_container": "/engines/chat"})},
            },
            "deploy": deploy or {},
        }
    )
    files, _, _ = plan_repository(spec, engine_plans=[])
    manifest = {"tensorrt_llm_version": "0.16.0", "settings": {"tp_size": tp, "pp_size": 1}, "gpus_required": tp}
    plan = {**files, "tensorrt_llm/1/engine/engine_manifest.json": json.dumps(manifest).encode()}
    return write_repository(plan, root)


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.builders.tiny_models import make_tiny_decoder

    return make_tiny_decoder(tmp_path_factory.mktemp("decoder") / "decoder")


@pytest.fixture(scope="module")
def gpu_repo(tiny_bert: Path, decoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _gpu_repo(tmp_path_factory.mktemp("deploy-gpu") / "repo", tiny_bert, decoder)


def _record(repo: Path, *, image: str | None = None, **runtimes: str) -> Path:
    """Edit the build's tritonforge.json as a newer build would write it: `image`, and parallel.<model>.runtime."""
    path = repo / "tritonforge.json"
    info = json.loads(path.read_text())
    if image is not None:
        info["image"] = image
    for model, runtime in runtimes.items():
        info["parallel"][model]["runtime"] = runtime
    path.write_text(json.dumps(info))
    return repo


@pytest.fixture(scope="module")
def llmapi_repo(tiny_bert: Path, decoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tp_size 2 repository with its LLM recorded as runtime llmapi (upstream's LLM API python model)."""
    repo = _gpu_repo(tmp_path_factory.mktemp("deploy-llmapi") / "repo", tiny_bert, decoder)
    return _record(repo, tensorrt_llm="llmapi")


def _ranks(container: dict[str, Any]) -> list[list[str]]:
    """An mpirun container's MPMD ranks: each `-n 1 tritonserver <flags>` (the ':'-separated parts)."""
    assert container["command"] == ["mpirun"]
    assert container["args"][0] == "--allow-run-as-root"
    ranks: list[list[str]] = [[]]
    for arg in container["args"][1:]:
        if arg == ":":
            ranks.append([])
        else:
            ranks[-1].append(arg)
    for rank in ranks:
        assert rank[:3] == ["-n", "1", "tritonserver"]
    return [rank[3:] for rank in ranks]


def _notes(report: Any) -> tuple[str, ...]:
    """A report's notes but those every deploy without --admin-key-secret, with the autoscaler, from a prefix that
    is not a release's, or of a gpu repository (the nodes' NVIDIA driver) gets (their own tests check them)."""
    common = ("--admin-key-secret", "prometheus-adapter", "push --release", "NVIDIA driver")
    return tuple(n for n in report.notes if not any(c in n for c in common))


def _options(**kw: Any) -> DeployOptions:
    base: dict[str, Any] = {
        "image": TRTLLM_IMAGE,
        "repository_url": "s3://models/rag",
        "credentials_secret": "s3-credentials",
    }
    return DeployOptions(**{**base, **kw})


# ------------------------------------------------------------------------------------------------- validation


def _validate(doc: dict[str, Any]) -> None:
    """A rendered object against the Kubernetes OpenAPI schemas, or a vendored CRD schema."""
    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is None:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return
    schema = json.loads((DATA / crd).read_text())
    jsonschema.validate(doc, schema)
    if doc["kind"] == "InferenceService":
        # the predictor's embedded Kubernetes types, against the Kubernetes schemas: as the Pod KServe makes
        predictor = doc["spec"]["predictor"]
        container = {
            k: v
            for k, v in predictor["model"].items()
            if k not in ("modelFormat", "runtime", "protocolVersion", "storageUri")
        }
        pod_spec = {
            k: v for k, v in predictor.items() if k in ("serviceAccountName", "nodeSelector", "tolerations", "volumes")
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "predictor"},
            "spec": {**pod_spec, "containers": [{"name": "kserve-container", **container}]},
        }
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def _kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)


def test_cpu_target_renders_valid_manifests_without_gpu_requests(cpu_repo: Path) -> None:
    values = build_values(
        cpu_repo,
        _options(
            image="nvcr.io/nvidia/tritonserver:24.12-py3",
            gateway=True,
            gateway_image="ghcr.io/acme/tritonforge:0.1.0",
            gateway_api_keys_secret="gw-keys",
        ),
    )
    docs = load_documents(render_manifests(values).values())
    assert _kinds(docs) == [
        "ConfigMap/tiny-embed-prometheus-adapter-rules",
        "Deployment/tiny-embed",
        "Deployment/tiny-embed-gateway",
        "HorizontalPodAutoscaler/tiny-embed",
        "PodDisruptionBudget/tiny-embed",
        "PodDisruptionBudget/tiny-embed-gateway",
        "Service/tiny-embed-gateway",
        "Service/tiny-embed-gateway-metrics",
        "Service/tiny-embed-grpc",
        "Service/tiny-embed-grpc-pods",
        "Service/tiny-embed-http",
        "Service/tiny-embed-metrics",
        "ServiceMonitor/tiny-embed",
        "ServiceMonitor/tiny-embed-gateway",
    ]
    for doc in docs:
        _validate(doc)
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "tiny-embed")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "--model-repository=s3://models/rag" in container["args"]
    assert "--allow-gpu-metrics=false" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-credentials",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    # Triton copies an s3:// repository to the container's disk: the pod asks for room for it
    size = sum(p.stat().st_size for p in cpu_repo.rglob("*") if p.is_file())
    requested = container["resources"]["requests"]["ephemeral-storage"]
    assert requested.endswith("Mi") and int(requested[:-2]) * 2**20 >= size * 1.25 and "ephemeral-storage" not in (
        container["resources"]["limits"])
    kserve = build_values(cpu_repo, _options())["kserve"]["resources"]
    assert kserve["requests"]["ephemeral-storage"] == requested  # KServe's storage initializer copies it too
    on_pvc = build_values(cpu_repo, _options(repository_url="pvc://store/rag", credentials_secret=None))
    assert "ephemeral-storage" not in on_pvc["triton"]["resources"]["requests"]  # read in place from the volume
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800
    # the cpu target's threads are sized by the CPU limit: without one each replica used every core of the node
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"] == "2"


def test_hpa_scales_per_model_on_queue_time_from_prometheus_adapter(cpu_repo: Path) -> None:
    docs = load_documents(render_manifests(build_values(cpu_repo, _options())).values())
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 6
    # one metric per non-ensemble model: a busy model is not averaged away by idle neighbours
    models = [m["pods"]["metric"]["selector"]["matchLabels"]["model"] for m in hpa["spec"]["metrics"]]
    assert models == ["tiny_encoder", "tiny_tokenizer"]
    assert {m["pods"]["target"]["averageValue"] for m in hpa["spec"]["metrics"]} == {"20000"}
    adapter = next(d for d in docs if d["kind"] == "ConfigMap")
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    query = rule["metricsQuery"]
    assert "rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m])" in query
    assert "rate(nv_inference_request_success{<<.LabelMatchers>>}[1m])" in query
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    metrics_svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics"))
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_svc["metadata"]["labels"].items()


def test_gpu_target_requests_the_gpus_of_its_parallel_sizes(gpu_repo: Path) -> None:
    values = build_values(gpu_repo, _options(repository_url="gs://models/rag", credentials_secret="gcs-key"))
    assert values["gpus"] == 2  # tensorrt_llm tp_size 2 (GPUs 0,1), the encoder on GPU 0
    docs = load_documents(render_manifests(values).values())
    for doc in docs:
        _validate(doc)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert "nodeSelector" not in pod  # the GPU request schedules it; GFD's label is missing on some clusters
    assert [t["key"] for t in pod["tolerations"]] == ["nvidia.com/gpu"]
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/key.json"} in container["env"]
    assert any(v.get("secret", {}).get("secretName") == "gcs-key" for v in pod["volumes"])


def test_a_mig_profile_still_tolerates_gpu_nodes_taint(tiny_bert: Path, decoder: Path, tmp_path: Path) -> None:
    """GPU nodes are tainted nvidia.com/gpu whatever resource a pod asks for: a pod asking for a MIG profile
    tolerated only the profile's key and stayed Pending (k8s audit)."""
    mig = "nvidia.com/mig-1g.10gb"
    repo = _gpu_repo(tmp_path / "repo", tiny_bert, decoder, deploy={"gpu_resource": mig})
    triton = build_values(repo, _options())["triton"]
    assert [t["key"] for t in triton["tolerations"]] == ["nvidia.com/gpu", mig]
    assert triton["resources"]["limits"][mig] == 2 and not triton["nodeSelector"]


def test_pvc_repository_mounts_the_claim(cpu_repo: Path) -> None:
    values = build_values(cpu_repo, _options(repository_url="pvc://model-store/repos/embed", credentials_secret=None))
    docs = load_documents(render_manifests(values).values())
    for doc in docs:
        _validate(doc)
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    # the claim's folder is mounted as /models itself (subPath): the engine path's absolute /models/... paths hold
    assert "--model-repository=/models" in container["args"]
    assert {"name": "model-repository", "mountPath": "/models", "readOnly": True,
            "subPath": "repos/embed"} in container["volumeMounts"]


def test_engine_paths_under_models_need_the_repository_mounted_there(
    tiny_bert: Path, decoder: Path, tmp_path: Path
) -> None:
    """gpt_model_path is /models/tensorrt_llm/1/engine: from s3:// or gs:// (Triton copies the repository to a
    temporary folder), from KServe (/mnt/models) or from a pvc sub-folder mounted below /models, TensorRT-LLM found
    no engine at load. A pvc is now mounted at /models itself; the others are refused, naming the paths."""
    repo = _gpu_repo(tmp_path / "repo", tiny_bert, decoder, default_engine_dir=True)
    with pytest.raises(DeployError, match=r"temporary folder, where these paths do not exist: tensorrt_llm: "
                                          r"gpt_model_path = /models/tensorrt_llm/1/engine"):
        build_values(repo, _options())
    with pytest.raises(DeployError, match=r"KServe mounts the repository at /mnt/models"):
        deploy_k8s(repo, tmp_path / "kserve", _options(repository_url="pvc://store/rag", credentials_secret=None),
                   "kserve")
    values = build_values(repo, _options(repository_url="pvc://store/rag", credentials_secret=None))
    assert values["triton"]["volumeMounts"][-1]["subPath"] == "rag"


def test_kserve_inference_service_validates(llmapi_repo: Path) -> None:
    values = build_values(llmapi_repo, _options(repository_url="s3://minio.storage:9000/models/rag"))
    docs = load_documents(render_kserve(values).values())
    assert _kinds(docs) == ["InferenceService/rag-gpu", "ServiceAccount/rag-gpu-storage"]
    for doc in docs:
        _validate(doc)
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://models/rag"  # KServe takes the endpoint from the Secret's annotations
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 2
    # the runtime declares no probes and Knative gives a revision 10 min: traffic reached a loading Triton, and
    # slow engine loads failed (k8s audit)
    for probe in (model["startupProbe"], model["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert model["startupProbe"]["failureThreshold"] * model["startupProbe"]["periodSeconds"] >= 1800
    assert isvc["metadata"]["annotations"]["serving.knative.dev/progress-deadline"] == "2100s"
    (shm,) = isvc["spec"]["predictor"]["volumes"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}


def test_vendored_crd_schemas_refuse_what_the_operators_refuse() -> None:
    schema = json.loads((DATA / CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]).read_text())
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "interval": "15 seconds"}]},
    }
    with pytest.raises(jsonschema.ValidationError, match="15 seconds"):
        jsonschema.validate(bad, schema)
    schema = json.loads((DATA / CRD_SCHEMAS[("serving.kserve.io/v1beta1", "InferenceService")]).read_text())
    bad = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"model": {"runtime": "kserve-tritonserver"}}},
    }
    with pytest.raises(jsonschema.ValidationError, match="modelFormat"):
        jsonschema.validate(bad, schema)


# ------------------------------------------------------------------------------------------------------- helm


def _helm_render(values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm's Go engine) is in the test extra")
    chart_dir = tmp_path / "chart"
    for rel, content in helm_chart(values).items():
        (chart_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (chart_dir / rel).write_bytes(content)
    with helm.Chart.load(str(chart_dir)) as chart:
        rendered = chart.render(name="release", namespace=values["namespace"])  # the chart's own values.yaml
    return load_documents(rendered.values())


def _normalized(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sorted, with ConfigMap data that is YAML compared as data (Helm's toYaml and PyYAML quote differently)."""
    out = []
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc = {**doc, "data": {k: yaml.safe_load(v) for k, v in doc["data"].items()}}
        out.append(doc)
    return sorted(out, key=lambda d: (d["kind"], d["metadata"]["name"]))


@pytest.mark.parametrize("variant", ["gpu", "gpu-llmapi", "cpu-gateway", "cpu-gateway-autoscaled", "pvc-no-autoscaling"])
def test_helm_chart_renders_the_same_resources_as_the_manifests(
    variant: str, cpu_repo: Path, gpu_repo: Path, llmapi_repo: Path, tmp_path: Path
) -> None:
    """The chart's Go templates, rendered by Helm's own engine (helm-python-sdk embeds Helm v4's Go SDK), give
    exactly the objects of the jinja2 manifests for the same values."""
    if variant == "gpu":
        values = build_values(gpu_repo, _options())
        assert values["triton"]["command"] == ["mpirun"]  # the tp_size 2 engine: the MPI launch
    elif variant == "gpu-llmapi":
        values = build_values(llmapi_repo, _options())
    elif variant.startswith("cpu-gateway"):
        repo = cpu_repo
        if variant == "cpu-gateway-autoscaled":
            repo = _repo_with_deploy(cpu_repo, tmp_path, {"gateway": {"min_replicas": 2, "max_replicas": 6}})
        values = build_values(
            repo,
            _options(
                gateway=True,
                gateway_image="ghcr.io/acme/tritonforge:0.1.0",
                gateway_api_keys_secret="gw-keys",
                namespace="serving",
                image_pull_secrets=("corp-registry",),
                monitor_labels=("release=kube-prometheus-stack",),
                admin_key_secret="triton-admin",
            ),
        )
        values["networkPolicy"] = network_policy(
            NetworkPolicySettings(enabled=True, client_namespaces=["apps"], client_pod_labels={"team": "ml"}),
            values["selectorLabels"], values["gateway"]["selectorLabels"],
        )
    else:
        values = build_values(cpu_repo, _options(repository_url="pvc://store", credentials_secret=None))
        values["autoscaling"]["enabled"] = values["prometheusAdapter"]["enabled"] = False
        values["serviceMonitor"]["enabled"] = False
    plain = load_documents(render_manifests(values).values())
    helm_docs = _helm_render(values, tmp_path)
    assert _normalized(helm_docs) == _normalized(plain)
    for doc in helm_docs:
        _validate(doc)


def test_helm_refuses_overriding_what_the_rendered_flags_hold_and_follows_the_release_namespace(
    cpu_repo: Path, tmp_path: Path
) -> None:
    """ports.http=9000 moved the pod's port and Service but not Triton's --http-port (the probes failed), and
    modelRepository / gpus overrides changed nothing; the objects went to values.namespace whatever `helm -n`
    said. values.schema.json now refuses those overrides, and the objects take the release's namespace."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm's Go engine) is in the test extra")
    values = build_values(cpu_repo, _options(namespace="serving", gateway=True, gateway_image="ghcr.io/a/g:1",
                                             gateway_api_keys_secret="gw-keys"))
    chart_dir = tmp_path / "chart"
    for rel, content in helm_chart(values).items():
        (chart_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (chart_dir / rel).write_bytes(content)
    with helm.Chart.load(str(chart_dir)) as chart:
        docs = load_documents(chart.render(name="r", namespace="prod").values())
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "ConfigMap"} == {"prod"}
        gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway"))
        container = gateway["spec"]["template"]["spec"]["containers"][0]
        assert f"--triton=dns:///{values['name']}-grpc-pods:8001" in container["args"]
        headless = next(d for d in docs if d["metadata"]["name"] == f"{values['name']}-grpc-pods")
        assert headless["spec"]["clusterIP"] == "None" and headless["metadata"]["namespace"] == "prod"
        # Pod Security "restricted"'s container fields, on both workloads; the gateway has resources and liveness
        triton = next(d for d in docs if d["kind"] == "Deployment" and d is not gateway)
        restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}
        assert triton["spec"]["template"]["spec"]["containers"][0]["securityContext"] == restricted
        # the gateway in full (k8s audit: namespaces enforcing "restricted" refused its pods): no root, a read-only
        # root filesystem with /tmp an emptyDir, and no service-account token (neither pod calls the API)
        assert container["securityContext"] == {**restricted, "readOnlyRootFilesystem": True}
        gateway_pod = gateway["spec"]["template"]["spec"]
        assert gateway_pod["securityContext"]["runAsNonRoot"] is True and gateway_pod["securityContext"]["runAsUser"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert gateway_pod["automountServiceAccountToken"] is False
        assert triton["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["resources"]["requests"]
        for override in ({"ports": {**values["ports"], "http": 9000}}, {"gpus": 2},
                         {"image": "nvcr.io/nvidia/tritonserver:24.05-trtllm-python-py3"},
                         {"modelRepository": {**values["modelRepository"], "url": "s3://other/x"}},
                         {"name": "second"}):  # in labels, selectors and the gateway's address: render with --name
            with pytest.raises(Exception, match=next(iter(override))):
                chart.render(override, name="r", namespace="prod")
        assert chart.render({"replicas": 3}, name="r", namespace="prod")  # what the templates read may change
        # labels given at install reach the ServiceMonitor too (it held a copy taken when the chart was rendered)
        relabelled = load_documents(chart.render({"labels": {**values["labels"], "team": "ml"}, "serviceMonitor": {
            **values["serviceMonitor"], "labels": {"release": "kps"}}}, name="r", namespace="prod").values())
        monitor = next(d for d in relabelled if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == values["name"])
        assert monitor["metadata"]["labels"]["team"] == "ml" and monitor["metadata"]["labels"]["release"] == "kps"


def test_deploy_writes_each_format(cpu_repo: Path, tmp_path: Path) -> None:
    report = deploy_k8s(cpu_repo, tmp_path / "k8s", _options())
    assert report.files == (
        "Dockerfile",  # the trtllm image has no onnxruntime for the cpu runner (test_image_recipe_...)
        "deployment.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "prometheus-adapter.yaml",
        "servicemonitor.yaml",
        "services.yaml",
    )
    report = deploy_k8s(cpu_repo, tmp_path / "chart", _options(), "helm")
    assert {"Chart.yaml", "values.yaml", "templates/deployment.yaml"} <= set(report.files)
    values = yaml.safe_load((tmp_path / "chart" / "values.yaml").read_text())
    assert values == {k: v for k, v in report.values.items() if k != "namespace"}  # helm's -n decides it
    report = deploy_k8s(cpu_repo, tmp_path / "kserve", _options(), "kserve")
    assert (tmp_path / "kserve" / "inferenceservice.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart", "k8s", "kserve"]  # no temp folders left


def test_cli_deploy_k8s(cpu_repo: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tritonforge.cli import app

    args = [
        "deploy",
        "k8s",
        str(cpu_repo),
        "--image",
        "nvcr.io/nvidia/tritonserver:24.12-py3",
        "--repository-url",
        "s3://models/embed",
        "--credentials-secret",
        "creds",
        "-o",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "deployment.yaml").is_file()
    result = CliRunner().invoke(app, [*args[:-2], "-o", str(tmp_path / "bad"), "--gpus", "1"])
    assert result.exit_code == 1
    assert "--gpus: 1: the cpu target uses no GPU" in result.output
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------- TensorRT-LLM launch


@pytest.mark.parametrize("runtime", [None, "engine"])
def test_engine_of_world_2_runs_one_mpi_rank_per_gpu(
    runtime: str | None, tiny_bert: Path, decoder: Path, tmp_path: Path
) -> None:
    """tp_size 2 over the C++ tensorrtllm backend: upstream's launch_triton_server.py MPI launch, 2 ranks. A
    repository built before `runtime` was recorded (None) is an engine repository."""
    repo = _gpu_repo(tmp_path / "repo", tiny_bert, decoder, tp=2)
    info = json.loads((repo / "tritonforge.json").read_text())
    if runtime is None:
        del info["parallel"]["tensorrt_llm"]["runtime"]
    else:
        info["parallel"]["tensorrt_llm"]["runtime"] = runtime
    (repo / "tritonforge.json").write_text(json.dumps(info))
    assert json.loads((repo / "tritonforge.json").read_text())["parallel"]["tensorrt_llm"].get("runtime") == runtime
    values = build_values(repo, _options())
    assert values["triton"]["ranks"] == 2
    docs = load_documents(render_manifests(values).values())
    for doc in docs:
        _validate(doc)
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    leader, worker = _ranks(container)
    # rank 0: the single-rank flags (it serves the pod's ports and loads every model) + its shm prefix
    single = build_values(_gpu_repo(tmp_path / "tp1", tiny_bert, decoder, tp=1), _options())["triton"]["args"]
    assert leader == [*single, "--backend-config=python,shm-region-prefix-name=prefix0_"]
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", "--model-control-mode=none"} <= set(leader)
    # rank 1: only the engine's share of the executor, no endpoint
    assert worker == [
        "--model-repository=s3://models/rag",
        "--model-control-mode=explicit",
        "--load-model=tensorrt_llm",
        "--disable-auto-complete-config",
        "--allow-http=false",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--exit-timeout-secs=30",
        "--backend-config=python,shm-region-prefix-name=prefix1_",
    ]
    assert not [a for a in worker if a.split("=")[0] in ("--http-port", "--grpc-port", "--metrics-port")]
    assert [p["containerPort"] for p in container["ports"]] == [8000, 8001, 8002]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_engine_of_world_1_keeps_the_plain_tritonserver(tiny_bert: Path, decoder: Path, tmp_path: Path) -> None:
    repo = _gpu_repo(tmp_path / "repo", tiny_bert, decoder, tp=1)
    values = build_values(repo, _options())
    container = next(d for d in load_documents(render_manifests(values).values()) if d["kind"] == "Deployment")["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert container["command"] == ["tritonserver"]
    assert container["args"] == values["triton"]["args"]
    assert "--model-control-mode=none" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--backend-config=python,shm-region-prefix-name")]


def test_llmapi_model_of_world_2_runs_one_rank(llmapi_repo: Path) -> None:
    """The LLM API spawns its own tp_size × pp_size workers: one tritonserver, launched as upstream's llmapi docs
    do (launch_triton_server.py with its default world size 1: mpirun -n 1), with every GPU of the model."""
    values = build_values(llmapi_repo, _options())
    assert values["gpus"] == 2 and values["triton"]["ranks"] == 1
    docs = load_documents(render_manifests(values).values())
    for doc in docs:
        _validate(doc)
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    (only,) = _ranks(container)
    assert only[-1] == "--backend-config=python,shm-region-prefix-name=prefix0_"
    assert {"--http-port=8000", "--model-control-mode=none"} <= set(only)
    assert not [a for a in only if a.startswith("--load-model")]


def test_kserve_refuses_a_multi_rank_launch(gpu_repo: Path, tmp_path: Path) -> None:
    err = _refused(gpu_repo, tmp_path / "out", _options(), "kserve")
    (problem,) = err.problems
    assert problem.where == "--format"
    assert "MPI launch of 2 tritonserver ranks" in problem.message and "--format manifests or helm" in problem.message


def test_engines_of_different_world_sizes_are_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tritonforge.deploy.launch import triton_launch

    engine = SimpleNamespace(backend="tensorrtllm", instance_group=[])
    info = {
        "target": "gpu",
        "parallel": {
            "a_tensorrt_llm": {"tp_size": 2, "pp_size": 1},
            "b_tensorrt_llm": {"tp_size": 2, "pp_size": 2, "runtime": "engine"},
        },
    }
    launch, problems = triton_launch(tmp_path, info, {"a_tensorrt_llm": engine, "b_tensorrt_llm": engine})
    (problem,) = problems
    assert problem.where == str(tmp_path / "tritonforge.json")
    assert problem.message.startswith(
        "TensorRT-LLM engines of different world sizes (tp_size × pp_size: a_tensorrt_llm: 2, b_tensorrt_llm: 4)"
    )
    info["parallel"]["b_tensorrt_llm"]["pp_size"] = 1  # the same world: one 2-rank launch, rank 1 loads both
    launch, problems = triton_launch(tmp_path, info, {"a_tensorrt_llm": engine, "b_tensorrt_llm": engine})
    assert problems == [] and launch.ranks == 2 and launch.engines == ("a_tensorrt_llm", "b_tensorrt_llm")
    info["parallel"]["b_tensorrt_llm"]["runtime"] = "pytorch"
    _, problems = triton_launch(tmp_path, info, {"a_tensorrt_llm": engine, "b_tensorrt_llm": engine})
    assert [p.message for p in problems] == ["parallel.b_tensorrt_llm.runtime 'pytorch': expected 'engine' or 'llmapi'"]


@pytest.mark.parametrize(
    ("built_for", "deploying"),
    [
        ("nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3", TRTLLM_IMAGE),  # another release
        ("nvcr.io/nvidia/tritonserver:24.12-py3", TRTLLM_IMAGE),  # another flavour
    ],
)
def test_image_other_than_the_build_s_is_refused(
    built_for: str, deploying: str, tiny_bert: Path, decoder: Path, tmp_path: Path
) -> None:
    repo = _record(_gpu_repo(tmp_path / "repo", tiny_bert, decoder), image=built_for)
    err = _refused(repo, tmp_path / "out", _options(image=deploying))
    problem = next(p for p in err.problems if p.where == "--image")
    assert problem.message == (
        f"repository built for {built_for}, deploying {deploying}: rebuild with --image {deploying} or deploy "
        f"{built_for}"
    )


def test_image_of_the_build_s_release_and_flavour_is_accepted(tiny_bert: Path, decoder: Path, tmp_path: Path) -> None:
    repo = _record(_gpu_repo(tmp_path / "repo", tiny_bert, decoder), image="24.12-trtllm-python-py3")
    assert build_values(repo, _options(image="registry.local:5000/triton/tritonserver:24.12-trtllm-python-py3"))
    # deploy's Dockerfile built FROM it and tagged in the user's registry: its own flavour, the build's release
    # (it was refused with "rebuild with --image", and the rebuild then with "has no TensorRT-LLM": a dead end)
    for custom in ("registry.corp/ml/tritonserver:24.12-trtllm-python-py3-faiss", "registry.corp/ml/triton:24.12-1"):
        assert build_values(repo, _options(image=custom))
    err = _refused(repo, tmp_path / "out", _options(image="registry.corp/ml/tritonserver:24.11-trtllm-python-py3"))
    assert "--image" in [p.where for p in err.problems]  # another release: refused (its TensorRT-LLM differs too)


def test_a_digest_or_a_tag_naming_no_release_is_held_to_the_build_s_release(
    tiny_bert: Path, decoder: Path, tmp_path: Path
) -> None:
    """A digest after the tag hid the release (every check skipped: a -py3 image deployed for a -trtllm-python-py3
    build), and a tag naming no release (':latest') passed, though docs/deploy.md holds custom tags to the build's
    release (deploy audit)."""
    repo = _record(_gpu_repo(tmp_path / "repo", tiny_bert, decoder), image="24.12-trtllm-python-py3")
    digest = "@sha256:" + "0" * 64
    assert build_values(repo, _options(image=f"nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3{digest}"))
    for other in ("nvcr.io/nvidia/tritonserver:24.12-py3", "nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3"):
        err = _refused(repo, tmp_path / "out", _options(image=other + digest))
        (problem,) = [p for p in err.problems if p.where == "--image"]
        assert problem.message.startswith(f"repository built for 24.12-trtllm-python-py3, deploying {other}{digest}")
    for unnamed in ("registry.corp/ml/triton:latest", f"registry.corp/ml/triton{digest}"):
        err = _refused(repo, tmp_path / "out", _options(image=unnamed))
        (problem,) = [p for p in err.problems if p.where == "--image"]
        assert problem.message == (
            f"{unnamed!r} names no release, and the repository was built for 24.12-trtllm-python-py3: tag the "
            "image with its release (…:24.12-trtllm-python-py3, a digest may follow: …@sha256:…)"
        )


def test_a_moving_tag_is_pulled_always_a_fixed_one_if_not_present(cpu_repo: Path) -> None:
    """':latest' was rendered IfNotPresent: nodes kept whichever copy they had first (deploy audit)."""
    assert build_values(cpu_repo, _options(image="registry.corp/ml/triton:latest"))["imagePullPolicy"] == "Always"
    assert build_values(cpu_repo, _options(image="registry.corp/ml/triton:26.07-1"))["imagePullPolicy"] == (
        "IfNotPresent"
    )
    assert build_values(cpu_repo, _options(image="registry.corp/ml/triton:latest@sha256:" + "0" * 64))[
        "imagePullPolicy"] == "IfNotPresent"  # a digest does not move


# -------------------------------------------------------------------------------------------------- bad input


def _refused(repo: Path, out: Path, options: DeployOptions, fmt: str = "manifests") -> DeployError:
    with pytest.raises(DeployError) as caught:
        deploy_k8s(repo, out, options, fmt)  # type: ignore[arg-type]
    assert not out.exists(), "nothing may be written on error"
    if out.parent.exists():
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    assert isinstance(caught.value, TritonForgeError)
    return caught.value


def test_more_gpus_than_the_parallel_sizes_allow_is_refused(tiny_bert: Path, decoder: Path, tmp_path: Path) -> None:
    repo = _gpu_repo(tmp_path / "repo", tiny_bert, decoder, tp=2, deploy={"gpus_per_replica": 4})
    err = _refused(repo, tmp_path / "out" / "k8s", _options())
    (problem,) = err.problems
    assert problem.where == "deploy.gpus_per_replica"
    assert problem.message.startswith(
        "4 GPU(s) per replica, more than the parallel sizes allow (2: tensorrt_llm: tp_size 2 × pp_size 1"
    )
    assert "the other GPUs would sit idle" in problem.message


def test_too_few_gpus_for_the_engine_is_refused(gpu_repo: Path, tmp_path: Path) -> None:
    err = _refused(gpu_repo, tmp_path / "out", _options(gpus_per_replica=1))
    messages = [str(p) for p in err.problems]
    assert messages[0] == (
        "--gpus: 1 GPU(s) per replica, but the repository needs 2: tensorrt_llm: tp_size 2 × pp_size 1 = 2 GPU(s) "
        "per engine, 1 engine instance(s) on GPUs 0,1; tiny_encoder instance group on GPUs 0"
    )


def test_image_older_than_the_engine_is_refused(gpu_repo: Path, tmp_path: Path) -> None:
    err = _refused(gpu_repo, tmp_path / "out", _options(image="nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3"))
    built_for, problem = err.problems  # the image the repository was built for (24.12), and the engine manifest
    assert built_for.where == "--image" and built_for.message.startswith(f"repository built for {TRTLLM_IMAGE}")
    assert problem.where.endswith("tensorrt_llm/1/engine/engine_manifest.json")
    assert problem.message.startswith(
        "engine built with TensorRT-LLM 0.16.0 but tritonserver:24.11-trtllm-python-py3 ships 0.15.0"
    )


@pytest.mark.parametrize("url", ["s3://models/rag", "gs://models/rag"])
def test_missing_credentials_secret_is_refused(cpu_repo: Path, tmp_path: Path, url: str) -> None:
    err = _refused(cpu_repo, tmp_path / "out", _options(repository_url=url, credentials_secret=None), "helm")
    (problem,) = err.problems
    assert problem.where == "--credentials-secret"
    assert problem.message.startswith(f"missing: {url} needs the name of a Secret")
    assert problem.message.endswith("or --service-account naming one bound to a cloud role (EKS IRSA, GKE Workload "
                                    "Identity)")


@pytest.mark.parametrize("url", ["s3://models/rag", "gs://models/rag"])
@pytest.mark.parametrize("fmt", ["manifests", "helm", "kserve"])
def test_a_service_account_bound_to_a_cloud_role_reads_the_store_without_a_secret(
    cpu_repo: Path, tmp_path: Path, url: str, fmt: str
) -> None:
    """s3:// always wanted static keys in a Secret, and the pods' ServiceAccount could not be named, so EKS IRSA and
    GKE Workload Identity could not be used (deploy audit)."""
    options = _options(repository_url=url, credentials_secret=None, service_account="triton-reader")
    report = deploy_k8s(cpu_repo, tmp_path / "out", options, fmt)  # type: ignore[arg-type]
    docs = load_documents(
        [p.read_text() for p in sorted((tmp_path / "out").rglob("*.yaml")) if "templates" not in p.parts]
    ) if fmt != "helm" else _helm_render(build_values(cpu_repo, options), tmp_path / "chart")
    assert report is not None and any(d["kind"] in ("Deployment", "InferenceService") for d in docs)
    for doc in docs:
        if doc["kind"] in ("Deployment", "InferenceService"):
            spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]["predictor"]
            if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-gateway"):
                continue
            assert spec["serviceAccountName"] == "triton-reader"
            text = json.dumps(spec)
            assert "AWS_ACCESS_KEY_ID" not in text and "key.json" not in text  # no static key is looked for
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]  # the user's, not one made here
    with pytest.raises(DeployError, match="is not a valid ServiceAccount name"):
        build_values(cpu_repo, _options(service_account="Bad_Name"))


def test_every_problem_is_reported_at_once(cpu_repo: Path, tmp_path: Path) -> None:
    err = _refused(
        cpu_repo,
        tmp_path / "out",
        _options(
            image="tritonserver", repository_url="/local/path", namespace="Bad_NS", gateway=True, gpus_per_replica=2
        ),
    )
    assert [p.where for p in err.problems] == [
        "--namespace",
        "--image",
        "--gpus",
        "--repository-url",
        "--gateway-image",
        "--gateway-api-keys-secret",
    ]


def test_repository_not_built_by_tritonforge_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo" / "m").mkdir(parents=True)
    err = _refused(tmp_path / "repo", tmp_path / "out", _options())
    assert "tritonforge.json" in err.problems[0].where


def test_spec_deploy_section_errors_name_the_field() -> None:
    from tritonforge.errors import SpecError
    from tritonforge.spec import parse_spec

    with pytest.raises(SpecError) as caught:
        parse_spec(
            {
                "name": "x",
                "models": {"a": {"kind": "embedding", "checkpoint": "c"}},
                "deploy": {
                    "gpus_per_replica": 0,
                    "shm_size": "2 GB",
                    "autoscaling": {"min_replicas": 5, "max_replicas": 2},
                },
            }
        )
    assert [p.where for p in caught.value.problems] == [
        "deploy.gpus_per_replica",
        "deploy.shm_size",
        "deploy.autoscaling.min_replicas",
    ]


# ------------------------------------------------------------------------------------------- the serving image


def test_image_recipe_adds_the_packages_a_known_image_lacks(cpu_repo: Path, tmp_path: Path) -> None:
    """The cpu runner imports onnxruntime and the tokenizer tokenizers: the trtllm image has tokenizers (through
    transformers) but not onnxruntime; the full -py3 image has neither. Pinned to the versions installed here."""
    from importlib import metadata

    ort = f"onnxruntime=={metadata.version('onnxruntime')}"
    report = deploy_k8s(cpu_repo, tmp_path / "trtllm", _options())
    dockerfile = (tmp_path / "trtllm" / "Dockerfile").read_text()
    assert f"FROM {TRTLLM_IMAGE}\n" in dockerfile and "#   onnxruntime: tiny_encoder\n" in dockerfile
    assert dockerfile.endswith(f"RUN python3 -m pip install --no-cache-dir {ort}\n")
    assert _notes(report) == (f"{TRTLLM_IMAGE} lacks onnxruntime: build Dockerfile and deploy that image instead",)

    full = "nvcr.io/nvidia/tritonserver:24.12-py3"
    deploy_k8s(cpu_repo, tmp_path / "full", _options(image=full))
    tokenizers = f"tokenizers=={metadata.version('tokenizers')}"
    assert (tmp_path / "full" / "Dockerfile").read_text().endswith(f"pip install --no-cache-dir {ort} {tokenizers}\n")


def test_the_dockerfile_pins_the_versions_the_build_recorded(cpu_repo: Path, tmp_path: Path) -> None:
    """Pinned to what was installed where deploy ran: a deploy-only CI job (no onnxruntime there) wrote unpinned
    packages (packaging audit). The build records the versions its checks ran with; deploy pins those."""
    import shutil
    from importlib import metadata

    recorded = json.loads((cpu_repo / "tritonforge.json").read_text())["package_versions"]
    assert recorded["onnxruntime"] == metadata.version("onnxruntime")
    repo = tmp_path / "repo"
    shutil.copytree(cpu_repo, repo)
    info = json.loads((repo / "tritonforge.json").read_text())
    info["package_versions"]["onnxruntime"] = "1.17.3"  # as a build elsewhere recorded it
    (repo / "tritonforge.json").write_text(json.dumps(info))
    deploy_k8s(repo, tmp_path / "out", _options())
    assert (tmp_path / "out" / "Dockerfile").read_text().endswith("pip install --no-cache-dir onnxruntime==1.17.3\n")


def test_an_older_builds_model_py_still_gets_its_packages_from_the_builds_record(
    cpu_repo: Path, tmp_path: Path
) -> None:
    """model.py was matched byte for byte with this tritonforge's only: a repository built before a change to the
    runner got a Dockerfile without onnxruntime. The build records each python model's name; without that record
    (a repository from before it, a hand-written model) the report says which models it could not judge."""
    import json
    import shutil

    older = tmp_path / "older"
    shutil.copytree(cpu_repo, older)
    assert json.loads((older / "tritonforge.json").read_text())["python_models"] == {
        "tiny_encoder": "onnx_runner", "tiny_tokenizer": "tokenizer",
    }
    runner = older / "tiny_encoder" / "1" / "model.py"
    runner.write_text(runner.read_text() + "\n# as an earlier tritonforge shipped it\n")
    lineage = json.loads((runner.parent / "lineage.json").read_text())
    del lineage["files"]  # an earlier tritonforge recorded no file sizes
    (runner.parent / "lineage.json").write_text(json.dumps(lineage))
    report = deploy_k8s(older, tmp_path / "recorded", _options())
    assert "#   onnxruntime: tiny_encoder\n" in (tmp_path / "recorded" / "Dockerfile").read_text()
    assert _notes(report) == (f"{TRTLLM_IMAGE} lacks onnxruntime: build Dockerfile and deploy that image instead",)

    manifest = json.loads((older / "tritonforge.json").read_text())
    del manifest["python_models"]
    (older / "tritonforge.json").write_text(json.dumps(manifest))
    report = deploy_k8s(older, tmp_path / "unrecorded", _options())
    assert "Dockerfile" not in report.files
    assert _notes(report) == ("tiny_encoder: python models whose packages could not be told (model.py not this "
                            "tritonforge's, and no record of it in tritonforge.json): check the image has what they "
                            "import, or rebuild the repository",)


def test_no_recipe_when_the_image_has_everything_or_is_not_known(gpu_repo: Path, cpu_repo: Path, tmp_path: Path) -> None:
    """The gpu layout on its trtllm image needs nothing more (the encoder runs on the image's torch); an image
    tritonforge does not know is the user's to vouch for."""
    report = deploy_k8s(gpu_repo, tmp_path / "gpu", _options())
    assert "Dockerfile" not in report.files and _notes(report) == ()
    for image in ("registry.local/triton-embed:1", "registry.local/tritonserver:24.12-trtllm-python-py3"):
        report = deploy_k8s(cpu_repo, tmp_path / image.split(":")[-1], _options(image=image))
        assert "Dockerfile" not in report.files and _notes(report) == (), image


def test_deploy_never_replaces_its_repository_or_a_foreign_folder(cpu_repo: Path, tmp_path: Path) -> None:
    from tritonforge.errors import RepositoryError

    with pytest.raises(RepositoryError, match="an input of this command"):
        deploy_k8s(cpu_repo, cpu_repo, _options())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "mydata.txt").write_text("keep me")
    with pytest.raises(RepositoryError, match=r"not empty \(mydata.txt\) and not an earlier tritonforge output"):
        deploy_k8s(cpu_repo, mine, _options())
    assert (mine / "mydata.txt").read_text() == "keep me"
    assert (cpu_repo / "tritonforge.json").is_file()
    first = deploy_k8s(cpu_repo, tmp_path / "k8s", _options())
    again = deploy_k8s(cpu_repo, tmp_path / "k8s", _options(), "kserve")  # an earlier output is replaced
    assert first.out == again.out and (again.out / "inferenceservice.yaml").is_file()


def test_replicas_are_one_or_more_and_zero_is_not_the_default(cpu_repo: Path, tmp_path: Path) -> None:
    for bad in (0, -1):
        refused = _refused(cpu_repo, tmp_path / "out", _options(replicas=bad))
        assert any(p.where == "--replicas" and f"{bad}: give 1 to 2147483647" in p.message for p in refused.problems)
    fixed = _repo_with_deploy(cpu_repo, tmp_path, {"autoscaling": {"enabled": False}})
    assert build_values(fixed, _options(replicas=3))["replicas"] == 3
    from typer.testing import CliRunner

    from tritonforge.cli import app

    args = ["deploy", "k8s", str(cpu_repo), "--image", TRTLLM_IMAGE, "--repository-url", "s3://m/r"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "cli"), "--replicas", "-1"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--replicas" in result.output


def test_a_given_name_is_used_as_given_or_refused(cpu_repo: Path, tmp_path: Path) -> None:
    refused = _refused(cpu_repo, tmp_path / "out", _options(name="Bad_Name!"))
    assert [p.message for p in refused.problems if p.where == "--name"] == [
        "'Bad_Name!': use lowercase letters, digits and '-' (e.g. 'bad-name')"
    ]
    assert build_values(cpu_repo, _options(name="good-name"))["name"] == "good-name"


def test_deploy_notes_rate_limiter_resources_the_pods_ignore(cpu_repo: Path, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(cpu_repo, repo)
    assert not [n for n in deploy_k8s(repo, tmp_path / "plain", _options()).notes if "rate-limiter" in n]
    config = next(repo.glob("*_encoder/config.pbtxt"))
    text = config.read_text()
    assert "instance_group {" in text
    config.write_text(text.replace("instance_group {", 'instance_group {\n  rate_limiter { resources { name: "R" count: 1 } }', 1))
    notes = deploy_k8s(repo, tmp_path / "limited", _options()).notes
    assert [n for n in notes if "rate-limiter" in n] == [
        f"{config.parent.name}: instance groups name rate-limiter resources, which tritonserver ignores with its "
        "default --rate-limit=off, as these pods run it; deploy with --rate-limit execution_count (or the spec's "
        "deploy.rate_limit) to apply them (docs/deploy.md)"
    ]


# ------------------------------------------------------------------------------------------- the rate limiter

LIMITS = RateLimit.from_options("execution_count", ["R:2", "G:1:0"])
LIMIT_FLAGS = ["--rate-limit=execution_count", "--rate-limit-resource=R:2", "--rate-limit-resource=G:1:0"]


def _limited_repo(cpu_repo: Path, root: Path, **deploy: Any) -> tuple[Path, Path]:
    """cpu_repo with its encoder's instance group needing 2 of rate-limiter resource R, and ``deploy`` merged into
    the `deploy:` section its tritonforge.json records; returns the repository and the encoder's config."""
    import shutil

    repo = root / "repo"
    shutil.copytree(cpu_repo, repo)
    config = next(repo.glob("*_encoder/config.pbtxt"))
    needs = 'instance_group {\n  rate_limiter { resources { name: "R" count: 2 } }'
    config.write_text(config.read_text().replace("instance_group {", needs, 1))
    info = json.loads((repo / "tritonforge.json").read_text())
    info["deploy"] = {**info["deploy"], **deploy}
    (repo / "tritonforge.json").write_text(json.dumps(info))
    return repo, config


def _triton_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"].get(
        "app.kubernetes.io/component") == "triton")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_rate_limit_flags_reach_the_pods_in_every_format(cpu_repo: Path, tmp_path: Path) -> None:
    """serve's RateLimit, as tritonserver's own flags (RateLimit.server_args), in manifests, Helm values and KServe;
    the note about ignored resources goes, since the pods now apply them."""
    repo, _ = _limited_repo(cpu_repo, tmp_path)
    assert LIMITS.server_args() == LIMIT_FLAGS
    report = deploy_k8s(repo, tmp_path / "k8s", _options(rate_limit=LIMITS))
    assert not [n for n in report.notes if "rate-limiter" in n]
    docs = load_documents((tmp_path / "k8s" / name).read_text() for name in report.files if name.endswith(".yaml"))
    for doc in docs:
        _validate(doc)
    container = _triton_container(docs)
    assert container["command"] == ["tritonserver"]
    assert container["args"][-3:] == LIMIT_FLAGS and container["args"] == report.values["triton"]["args"]
    assert [a for a in container["args"] if "rate-limit" in a] == LIMIT_FLAGS

    deploy_k8s(repo, tmp_path / "chart", _options(rate_limit=LIMITS), "helm")
    helm_values = yaml.safe_load((tmp_path / "chart" / "values.yaml").read_text())
    assert helm_values["triton"]["args"][-3:] == LIMIT_FLAGS  # the chart's deployment.yaml renders triton.args

    deploy_k8s(repo, tmp_path / "kserve", _options(rate_limit=LIMITS), "kserve")
    docs = load_documents([(tmp_path / "kserve" / "inferenceservice.yaml").read_text()])
    for doc in docs:
        _validate(doc)
    model = next(d for d in docs if d["kind"] == "InferenceService")["spec"]["predictor"]["model"]
    assert model["args"] == [
        "--disable-auto-complete-config", "--strict-readiness=true", "--allow-gpu-metrics=false", *LIMIT_FLAGS
    ]


def test_rate_limit_off_adds_no_flag_anywhere(cpu_repo: Path) -> None:
    values = build_values(cpu_repo, _options(rate_limit=RateLimit()))
    assert values == build_values(cpu_repo, _options())
    assert not [a for a in values["triton"]["args"] if "rate-limit" in a]
    isvc = next(d for d in load_documents(render_kserve(values).values()) if d["kind"] == "InferenceService")
    assert not [a for a in isvc["spec"]["predictor"]["model"]["args"] if "rate-limit" in a]


def test_deploy_checks_the_resources_against_the_declared_counts(cpu_repo: Path, tmp_path: Path) -> None:
    """R44 with the pods' rate limiting: Triton would fail the encoder's load with too few copies of R."""
    repo, config = _limited_repo(cpu_repo, tmp_path)
    err = _refused(repo, tmp_path / "out", _options(rate_limit=RateLimit.from_options("execution_count", ["R:1"])))
    assert [(p.where, p.message) for p in err.problems] == [
        (
            str(config),
            'Resource count for "R" is limited to 1 which will prevent scheduling of one or more model instances, '
            "the minimum required count is 2",
        )
    ]
    # without explicit counts core sizes each resource to the largest need: nothing to refuse
    assert "--rate-limit=execution_count" in build_values(repo, _options(rate_limit=RateLimit("execution_count")))[
        "triton"]["args"]


def test_the_spec_s_deploy_rate_limit_is_used_unless_the_options_give_one(cpu_repo: Path, tmp_path: Path) -> None:
    from tritonforge.spec import parse_spec

    spec = parse_spec(
        {
            "name": "x",
            "models": {"a": {"kind": "embedding", "checkpoint": "c"}},
            "deploy": {"rate_limit": "execution_count", "rate_limit_resources": ["R:3", "G:1:0"]},
        }
    )
    assert spec.deploy.rate_limiting() == RateLimit.from_options("execution_count", ["R:3", "G:1:0"])
    recorded = spec.deploy.model_dump(mode="json")  # what the build writes to tritonforge.json
    assert (recorded["rate_limit"], recorded["rate_limit_resources"]) == ("execution_count", ["R:3", "G:1:0"])

    repo, _ = _limited_repo(cpu_repo, tmp_path, rate_limit="execution_count", rate_limit_resources=["R:3"])
    report = deploy_k8s(repo, tmp_path / "spec", _options())
    assert [a for a in report.values["triton"]["args"] if "rate-limit" in a] == [
        "--rate-limit=execution_count", "--rate-limit-resource=R:3"
    ]
    assert not [n for n in report.notes if "rate-limiter" in n]
    # the options replace the spec's mode and resources together: here, off
    report = deploy_k8s(repo, tmp_path / "off", _options(rate_limit=RateLimit()))
    assert not [a for a in report.values["triton"]["args"] if "rate-limit" in a]
    assert [n for n in report.notes if "rate-limiter" in n]
    report = deploy_k8s(repo, tmp_path / "given", _options(rate_limit=LIMITS))
    assert report.values["triton"]["args"][-3:] == LIMIT_FLAGS


def test_spec_rate_limit_errors_name_the_field() -> None:
    from tritonforge.errors import SpecError
    from tritonforge.spec import parse_spec

    def problems(deploy: dict[str, Any]) -> list[str]:
        with pytest.raises(SpecError) as caught:
            parse_spec({"name": "x", "models": {"a": {"kind": "embedding", "checkpoint": "c"}}, "deploy": deploy})
        return [str(p) for p in caught.value.problems]

    assert problems({"rate_limit": "on"}) == [
        "deploy.rate_limit: 'on' is not allowed; expected 'off' or 'execution_count'"
    ]
    assert problems({"rate_limit": "execution_count", "rate_limit_resources": ["R:1", "R", "G:1:-1"]}) == [
        "deploy.rate_limit_resources[1]: --rate-limit-resource 'R': expected '<name>:<count>' or "
        "'<name>:<count>:<device>' (as tritonserver takes it)",
        "deploy.rate_limit_resources[2]: rate-limit resource 'G': device -1 must be a device id (0 or more)",
    ]
    assert problems({"rate_limit_resources": ["R:1"]}) == [
        "deploy.rate_limit_resources: --rate-limit-resource needs --rate-limit=execution_count: with rate limiting "
        "off tritonserver ignores every resource count; pass both, or neither"
    ]


def test_only_the_leader_rank_of_an_mpi_launch_gets_the_rate_limit_flags(gpu_repo: Path) -> None:
    """MPI worker ranks load only the engine and never schedule a request (they block in the tensorrtllm backend
    until the leader shuts down): rate limiting is the leader's, which serves the pod's ports."""
    values = build_values(gpu_repo, _options(rate_limit=LIMITS))
    container = _triton_container(load_documents(render_manifests(values).values()))
    leader, worker = _ranks(container)
    assert leader[-4:] == [*LIMIT_FLAGS, "--backend-config=python,shm-region-prefix-name=prefix0_"]
    assert not [a for a in worker if "rate-limit" in a]


def test_cli_deploy_k8s_takes_serve_s_rate_limit_flags(cpu_repo: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tritonforge.cli import app

    repo, _ = _limited_repo(cpu_repo, tmp_path)
    args = ["deploy", "k8s", str(repo), "--image", "nvcr.io/nvidia/tritonserver:24.12-py3", "--repository-url",
            "s3://models/embed", "--credentials-secret", "creds"]
    limited = [*args, "-o", str(tmp_path / "on"), "--rate-limit", "execution_count",
               "--rate-limit-resource", "R:2", "--rate-limit-resource", "G:1:0"]
    result = CliRunner().invoke(app, limited, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "rate-limiter" not in result.output
    container = _triton_container(load_documents([(tmp_path / "on" / "deployment.yaml").read_text()]))
    assert container["args"][-3:] == LIMIT_FLAGS
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "off")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "instance groups name rate-limiter resources" in result.output
    helped = CliRunner().invoke(app, ["deploy", "k8s", "--help"], env={"COLUMNS": "300"})
    assert helped.exit_code == 0, helped.output  # Rich read the URL help's "[/path]" as markup and crashed
    assert "--rate-limit-resource" in helped.output and "default: the spec's deploy.rate_limit" in helped.output


def test_local_versions_are_pinned_to_an_index_that_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyPI hosts no local versions: the recipe pinned torch==2.13.0+cpu, which `pip install` cannot find there.
    PyTorch's builds come from PyTorch's index; another local build is pinned to its public version."""
    from importlib import metadata

    from tritonforge.deploy import image

    versions = {"torch": "2.13.0+cpu", "faiss-cpu": "1.9.0", "mylib": "1.2+local.3"}
    monkeypatch.setattr(image.metadata, "version", lambda dist: versions[dist] if dist in versions else
                        (_ for _ in ()).throw(metadata.PackageNotFoundError(dist)))
    assert image._pinned("torch", {}) == ("torch==2.13.0+cpu", "https://download.pytorch.org/whl/cpu")
    assert image._pinned("faiss-cpu", {}) == ("faiss-cpu==1.9.0", None)
    assert image._pinned("mylib", {}) == ("mylib==1.2", None)
    assert image._pinned("absent", {}) == ("absent", None)
    # the build's record first (what its checks ran with), with the same rules for local versions
    assert image._pinned("absent", {"absent": "2.13.0+cu130"}) == ("absent==2.13.0", None)
    assert image._pinned("torch", {"torch": "2.12.0+cpu"}) == ("torch==2.12.0+cpu", "https://download.pytorch.org/whl/cpu")


# ------------------------------------------------------------------------ install semantics (k8s audit, 20th session)


def _container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_the_gateway_serves_the_repositorys_own_models_over_every_triton_pod(cpu_repo: Path) -> None:
    """The gateway ran without --model and served examples/rag.yaml's ids, so a repository named otherwise was
    unreachable through it; and it kept one gRPC connection through the ClusterIP Service, so every request of a
    gateway replica went to one Triton pod whatever the autoscaler added."""
    values = build_values(cpu_repo, _options(gateway=True, gateway_image="ghcr.io/a/g:1", gateway_api_keys_secret="k"))
    docs = load_documents(render_manifests(values).values())
    args = _container(docs, "tiny-embed-gateway")["args"]
    assert "--model=embeddings:tiny=embed" in args and "--triton=dns:///tiny-embed-grpc-pods:8001" in args
    headless = next(d for d in docs if d["metadata"]["name"] == "tiny-embed-grpc-pods")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["selector"] == values["selectorLabels"]
    from tritonforge.gateway import GatewayModels

    recorded = GatewayModels.from_build_info(json.loads((cpu_repo / "tritonforge.json").read_text()))
    assert recorded is not None and GatewayModels.parse(recorded.entries()) == recorded


def test_rollouts_leave_the_count_to_the_autoscaler_and_wait_for_slow_loads(cpu_repo: Path, tmp_path: Path) -> None:
    """An applied replicas reset what the HPA had scaled to at every apply; the default progress deadline (600 s)
    called a rollout failed while the start-up probe still allowed 1800 s of engine loading."""
    docs = load_documents(render_manifests(build_values(cpu_repo, _options())).values())
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"] and deployment["spec"]["progressDeadlineSeconds"] == 1800 + 300
    fixed = _repo_with_deploy(cpu_repo, tmp_path, {"replicas": 2, "autoscaling": {"enabled": False}})
    docs = load_documents(render_manifests(build_values(fixed, _options())).values())
    assert next(d for d in docs if d["kind"] == "Deployment")["spec"]["replicas"] == 2


def test_the_gateway_scales_on_its_cpu_when_the_spec_gives_it_room(cpu_repo: Path, tmp_path: Path) -> None:
    """The gateway's Deployment had a fixed 2 replicas, each admitting --max-requests-in-flight of its own: a
    cluster's traffic was capped at two pods' worth whatever Triton's autoscaler added (deploy audit)."""
    gateway = _options(gateway=True, gateway_image="ghcr.io/a/g:1", gateway_api_keys_secret="k")
    docs = load_documents(render_manifests(build_values(cpu_repo, gateway)).values())
    (deployment,) = [d for d in docs if d["metadata"]["name"] == "tiny-embed-gateway" and d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler" and "gateway" in d["metadata"]["name"]]

    repo = _repo_with_deploy(cpu_repo, tmp_path, {"gateway": {
        "min_replicas": 3, "max_replicas": 12, "target_cpu_percent": 60, "cpu": "2", "memory": "128Mi"}})
    docs = load_documents(render_manifests(build_values(repo, gateway)).values())
    (deployment,) = [d for d in docs if d["metadata"]["name"] == "tiny-embed-gateway" and d["kind"] == "Deployment"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count: an apply would reset it
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler" and "gateway" in d["metadata"]["name"]]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tiny-embed-gateway"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    resources = _container(docs, "tiny-embed-gateway")["resources"]
    # utilization is measured against the request; a memory request above its limit would be an invalid pod
    assert resources == {"requests": {"cpu": "2", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}
    for doc in docs:
        _validate(doc)


def _repo_with_deploy(repo: Path, tmp_path: Path, deploy: dict[str, Any]) -> Path:
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    info = json.loads((copy / "tritonforge.json").read_text())
    info["deploy"] = deploy
    (copy / "tritonforge.json").write_text(json.dumps(info))
    return copy


def test_kserve_pods_request_no_more_cpu_than_the_runtimes_limit(cpu_repo: Path) -> None:
    """kserve-tritonserver sets limits.cpu "1"; merged with the InferenceService's request of 2 the predictor's
    pod was invalid (a request above its limit) and never created. The limit is now given with the request."""
    (service,) = [d for d in load_documents(render_kserve(build_values(cpu_repo, _options())).values())
                  if d["kind"] == "InferenceService"]
    resources = service["spec"]["predictor"]["model"]["resources"]
    assert resources["limits"]["cpu"] == resources["requests"]["cpu"] == "2"


def test_mpi_launches_keep_tritons_drain(llmapi_repo: Path) -> None:
    """Open MPI SIGKILLs the ranks 1 s after forwarding SIGTERM: Triton's 30 s drain of in-flight generations was
    cut short. The MCA timeout now matches --exit-timeout-secs."""
    container = build_values(llmapi_repo, _options(image=TRTLLM_IMAGE))["triton"]
    assert container["command"] == ["mpirun"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OMPI_MCA_odls_base_sigkill_timeout"] == env["PRTE_MCA_odls_base_sigkill_timeout"] == "30"
    assert "--exit-timeout-secs=30" in " ".join(container["args"])


@pytest.mark.parametrize(
    ("options", "fmt", "where", "says"),
    [
        ({"name": "7b-chat"}, "manifests", "--name", "starting with a letter"),
        ({"name": "a" * 40, "namespace": "n" * 21}, "kserve", "--name", "over a DNS label's 63"),
        ({"repository_url": "pvc://models/../../etc"}, "manifests", "--repository-url", "without '.' or '..'"),
        ({"gateway": True, "gateway_image": "bad image", "gateway_api_keys_secret": "k"}, "manifests",
         "--gateway-image", ""),
        ({"gateway": True, "gateway_image": "ghcr.io/a/g:1", "gateway_api_keys_secret": "Bad_Secret"}, "manifests",
         "--gateway-api-keys-secret", "not a valid Secret name"),
    ],
)
def test_names_kubernetes_or_kserve_would_refuse_are_refused_first(
    cpu_repo: Path, tmp_path: Path, options: dict[str, Any], fmt: str, where: str, says: str
) -> None:
    with pytest.raises(DeployError) as caught:
        deploy_k8s(cpu_repo, tmp_path / "out", _options(**options), fmt)  # type: ignore[arg-type]
    assert [p.where for p in caught.value.problems] == [where] and says in caught.value.problems[0].message
    assert not (tmp_path / "out").exists()


def test_kserve_from_gcs_says_which_secret_key_kserve_reads(cpu_repo: Path, tmp_path: Path) -> None:
    report = deploy_k8s(cpu_repo, tmp_path / "out", _options(repository_url="gs://models/p"), "kserve")
    assert any("gcloud-application-credentials.json" in n for n in report.notes)


def test_image_pull_secrets_reach_every_pod_in_every_format(cpu_repo: Path, tmp_path: Path) -> None:
    """Found by a k8s audit: no option named the Secret to pull a private registry's images with, and deploy's own
    Dockerfile recipe is meant to be pushed to one."""
    options = _options(gateway=True, gateway_image="registry.corp/ml/gw:1", gateway_api_keys_secret="k",
                       image_pull_secrets=("corp-registry",))
    values = build_values(cpu_repo, options)
    docs = load_documents(render_manifests(values).values())
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    assert len(pods) == 2 and all(p["imagePullSecrets"] == [{"name": "corp-registry"}] for p in pods)
    for doc in docs:
        _validate(doc)
    (service,) = [d for d in load_documents(render_kserve(build_values(cpu_repo, _options(
        image_pull_secrets=("corp-registry",)))).values()) if d["kind"] == "InferenceService"]
    assert service["spec"]["predictor"]["imagePullSecrets"] == [{"name": "corp-registry"}]
    _validate(service)
    with pytest.raises(DeployError, match="'Bad_Name' is not a valid Secret name"):
        deploy_k8s(cpu_repo, tmp_path / "out", _options(image_pull_secrets=("Bad_Name",)))


def test_deploy_needs_only_the_deploy_extra(cpu_repo: Path) -> None:
    """Found by a code-health review: rendering the gateway's --model flags imported tritonforge.gateway, whose
    package imports starlette, which the `deploy` extra does not install: `deploy k8s` failed on every call there."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from tritonforge.deploy.k8s import build_values\n"
        "from tritonforge.deploy.options import DeployOptions\n"
        f"v = build_values({str(cpu_repo)!r}, DeployOptions(image={TRTLLM_IMAGE!r}, repository_url='s3://models/r', "
        "credentials_secret='s', gateway=True, gateway_image='ghcr.io/a/g:1', gateway_api_keys_secret='k'))\n"
        "assert '--model=embeddings:tiny=embed' in v['gateway']['args'], v['gateway']['args']\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_kserve_with_a_gateway_is_refused_not_dropped(cpu_repo: Path, tmp_path: Path) -> None:
    """Found by a docs audit: --format kserve --gateway wrote the InferenceService only and said nothing."""
    with pytest.raises(DeployError, match="--format kserve renders the InferenceService only"):
        deploy_k8s(cpu_repo, tmp_path / "out", _options(gateway=True, gateway_image="ghcr.io/a/g:1",
                                                        gateway_api_keys_secret="k"), "kserve")
    assert not (tmp_path / "out").exists()


def test_monitor_labels_reach_the_servicemonitor_and_bad_ones_are_refused(cpu_repo: Path, tmp_path: Path) -> None:
    """kube-prometheus-stack's Prometheus picks ServiceMonitors by `release: <its release>`: without a way to add
    that label, Triton's metrics (and the autoscaler's queue-time metric) were never scraped there."""
    options = _options(monitor_labels=("release=kube-prometheus-stack", "team=ml"))
    docs = load_documents(render_manifests(build_values(cpu_repo, options)).values())
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    _validate(monitor)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["team"] == "ml"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == "tiny-embed"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert "release" not in deployment["metadata"]["labels"]  # the ServiceMonitor's only
    for bad, says in (("release", "give key=value"), ("-x=1", "is not a label key"), ("a=b c", "not a label value"),
                      ("app.kubernetes.io/name=x", "tritonforge sets"), ("Bad_Prefix/x=1", "is not a label key")):
        with pytest.raises(DeployError, match=re.escape(says)):
            build_values(cpu_repo, _options(monitor_labels=(bad,)))
    with pytest.raises(DeployError, match="given more than once"):
        build_values(cpu_repo, _options(monitor_labels=("a=1", "a=2")))
    with pytest.raises(DeployError, match="renders no ServiceMonitor"):
        deploy_k8s(cpu_repo, tmp_path / "kserve", options, "kserve")
    assert not (tmp_path / "kserve").exists()


def test_an_admin_key_secret_guards_tritons_admin_apis_in_the_cluster(cpu_repo: Path, tmp_path: Path) -> None:
    """Security review: the cluster's Triton ran without restricted APIs, so any pod reaching its Services could use
    shared memory, logging and trace. --admin-key-secret guards them as `tritonforge serve`'s admin key does, the
    key read from the Secret by Kubernetes' $(VAR) expansion (it never appears in the manifests)."""
    options = _options(admin_key_secret="triton-admin")
    values = build_values(cpu_repo, options)
    docs = load_documents(render_manifests(values).values())
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    _validate(deployment)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    restricted = "model-repository,shared-memory,logging,trace:tritonforge-admin-key=$(TRITON_ADMIN_KEY)"
    assert f"--http-restricted-api={restricted}" in container["args"]
    assert f"--grpc-restricted-protocol={restricted}" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "triton-admin", "key": "admin-key"}
    service = next(d for d in load_documents(render_kserve(values).values()) if d["kind"] == "InferenceService")
    _validate(service)
    model = service["spec"]["predictor"]["model"]
    assert f"--http-restricted-api={restricted}" in model["args"] and model["env"][0]["name"] == "TRITON_ADMIN_KEY"
    report = deploy_k8s(cpu_repo, tmp_path / "open", _options())
    assert any("--admin-key-secret guards them" in n for n in report.notes), report.notes
    guarded = deploy_k8s(cpu_repo, tmp_path / "guarded", options)
    assert not any("--admin-key-secret" in n for n in guarded.notes)
    with pytest.raises(DeployError, match="'Bad_Secret' is not a valid Secret name"):
        build_values(cpu_repo, _options(admin_key_secret="Bad_Secret"))


def _llm_repo(root: Path, decoder: Path, target: str, **llmapi: Any) -> Path:
    """A repository of one chat model on the default runtime (llmapi): on cpu the CPU engine, on gpu upstream's
    LLM API python model."""
    from tritonforge.build import plan_repository
    from tritonforge.repository import write_repository
    from tritonforge.spec import parse_spec

    chat = {"kind": "llm", "checkpoint": str(decoder), **({"llmapi": llmapi} if llmapi else {})}
    spec = parse_spec({"name": "chat", "target": target, "models": {"chat": chat},
                       "deploy": {"autoscaling": {"target_waiting_requests": 3}},
                       **({"image": LLMAPI_IMAGE} if target == "gpu" else {})})
    files, _, _ = plan_repository(spec, engine_plans=[])
    return write_repository(files, root)


def test_llm_engines_scale_on_the_requests_waiting_in_their_own_queue(
    decoder: Path, gpu_repo: Path, tmp_path: Path
) -> None:
    """An LLM engine takes every request at once, so Triton's queue time stayed near zero while chats waited in
    the engine's queue, and the autoscaler never scaled a chat deployment (k8s audit). Engines that publish
    TensorRT-LLM's backlog gauge (the CPU engine, TensorRT-LLM's C++ backend) are scaled on it; the LLM API's
    python model publishes none, and deploy says so."""
    for repo, engine in ((_llm_repo(tmp_path / "cpu", decoder, "cpu"), "tensorrt_llm"), (gpu_repo, "tensorrt_llm")):
        docs = load_documents(render_manifests(build_values(repo, _options())).values())
        for doc in docs:
            _validate(doc)
        hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
        by_model = {m["pods"]["metric"]["selector"]["matchLabels"]["model"]: m["pods"] for m in hpa["spec"]["metrics"]}
        assert by_model[engine]["metric"]["name"] == "trtllm_waiting_requests"
        assert by_model["preprocessing"]["metric"]["name"] == "triton_queue_time_per_request_us"
        adapter = next(d for d in docs if d["kind"] == "ConfigMap")
        rules = {r["name"]["as"]: r for r in yaml.safe_load(adapter["data"]["config.yaml"])["rules"]}
        waiting = rules["trtllm_waiting_requests"]
        assert waiting[
            "seriesQuery"] == 'nv_trt_llm_request_metrics{namespace!="",pod!="",model!="",request_type="waiting"}'
        assert 'avg_over_time(nv_trt_llm_request_metrics{request_type="waiting",<<.LabelMatchers>>}[1m])' in waiting[
            "metricsQuery"]
    assert by_model[engine]["target"]["averageValue"] == "2"  # gpu_repo: the default
    cpu = build_values(_llm_repo(tmp_path / "cpu2", decoder, "cpu"), _options())
    assert cpu["autoscaling"]["metrics"][-1]["pods"]["target"]["averageValue"] == "3"  # the spec's

    # the LLM API's model publishes it from LLM()'s iteration statistics (model.yaml's enable_iter_perf_stats)
    llmapi_values = build_values(_llm_repo(tmp_path / "gpu-stats", decoder, "gpu"), _options(image=LLMAPI_IMAGE))
    by_model = {m["pods"]["metric"]["selector"]["matchLabels"]["model"]: m["pods"]
                for m in llmapi_values["autoscaling"]["metrics"]}
    assert by_model["tensorrt_llm"]["metric"]["name"] == "trtllm_waiting_requests"
    llmapi = _llm_repo(tmp_path / "gpu", decoder, "gpu", enable_iter_perf_stats=False)  # without them it cannot
    values = build_values(llmapi, _options(image=LLMAPI_IMAGE))
    assert {m["pods"]["metric"]["name"] for m in values["autoscaling"]["metrics"]} == {
        "triton_queue_time_per_request_us"}
    assert len(values["prometheusAdapter"]["rules"]["rules"]) == 1
    report = deploy_k8s(llmapi, tmp_path / "out", _options(image=LLMAPI_IMAGE))
    assert any(n.startswith("tensorrt_llm: the LLM API's model publishes no backlog") for n in report.notes)
    # and how the rules reach the adapter, which nothing rendered does (k8s audit: the HPA started broken)
    assert any("merge the rules in the ConfigMap chat-prometheus-adapter-rules" in n for n in report.notes)


def test_pods_drain_before_they_stop_and_spread_over_nodes(cpu_repo: Path, gpu_repo: Path) -> None:
    """Triton and the gateway stopped taking connections at SIGTERM while Services still routed to them, and the
    pods' grace periods did not cover their drains (k8s audit): both wait in preStop, then drain within their grace.
    Replicas prefer other nodes (Triton: other zones too), and the gateway has a disruption budget of its own."""
    import inspect

    from tritonforge.deploy.gateway_workload import DRAIN_SECONDS
    from tritonforge.deploy.pods import PRESTOP_SECONDS
    from tritonforge.gateway.listen import GatewayServer
    from tritonforge.spec import DeploySettings

    assert inspect.signature(GatewayServer).parameters["grace"].default == DRAIN_SECONDS
    options = _options(gateway=True, gateway_image="ghcr.io/acme/tritonforge:0.1.0", gateway_api_keys_secret="k")
    docs = load_documents(render_manifests(build_values(cpu_repo, options)).values())
    for doc in docs:
        _validate(doc)
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"}
    triton, gateway = pods["tiny-embed"], pods["tiny-embed-gateway"]
    for pod, drain in ((triton, DeploySettings().drain_seconds), (gateway, DRAIN_SECONDS)):
        (container,) = pod["containers"]
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SECONDS)]
        assert pod["terminationGracePeriodSeconds"] >= PRESTOP_SECONDS + drain + 5
    keys = {c["topologyKey"] for c in triton["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert [c["whenUnsatisfiable"] for c in gateway["topologySpreadConstraints"]] == ["ScheduleAnyway"]
    selector = gateway["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
    budget = next(d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("gateway"))
    assert budget["spec"]["selector"]["matchLabels"] == selector
    assert "cpu" not in build_values(gpu_repo, _options())["triton"]["resources"]["limits"]  # GPU pods: unthrottled


def test_the_gateways_metrics_are_scraped_on_a_keyless_port_the_api_service_does_not_expose(cpu_repo: Path) -> None:
    """The gateway's /metrics needs an API key and only Triton's were scraped (k8s audit): the gateway serves them
    on --metrics-port, a Service of their own carries them, and a ServiceMonitor (with the monitor labels) selects it."""
    options = _options(gateway=True, gateway_image="ghcr.io/acme/tritonforge:0.1.0", gateway_api_keys_secret="k",
                       monitor_labels=("release=kps",))
    docs = load_documents(render_manifests(build_values(cpu_repo, options)).values())
    for doc in docs:
        _validate(doc)
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway"))
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=9090" in container["args"]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert [p["name"] for p in services["tiny-embed-gateway"]["spec"]["ports"]] == ["http"]  # the API's: no metrics
    metrics = services["tiny-embed-gateway-metrics"]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == "tiny-embed-gateway")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert metrics["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"][0]["port"] == metrics["spec"]["ports"][0]["name"]
    triton_monitor = next(d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == "tiny-embed")
    selector = triton_monitor["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= metrics["metadata"]["labels"].items()  # each monitor scrapes its own Service


def test_a_network_policy_keeps_tritons_inference_ports_to_the_gateway_and_named_clients(
    cpu_repo: Path, tmp_path: Path
) -> None:
    """Any pod reaching Triton's Services ran inference around the gateway's keys and limits (k8s audit): with
    deploy.network_policy, only the gateway's pods (gRPC) and the named clients (HTTP, gRPC) reach them; the metrics
    port stays open for Prometheus. Nothing allowed to call Triton is refused before anything is written."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(cpu_repo, repo)
    info = json.loads((repo / "tritonforge.json").read_text())
    info["deploy"]["network_policy"] = {"enabled": True, "client_namespaces": ["apps"]}
    (repo / "tritonforge.json").write_text(json.dumps(info))
    assert "networkpolicy.yaml" not in render_manifests(build_values(cpu_repo, _options()))  # off by default

    options = _options(gateway=True, gateway_image="ghcr.io/acme/tritonforge:0.1.0", gateway_api_keys_secret="k")
    docs = load_documents(render_manifests(build_values(repo, options)).values())
    for doc in docs:
        _validate(doc)
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] == "Deployment"}
    triton, gateway = pods["tiny-embed"], pods["tiny-embed-gateway"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= triton["metadata"]["labels"].items()
    by_port = {tuple(p["port"] for p in rule["ports"]): rule.get("from") for rule in policy["spec"]["ingress"]}
    (from_gateway,) = by_port[("grpc",)]
    assert from_gateway["podSelector"]["matchLabels"].items() <= gateway["metadata"]["labels"].items()
    assert by_port[("http", "grpc")] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}]
    assert by_port[("metrics",)] is None  # from anywhere
    container_ports = {p["name"] for p in triton["spec"]["containers"][0]["ports"]}
    assert {p for ports in by_port for p in ports} <= container_ports  # named ports the container declares

    with pytest.raises(DeployError, match="renders the InferenceService only, no NetworkPolicy"):
        deploy_k8s(repo, tmp_path / "kserve", _options(), "kserve")  # it was dropped without a word (review)
    assert not (tmp_path / "kserve").exists()
    info["deploy"]["network_policy"] = {"enabled": True}
    (repo / "tritonforge.json").write_text(json.dumps(info))
    with pytest.raises(DeployError, match="nothing may call Triton"):
        build_values(repo, _options())
    info["deploy"]["network_policy"] = {"enabled": True, "client_namespaces": ["Bad_NS"]}
    (repo / "tritonforge.json").write_text(json.dumps(info))
    with pytest.raises(DeployError, match=r"network_policy\.client_namespaces"):
        build_values(repo, _options())


def test_a_new_build_or_promotion_changes_the_pod_template_so_apply_rolls_the_pods(
    cpu_repo: Path, tmp_path: Path
) -> None:
    """Pods read the repository only at start: a push and a re-render changed nothing in the template, so no pod
    rolled until one restarted, and replicas then served different releases (k8s audit). The template carries a
    digest of what the repository serves."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(cpu_repo, repo)

    def revision() -> str:
        docs = load_documents(render_manifests(build_values(repo, _options())).values())
        template = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
        return str(template["metadata"]["annotations"]["tritonforge.dev/repository-revision"])

    first = revision()
    assert len(first) == 16 and revision() == first  # the same repository: the same template, no rollout
    config = repo / "tiny_encoder" / "config.pbtxt"
    original = config.read_text()
    config.write_text(original + 'parameters { key: "note" value { string_value: "changed" } }\n')
    assert revision() != first
    config.write_text(original)
    assert revision() == first
    lineage = next(repo.glob("tiny_encoder/*/lineage.json"))
    lineage.write_text(lineage.read_text().replace("{", '{"note": "a new artifact",', 1))
    assert revision() != first


def test_a_release_prefix_must_be_this_repositorys_release(cpu_repo: Path, tmp_path: Path) -> None:
    """Pods read the repository at start: from a prefix pushed again in place, a pod added later serves whatever it
    holds then. `push --release` writes <prefix>/<revision> once; deploy refuses a release URL naming another
    revision than the repository it renders (its pods would run other configs than the template's), and notes a
    plain prefix."""
    from tritonforge.deploy.k8s import REVISION_ANNOTATION
    from tritonforge.deploy.revision import repository_revision

    revision = repository_revision(cpu_repo)
    plain = deploy_k8s(cpu_repo, tmp_path / "plain", _options())
    assert [n for n in plain.notes if "push --release" in n and "s3://models/rag is read by each pod" in n]
    released = deploy_k8s(cpu_repo, tmp_path / "released", _options(repository_url=f"s3://models/rag/{revision}"))
    assert not [n for n in released.notes if "push --release" in n]
    assert released.values["podAnnotations"][REVISION_ANNOTATION] == revision
    with pytest.raises(DeployError, match=(
        rf"--repository-url: s3://models/rag/0123456789abcdef names release 0123456789abcdef, but {cpu_repo} is "
        rf"release {revision}: render from the repository pushed there")):
        deploy_k8s(cpu_repo, tmp_path / "other", _options(repository_url="s3://models/rag/0123456789abcdef"))
    assert not (tmp_path / "other").exists()
    gcs = deploy_k8s(cpu_repo, tmp_path / "gcs", _options(repository_url="gs://models/rag"))
    (note,) = [n for n in gcs.notes if "is read by each pod" in n]
    assert "gcloud storage rsync" in note and f"(this repository: {revision})" in note  # push writes S3 only
    pvc = deploy_k8s(cpu_repo, tmp_path / "pvc", _options(repository_url="pvc://store/rag", credentials_secret=None))
    assert not [n for n in pvc.notes if "push --release" in n]  # a volume is the operator's to version


def test_service_monitors_can_be_left_out_for_a_cluster_without_prometheus_operator(cpu_repo: Path) -> None:
    """`kubectl apply -f k8s/` failed on the ServiceMonitor kind where prometheus-operator is not installed, with no
    way to leave it out of the manifests (deploy audit)."""
    gateway = {"gateway": True, "gateway_image": "ghcr.io/acme/tritonforge:0.1.0", "gateway_api_keys_secret": "k"}
    docs = load_documents(render_manifests(build_values(cpu_repo, _options(**gateway))).values())
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceMonitor"] == ["tiny-embed", "tiny-embed-gateway"]
    off = load_documents(render_manifests(build_values(cpu_repo, _options(service_monitor=False, **gateway))).values())
    assert [d for d in off if d["kind"] == "ServiceMonitor"] == []
    assert {d["kind"] for d in off} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}  # the rest stays
    with pytest.raises(DeployError, match="labels the ServiceMonitor, which --no-service-monitor"):
        build_values(cpu_repo, _options(service_monitor=False, monitor_labels=("release=x",)))
    from tritonforge.spec import DeploySettings

    assert DeploySettings.model_validate({"service_monitor": False}).service_monitor is False


def test_triton_runs_as_the_user_deploy_run_as_user_names(cpu_repo: Path, tmp_path: Path) -> None:
    """Pod Security's restricted level (or a Kyverno/Gatekeeper rule) refuses a root pod, and there was no way to
    run Triton as the NGC images' triton-server user (uid 1000) as NVIDIA's own charts do (deploy audit)."""
    docs = load_documents(render_manifests(build_values(cpu_repo, _options())).values())
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert "securityContext" not in pod and "runAsUser" not in pod["containers"][0]["securityContext"]  # the image's
    values = build_values(_repo_with_deploy(cpu_repo, tmp_path, {"run_as_user": 1000}), _options())
    for render in (render_manifests(values), None):
        if render is None:  # Helm's own engine, when the test extra has it
            pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")
            docs = _helm_render(values, tmp_path / "chart")
        else:
            docs = load_documents(render.values())
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "tiny-embed")
        _validate(deployment)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"] == {"fsGroup": 1000}
        assert {k: pod["containers"][0]["securityContext"][k] for k in ("runAsNonRoot", "runAsUser", "runAsGroup")} == {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000}
    root = _repo_with_deploy(cpu_repo, tmp_path / "root", {"run_as_user": 0})  # the default already: not a user to name
    with pytest.raises(DeployError, match="run_as_user"):
        build_values(root, _options())


def test_deploy_drain_seconds_sets_tritons_drain_and_the_pod_s_grace(cpu_repo: Path, tmp_path: Path) -> None:
    """The drain was fixed at 30 s (60 s of grace): a streamed generation longer than that was cut at every rollout
    or scale-down (deploy audit)."""
    from tritonforge.deploy.pods import PRESTOP_SECONDS

    values = build_values(_repo_with_deploy(cpu_repo, tmp_path, {"drain_seconds": 300}), _options())
    assert "--exit-timeout-secs=300" in values["triton"]["args"]
    deployment = next(d for d in load_documents(render_manifests(values).values()) if d["kind"] == "Deployment")
    _validate(deployment)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == PRESTOP_SECONDS + 300 + 20
    none = _repo_with_deploy(cpu_repo, tmp_path / "none", {"drain_seconds": 0})
    with pytest.raises(DeployError, match="drain_seconds"):
        build_values(none, _options())



def test_gpu_repositories_say_the_driver_their_image_needs(gpu_repo: Path, cpu_repo: Path, tmp_path: Path) -> None:
    """deploy k8s says the NVIDIA driver the pods' image needs on the GPU nodes (compatibility.md's CUDA Driver
    version for its release): nothing here can check the nodes, and an older driver fails only at the first GPU call."""
    notes = deploy_k8s(gpu_repo, tmp_path / "gpu", _options()).notes  # 24.12: CUDA 12.6.3, driver 560.35.05
    assert [n for n in notes if "NVIDIA driver" in n] == [
        f"{TRTLLM_IMAGE} is built on CUDA 12.6.3: its GPU nodes need NVIDIA driver 560.35.05 or later (Triton's "
        "compatibility matrix for 24.12; NVIDIA's release notes for that release name the older driver branches "
        "data center GPUs may use through CUDA forward compatibility)"]
    notes = deploy_k8s(cpu_repo, tmp_path / "cpu", _options(image="nvcr.io/nvidia/tritonserver:24.12-py3")).notes
    assert not [n for n in notes if "NVIDIA driver" in n]


def _llmapi_built_repo(root: Path, decoder: Path, deploy: dict[str, Any]) -> Path:
    """A gpu repository built on the LLM API path (LLMAPI_IMAGE): tensorrt_llm/1/checkpoint ships the weights."""
    from tritonforge.build import plan_repository
    from tritonforge.repository import write_repository
    from tritonforge.spec import parse_spec

    spec = parse_spec({"name": "chat-gpu", "target": "gpu", "image": LLMAPI_IMAGE, "deploy": deploy,
                       "models": {"chat": {"kind": "llm", "checkpoint": str(decoder), "max_input_len": 64,
                                           "max_seq_len": 128}}})
    files, _, _ = plan_repository(spec)
    return write_repository(files, root)


def test_a_memory_limit_below_the_checkpoints_weights_is_noted(decoder: Path, tmp_path: Path) -> None:
    """deploy.memory was 8Gi whatever the checkpoint, and nothing said when the LLM's weights, read through host
    memory as it loads, were larger: the pod was OOM-killed at start. A note names both figures (not a refusal)."""
    from tritonforge.deploy.gpu_notes import checkpoint_weight_bytes

    weights = checkpoint_weight_bytes(decoder)
    assert weights == (decoder / "model.safetensors").stat().st_size > 100 * 1024  # config and tokenizer not counted
    small = _llmapi_built_repo(tmp_path / "small", decoder, {"memory": "100Ki", "shm_size": "10Ki"})
    shipped = small / "tensorrt_llm" / "1" / "checkpoint"
    assert checkpoint_weight_bytes(shipped) == weights
    notes = [n for n in deploy_k8s(small, tmp_path / "out-small", _options(image=LLMAPI_IMAGE)).notes
             if "OOM-killed" in n]
    assert notes == [
        f"tensorrt_llm: its checkpoint's weights are {weights / 1024:.1f} KiB on disk, more than the pod's memory "
        "limit deploy.memory 100Ki (100.0 KiB): the LLM reads them through host memory while it loads, so the pod "
        "may be OOM-killed at start; raise deploy.memory above the weights' size (plus Triton's own and /dev/shm's "
        "share)"]
    roomy = _llmapi_built_repo(tmp_path / "roomy", decoder, {})  # the default 8Gi is above the weights: no note
    assert not [n for n in deploy_k8s(roomy, tmp_path / "out-roomy", _options(image=LLMAPI_IMAGE)).notes
                if "OOM-killed" in n]


def test_an_aws_region_typo_is_refused_and_kserve_is_told_the_region(cpu_repo: Path, tmp_path: Path) -> None:
    """--region was taken as given: 'us-east1' reached AWS_DEFAULT_REGION and failed in the pod at Triton's start;
    KServe's storage initializer reads the region from its Secret's annotation, which nothing mentioned (deploy
    audit). An S3-compatible server takes any name it is set to."""
    with pytest.raises(DeployError, match=r"--region: 'us-east1' is not an AWS region name \(e\.g\. us-east-1"):
        deploy_k8s(cpu_repo, tmp_path / "out", _options(region="us-east1"))
    assert not (tmp_path / "out").exists()
    for region in ("eu-west-3", "us-gov-west-1", "ap-southeast-2"):
        assert build_values(cpu_repo, _options(region=region))["modelRepository"] is not None
    minio = _options(repository_url="s3://minio.local:9000/models/rag", region="garage")
    env = {e["name"]: e.get("value") for e in build_values(cpu_repo, minio)["triton"]["env"]}
    assert env["AWS_DEFAULT_REGION"] == "garage"
    report = deploy_k8s(cpu_repo, tmp_path / "kserve", _options(region="eu-west-3"), "kserve")
    assert any("annotate the credentials Secret with serving.kserve.io/s3-region: eu-west-3" in n for n in report.notes)
    irsa = deploy_k8s(cpu_repo, tmp_path / "irsa", _options(region="eu-west-3", credentials_secret=None,
                                                           service_account="models-reader"), "kserve")
    assert any("annotate the ServiceAccount models-reader with serving.kserve.io/s3-region" in n for n in irsa.notes)


def test_the_charts_app_version_is_the_images_tag_with_a_digest_beside_it() -> None:
    from tritonforge.deploy.k8s import app_version

    digest = "sha256:" + "a" * 64
    assert app_version(f"nvcr.io/nvidia/tritonserver:26.07-py3@{digest}") == "26.07-py3"  # was the digest's hex
    assert app_version(f"registry.corp:5000/ml/triton@{digest}") == digest
    assert app_version("registry.corp:5000/ml/triton:1.2") == "1.2"
    assert app_version("registry.corp:5000/ml/triton") == "latest"
