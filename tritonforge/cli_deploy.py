"""`tritonforge deploy k8s` and `tritonforge push`: render cluster deployments of a built repository and upload it
to an object store, thin over tritonforge.deploy. cli.py adds them to the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tritonforge.cli_output import console, err_console, styled
from tritonforge.cli_output import fail as _fail
from tritonforge.cli_paths import path_arg
from tritonforge.errors import TritonForgeError

_RATE_LIMIT_HELP = ("tritonserver's --rate-limit: off (Triton's default) or execution_count (instances wait for the "
                    "resources their instance group names)")
RateLimitOpt = Annotated[str, typer.Option(help=_RATE_LIMIT_HELP)]
# deploy's default is None, not off: a flag not given leaves the spec's deploy.rate_limit in force
DeployRateLimitOpt = Annotated[
    str | None, typer.Option(help=_RATE_LIMIT_HELP + " (default: the spec's deploy.rate_limit)")
]
RateLimitResourceOpt = Annotated[
    list[str] | None, typer.Option(help="tritonserver's --rate-limit-resource=<name>:<count>[:<device>] (repeatable)")
]

deploy_app = typer.Typer(no_args_is_help=True, help="Render cluster deployments of a built repository.",
                         rich_markup_mode=None)  # as the main app's (cli.py)


@deploy_app.command("k8s")
def deploy_k8s(
    repo: Annotated[Path, typer.Argument(help="model repository built by `tritonforge build`", parser=path_arg)],
    image: Annotated[str, typer.Option(help="serving image: nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3")],
    repository_url: Annotated[
        str,
        typer.Option(
            # no [optional] parts: Rich reads "[/path]" in help text as a closing tag and --help crashed
            help="where pods read the repository: s3://bucket/prefix, s3://host:port/bucket/prefix, "
            "gs://bucket/prefix, pvc://claim or pvc://claim/path"
        ),
    ],
    out: Annotated[
        Path, typer.Option("-o", "--out", help="folder to write (replaced only when all is valid)", parser=path_arg)
    ],
    fmt: Annotated[str, typer.Option("--format", help="manifests, helm or kserve")] = "manifests",
    name: Annotated[str | None, typer.Option(help="resource name (default: the spec's name)")] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace")] = "default",
    credentials_secret: Annotated[
        str | None, typer.Option(help="Secret with the object-store credentials (required for s3:// and gs://)")
    ] = None,
    region: Annotated[str, typer.Option(help="AWS_DEFAULT_REGION for s3://")] = "us-east-1",
    replicas: Annotated[int | None, typer.Option(min=1, help="default: the spec's deploy.replicas")] = None,
    gpus: Annotated[
        int | None, typer.Option(min=1, help="GPUs per replica (default: what the repository needs)")
    ] = None,
    gateway: Annotated[bool, typer.Option("--gateway/--no-gateway", help="also deploy the OpenAI gateway")] = False,
    gateway_image: Annotated[str | None, typer.Option(help="image with tritonforge\\[gateway]")] = None,
    gateway_api_keys_secret: Annotated[str | None, typer.Option(help="Secret holding the gateway's API keys")] = None,
    image_pull_secret: Annotated[
        list[str] | None,
        typer.Option("--image-pull-secret", help="Secret to pull the images with (a private registry), repeatable"),
    ] = None,
    admin_key_secret: Annotated[str | None, typer.Option(
        help="Secret whose key admin-key guards Triton's admin APIs (shared memory, logging, trace)")] = None,
    monitor_label: Annotated[
        list[str] | None,
        typer.Option("--monitor-label", help="key=value label for the ServiceMonitor, repeatable (kube-prometheus-"
                     "stack's Prometheus picks release=<its release>)"),
    ] = None,
    service_account: Annotated[str | None, typer.Option(
        help="ServiceAccount Triton's pods run as: one bound to a cloud role (EKS IRSA, GKE Workload Identity) "
             "reads s3:// or gs:// without --credentials-secret",
    )] = None,
    service_monitor: Annotated[bool | None, typer.Option(
        "--service-monitor/--no-service-monitor",
        help="prometheus-operator ServiceMonitors (default: the spec's deploy.service_monitor, true); off on a cluster "
             "without prometheus-operator, where kubectl apply fails on the unknown kind",
    )] = None,
    rate_limit: DeployRateLimitOpt = None,
    rate_limit_resource: RateLimitResourceOpt = None,
) -> None:
    """Render a Deployment, Services, ServiceMonitor, HPA, PDB (+ gateway) as manifests, a Helm chart or KServe."""
    from tritonforge.deploy.k8s import DeployOptions
    from tritonforge.deploy.k8s import deploy_k8s as render_deploy
    from tritonforge.validator import RateLimit

    try:  # serve's parsing and errors; the flags, when given, replace the spec's mode and resources together
        given = rate_limit is not None or rate_limit_resource
        limits = RateLimit.from_options(rate_limit or "off", rate_limit_resource or ()) if given else None
    except TritonForgeError as err:
        _fail(err)
    options = DeployOptions(
        image=image,
        repository_url=repository_url,
        name=name,
        namespace=namespace,
        credentials_secret=credentials_secret,
        region=region,
        replicas=replicas,
        gpus_per_replica=gpus,
        gateway=gateway,
        gateway_image=gateway_image,
        gateway_api_keys_secret=gateway_api_keys_secret,
        rate_limit=limits,
        image_pull_secrets=tuple(image_pull_secret or ()),
        monitor_labels=tuple(monitor_label or ()),
        admin_key_secret=admin_key_secret,
        service_monitor=service_monitor,
        service_account=service_account,
    )
    try:
        report = render_deploy(repo, out, options, fmt)  # type: ignore[arg-type]
    except TritonForgeError as err:
        _fail(err)
    console.print(styled("green", "wrote", f" {report.out} ({report.format}): " + ", ".join(report.files)))
    for note in report.notes:
        console.print(styled("yellow", "note:", f" {note}"))


def push(
    repo: Annotated[Path, typer.Argument(help="model repository folder", parser=path_arg)],
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix or s3://host:port/bucket/prefix")],
    endpoint_url: Annotated[str | None, typer.Option(help="S3 endpoint (default: from the URL, or AWS)")] = None,
    delete: Annotated[
        bool, typer.Option("--delete/--no-delete", help="remove objects a previous push sent that are gone locally")
    ] = True,
    release: Annotated[bool, typer.Option(
        "--release", help="write to <url>/<revision>, once: every pod deployed from it reads the same files"
    )] = False,
) -> None:
    """Upload a built repository to an object store; files whose content hash did not change are not sent."""
    from tritonforge.deploy.object_store import push as push_repo

    try:
        with err_console.status("pushing…") as status:
            report = push_repo(repo, url, endpoint_url=endpoint_url, delete=delete, progress=status.update,
                               release=release)
    except TritonForgeError as err:
        _fail(err)
    what = f" release {report.revision} to" if report.revision else ""
    console.print(styled(
        "green", "pushed", f"{what} {report.url}: {len(report.uploaded)} sent ({report.bytes_sent} bytes), "
        f"{len(report.unchanged)} unchanged, {len(report.deleted)} deleted"
    ))
    console.print(f"serve it with: tritonforge serve {report.url}")
    if report.revision:
        console.print(f"deploy it with: tritonforge deploy k8s {repo} <out> --repository-url {report.url} ...")
