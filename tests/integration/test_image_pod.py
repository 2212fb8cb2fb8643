"""The DaemonSet image, built from the Dockerfile, run as the kubelet runs the chart's pod.

The image is built once per session from the project's own Dockerfile with
Debian's podman, on bases made from Debian packages (tests/harness/image_build.py),
and imported into a containerd of this module's own (the tests restart it and
add images, which the session's shared one must not see). The chart is rendered
by the real Helm engine for each documented configuration, and its DaemonSet pod
is run by the kubelet stand-in (tests/harness/kubelet.py) through CRI:
RunPodSandbox, CreateContainer, StartContainer, with the rendered command, args,
env, volumes, user, group, read-only root, capabilities, no_new_privs and seccomp.
Its probes run as the kubelet runs them, against the pod IP, and the pod is
scraped from outside it; the figures must equal `ctr snapshots usage` summed over
the images' layers (tests/integration/oracle.py's method).

The node's runtime is served at the paths each distribution uses: containerd runs
in a private mount namespace where its directory is bind-mounted at
/run/containerd, /run/k3s/containerd (k3s, RKE2) and
/var/snap/microk8s/common/run (MicroK8s), and its socket at /var/run/crio/crio.sock
for the CRI-O values, so the rendered hostPaths are used as they are and the host's
own paths are never touched (directories that are missing are made empty and
removed after).

Stand-ins, named as such:
- kube-rbac-proxy: its image cannot be had here, so a minimal local one
  (tests/harness/kubelet_rbac_proxy.py) is built under the reference the chart
  renders; it listens where the real one would (HTTPS on the metrics port),
  forwards to the exporter on 127.0.0.1, passes /healthz and /readyz, and wants a
  bearer token for the rest, but does no TokenReview or SubjectAccessReview.
- CRI-O: there is no CRI-O server, so with the CRI-O values CRI is served by
  containerd (the exporter's CRI client is the same for both) at CRI-O's socket
  path, and the layer sizes come, as on CRI-O, from a real containers/storage
  written by podman holding the same images, mounted at the chart's storage root.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.containerd import Binaries, Containerd
from tests.harness.containers_storage import Podman
from tests.harness.image_build import ROOT, BuiltImage, build_image, build_standin
from tests.harness.images import ImageSpec, busybox_layer, data_layer
from tests.harness.kube_api import KubeApiStandIn, exporter_pod, owned
from tests.harness.kube_api import pod as kube_pod
from tests.harness.kubelet import (
    KubeApiAccess,
    Kubelet,
    PodFailedError,
    Release,
    RunningPod,
    pod_environ,
    process_mounts,
    process_status,
    quantity_bytes,
)
from tests.harness.pods import ContainerSpec, PodMaker
from tests.harness.registry import Registry
from tests.harness.scenario import build_images, sample_images

CHART = ROOT / "charts" / "layer-sharing-exporter"
KIB = 1024
NODE_NAME = "image-node"
# Where distributions put containerd's socket directory (the chart's documented values).
DISTRO_SOCKET_DIRS = {
    "containerd": "/run/containerd",
    "k3s": "/run/k3s/containerd",
    "rke2": "/run/k3s/containerd",
    "microk8s": "/var/snap/microk8s/common/run",
}
CRIO_SOCKET_DIR = "/run/crio"
CRIO_STORAGE = "/var/lib/containers/storage"


def render(values: dict[str, Any], extra: list[dict[str, Any]] | None = None) -> Release:
    """The chart's objects for `values`, by the real Helm engine (as test_kubelet_mounts renders them)."""
    chart = Chart.load(CHART)
    try:
        rendered = chart.render(values, name="lse", namespace="monitoring", is_install=True)
    finally:
        chart.close()
    docs = [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    return Release(docs + list(extra or []))


def _chains(diff_ids: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest() if out else d)
    return out


# The node ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exporter_image() -> BuiltImage:
    """Built once per session (and cached in .cache/image by its inputs)."""
    return build_image()


def _standin_tls() -> tuple[bytes, bytes]:
    """A self-signed certificate for the kube-rbac-proxy stand-in, made once with openssl."""
    directory = ROOT / ".cache" / "image" / "standin-tls"
    cert, key = directory / "tls.crt", directory / "tls.key"
    if not cert.exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=kube-rbac-proxy",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    return cert.read_bytes(), key.read_bytes()


@pytest.fixture(scope="session")
def proxy_image() -> BuiltImage:
    (proxy,) = [
        c
        for c in render({"kubeRBACProxy": {"enabled": True}}).pod_template()["spec"]["containers"]
        if c["name"] == "kube-rbac-proxy"
    ]
    cert, key = _standin_tls()
    script = (ROOT / "tests" / "harness" / "kubelet_rbac_proxy.py").read_bytes()
    files = {"/standin/proxy.py": script, "/standin/tls.crt": cert, "/standin/tls.key": key}
    # The stand-in runs as whatever user the chart asks for: its files must be readable.
    return build_standin("kube-rbac-proxy", proxy["image"], files, ["/usr/bin/python3.11", "/standin/proxy.py"])


@dataclass
class Node:
    containerd: Containerd
    images: dict[str, tuple[str, ...]]  # reference -> diff IDs
    kubelet: Kubelet
    workdir: Path
    crio_store: Podman
    created_dirs: list[Path] = field(default_factory=list)

    def serve_crio_socket(self) -> None:
        """containerd's socket at CRI-O's path, in containerd's mount namespace."""
        assert self.containerd._proc is not None
        pid = self.containerd._proc.pid  # unshare and sh exec containerd: one process
        source = self.containerd.socket
        subprocess.run(
            ["nsenter", "-t", str(pid), "-m", "mount", "--bind", str(source), f"{CRIO_SOCKET_DIR}/crio.sock"],
            check=True,
        )

    def expected(self) -> tuple[int, int, dict[str, int]]:
        """(physical, logical, size per reference) from `ctr snapshots usage -b` and the images' diff IDs."""
        usage = {k: v[0] for k, v in self.containerd.snapshot_usage().items() if k.startswith("sha256:")}
        sizes = {ref: sum(usage[c] for c in _chains(d)) for ref, d in self.images.items()}
        unique = {tuple(d) for d in self.images.values()}
        logical = sum(sum(usage[c] for c in _chains(d)) for d in unique)
        return sum(usage.values()), logical, sizes


def _runtime_pid(containerd: Containerd) -> int:
    assert containerd._proc is not None
    return containerd._proc.pid  # unshare and sh exec containerd: one process


def _wrapper(bin_dir: Path, node_dir: Path, crio_store: Path) -> None:
    """`containerd` in a private mount namespace in which the node's runtime paths lead to
    this containerd (and its socket to CRI-O's path, its store to CRI-O's storage root)."""
    binds = sorted(set(DISTRO_SOCKET_DIRS.values()))
    script = ["set -e"]
    script += [f"mount --bind {node_dir} {target}" for target in binds]
    script += [
        f"mount -t tmpfs -o size=1m,mode=0755 tmpfs {CRIO_SOCKET_DIR}",
        # The socket is bound over this file once it exists (Node.serve_crio_socket).
        f"touch {CRIO_SOCKET_DIR}/crio.sock",
        f"mount --bind {crio_store} {CRIO_STORAGE}",
        'exec /usr/bin/containerd "$@"',
    ]
    inner = "\n".join(script)
    (bin_dir / "containerd").write_text(
        "#!/bin/sh\n"
        "# Only `containerd --version` runs outside the namespace (Binaries.version asks it).\n"
        'if [ "$1" = "--version" ]; then exec /usr/bin/containerd --version; fi\n'
        f"exec unshare --mount --propagation private sh -c '{inner}' containerd \"$@\"\n"
    )
    (bin_dir / "containerd").chmod(0o755)
    for tool in ("ctr", "containerd-shim-runc-v2"):
        found = shutil.which(tool)
        assert found, f"{tool} is not installed"
        (bin_dir / tool).symlink_to(found)


@pytest.fixture(scope="module")
def node(exporter_image: BuiltImage, proxy_image: BuiltImage) -> Iterator[Node]:
    # Not under pytest's tmp_path (0700): the pod's user 65534 must traverse to the socket.
    workdir = Path(tempfile.mkdtemp(prefix="lse-image-node-"))
    workdir.chmod(0o711)
    node_dir = workdir / "containerd"
    node_dir.mkdir(mode=0o711)
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    created: list[Path] = []
    for path in [*DISTRO_SOCKET_DIRS.values(), CRIO_SOCKET_DIR, CRIO_STORAGE]:
        missing = Path(path)
        while not missing.parent.exists():
            missing = missing.parent
        if not Path(path).exists():
            Path(path).mkdir(parents=True)
            created.append(missing)
    store = Podman(workdir / "crio")
    store.root.mkdir(parents=True)
    _wrapper(bin_dir, node_dir, store.root)
    containerd = Containerd(node_dir, binaries=Binaries(str(bin_dir)))
    kubelet = None
    try:
        containerd.start()
        built = build_images(
            {
                "pause": sample_images()["pause"],
                "app": ImageSpec(["localhost/app:1"], [busybox_layer(), data_layer("image-app", 120 * KIB)]),
            },
            workdir / "images",
        )
        images: dict[str, tuple[str, ...]] = {}
        for harness_image, tar in built.values():
            containerd.import_image(tar)
            for ref in harness_image.spec.refs:
                images[ref] = harness_image.diff_ids
            store.load(harness_image)
        for image in (exporter_image, proxy_image):
            containerd.import_image(image.archive)
            images[image.ref] = image.diff_ids
            store.run("load", "-i", str(image.archive))
        kubelet = Kubelet(
            containerd.endpoint, NODE_NAME, workdir / "kubelet", runtime_pid=lambda: _runtime_pid(containerd)
        )
        yield Node(containerd, images, kubelet, workdir, store, created)
    finally:
        if kubelet:
            kubelet.close()
        containerd.cleanup()
        # What the kubelet made on the node (the chart's DirectoryOrCreate hostPaths).
        for made in kubelet.created_host_paths if kubelet else []:
            shutil.rmtree(made, ignore_errors=True)
        store.cleanup()
        for made_dir in reversed(created):
            shutil.rmtree(made_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_node_state(node: Node) -> Iterator[None]:
    """Each configuration is a first install on the node: what the kubelet made on the node
    for an earlier one (DirectoryOrCreate hostPaths) goes. A pod recreated on a node that
    keeps it is test_a_recreated_pod_starts_again."""
    yield
    for made in node.kubelet.created_host_paths:
        shutil.rmtree(made, ignore_errors=True)
    node.kubelet.created_host_paths.clear()


# Scraping ------------------------------------------------------------------------


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the stand-in's and the test's self-signed certificates
    return context


def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10, context=_context()) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def image_sizes(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels).get("image", ""): v
        for (name, labels), v in metrics.items()
        if name == "layer_sharing_image_size_bytes"
    }


def wait_for(predicate: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, AssertionError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@dataclass
class Scraper:
    url: str
    token: str | None = None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = scrape(self.url, self.token)
        assert status == 200, (status, text[:300])
        return samples(text)


def metrics_url(release: Release, pod: RunningPod) -> str:
    """The pod's port named `metrics` (the Service's target), with the scheme its probes use."""
    containers = release.pod_template()["spec"]["containers"]
    (port,) = [p["containerPort"] for c in containers for p in c.get("ports", []) if p["name"] == "metrics"]
    tls = any((c.get("readinessProbe") or {}).get("httpGet", {}).get("scheme") == "HTTPS" for c in containers)
    return f"{'https' if tls else 'http'}://{pod.ip}:{port}/metrics"


def assert_exact(node: Node, scraper: Scraper, exporter_ref: str) -> None:
    def matches() -> bool:
        metrics = scraper.metrics()
        physical, logical, sizes = node.expected()
        return (
            value(metrics, "layer_sharing_up") == 1
            and value(metrics, "layer_sharing_physical_bytes") == physical
            and value(metrics, "layer_sharing_logical_bytes") == logical
            and image_sizes(metrics).get(exporter_ref) == sizes[exporter_ref]
        )

    wait_for(matches, "exact figures from outside the pod", timeout=90)


# The pod -------------------------------------------------------------------------


def exporter_container(pod: RunningPod) -> dict[str, Any]:
    (container,) = [c for c in pod.spec["containers"] if c["name"] == "exporter"]
    return container


def assert_run_as_rendered(node: Node, pod: RunningPod, name: str = "exporter", kubelet: Kubelet | None = None) -> None:
    """The container's process is what the rendered spec asks for, read from /proc."""
    spec = pod.spec
    (container,) = [c for c in spec["containers"] if c["name"] == name]
    security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    pid = (kubelet or node.kubelet).pid(pod, name)
    status = process_status(pid)
    assert status["Uid"].split()[:2] == [str(security["runAsUser"])] * 2
    assert status["Gid"].split()[:2] == [str(security["runAsGroup"])] * 2
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0  # drop: [ALL]
    assert status["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert status["Seccomp"] == "2"  # RuntimeDefault: a filter
    mounts = process_mounts(pid)
    assert "ro" in mounts["/"]  # readOnlyRootFilesystem
    for mount in container.get("volumeMounts", []):
        assert mount["mountPath"] in mounts, mount
        assert ("ro" in mounts[mount["mountPath"]]) == bool(mount.get("readOnly")), mount
    limit = (container.get("resources") or {}).get("limits", {}).get("memory")
    if limit:  # the kubelet's cgroup memory limit, as the process is held to it
        cgroup = next(
            line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":memory:" in line
        )
        held = Path(f"/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes").read_text()
        assert int(held) == quantity_bytes(limit)
    environ = pod_environ(pid)
    if name == "exporter":
        assert environ["NODE_NAME"] == NODE_NAME  # the downward API, filled in as the kubelet does
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    # The image's entrypoint (a console script run by the virtualenv's Python) and the rendered args.
    assert [a.decode() for a in argv[-len(container["args"]) :]] == container["args"]


def run_ready(node: Node, release: Release) -> RunningPod:
    pod = node.kubelet.run_pod(release)
    try:
        node.kubelet.wait_ready(pod, timeout=90)
    except BaseException:
        node.kubelet.remove_pod(pod)
        raise
    return pod


CONFIGURATIONS: dict[str, dict[str, Any]] = {
    # Chart defaults, but for enrichment (its own configuration below).
    "defaults, enrichment off": {"kubernetesEnrichment": {"enabled": False}},
    "k3s": {
        "kubernetesEnrichment": {"enabled": False},
        "runtime": {"socketPath": "/run/k3s/containerd/containerd.sock"},
    },
    "rke2": {
        "kubernetesEnrichment": {"enabled": False},
        "runtime": {"socketPath": "/run/k3s/containerd/containerd.sock"},
    },
    "microk8s": {
        "kubernetesEnrichment": {"enabled": False},
        "runtime": {"socketPath": "/var/snap/microk8s/common/run/containerd.sock"},
    },
}


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_the_pod_runs_ready_and_exact(node: Node, exporter_image: BuiltImage, configuration: str) -> None:
    release = render(CONFIGURATIONS[configuration])
    pod = run_ready(node, release)
    try:
        assert_run_as_rendered(node, pod)
        assert_exact(node, Scraper(metrics_url(release, pod)), exporter_image.ref)
    finally:
        node.kubelet.remove_pod(pod)


def test_one_nodes_df_by_exec_in_its_pod_as_the_notes_say(node: Node, exporter_image: BuiltImage) -> None:
    """NOTES picks the pod on the named node and runs `df --config <the pod's config>` in the exporter
    container: run that command as `kubectl exec` runs it (CRI ExecSync), in the image, as the pod's user."""
    values = {"kubernetesEnrichment": {"enabled": False}}
    release = render(values)
    chart = Chart.load(CHART)
    try:
        notes = chart.render(values, name="lse", namespace="monitoring")["layer-sharing-exporter/templates/NOTES.txt"]
    finally:
        chart.close()
    command = next(line for line in notes.splitlines() if " -c exporter -- " in line).split(" -c exporter -- ", 1)[1]
    pod = run_ready(node, release)
    try:
        code, out, err = node.kubelet.exec_sync(pod, "exporter", [*command.split(), "-o", "json"])
        assert code == 0, err
        physical, logical, sizes = node.expected()
        data = json.loads(out)
        assert (data["totals"]["physical"], data["totals"]["logical"]) == (physical, logical)
        assert {i["image_id"]: i["size"] for i in data["images"]}[
            next(i["image_id"] for i in data["images"] if exporter_image.ref in i["repo_tags"])
        ] == sizes[exporter_image.ref]
        code, out, err = node.kubelet.exec_sync(pod, "exporter", [*command.split(), "-o", "wide"])
        assert code == 0 and "COMPRESSED" in out, err
    finally:
        node.kubelet.remove_pod(pod)


def _tls_secret(name: str) -> dict[str, Any]:
    """A Secret the user makes (the chart names it from extraVolumes), holding a certificate."""
    cert, key = _standin_tls()
    data = {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "monitoring"}, "data": data}


def exporter_container_spec(release: Release) -> dict[str, Any]:
    (container,) = [c for c in release.pod_template()["spec"]["containers"] if c["name"] == "exporter"]
    return container


TLS_VALUES: dict[str, Any] = {
    "kubernetesEnrichment": {"enabled": False},
    "webConfig": {
        "tls": True,
        "config": {"tls_server_config": {"cert_file": "/etc/lse-tls/tls.crt", "key_file": "/etc/lse-tls/tls.key"}},
    },
    "extraVolumes": [{"name": "tls", "secret": {"secretName": "lse-tls"}}],
    "extraVolumeMounts": [{"name": "tls", "mountPath": "/etc/lse-tls", "readOnly": True}],
}


def test_tls_on(node: Node, exporter_image: BuiltImage) -> None:
    check_tls(node, render(TLS_VALUES, [_tls_secret("lse-tls")]), exporter_image)


def check_tls(node: Node, release: Release, exporter_image: BuiltImage) -> None:
    probe = exporter_container_spec(release)["readinessProbe"]["httpGet"]
    assert probe["scheme"] == "HTTPS"
    pod = run_ready(node, release)
    try:
        assert_run_as_rendered(node, pod)
        url = metrics_url(release, pod)
        assert url.startswith("https://")
        # Plain HTTP on the TLS port gets no metrics.
        with pytest.raises((OSError, urllib.error.URLError)):
            urllib.request.urlopen(url.replace("https://", "http://"), timeout=5).read()
        assert_exact(node, Scraper(url), exporter_image.ref)
    finally:
        node.kubelet.remove_pod(pod)


PROXY_VALUES: dict[str, Any] = {"kubernetesEnrichment": {"enabled": False}, "kubeRBACProxy": {"enabled": True}}


def test_kube_rbac_proxy_on(node: Node, exporter_image: BuiltImage, proxy_image: BuiltImage) -> None:
    """The probes sit on the container that declares `metrics` (the proxy passes /healthz and
    /readyz through): the kubelet resolves a named probe port against the same container only."""
    check_proxy(node, render(PROXY_VALUES), exporter_image, proxy_image)


def check_proxy(node: Node, release: Release, exporter_image: BuiltImage, proxy_image: BuiltImage) -> None:
    """With the kube-rbac-proxy STAND-IN (tests/harness/kubelet_rbac_proxy.py), not the real proxy."""
    containers = {c["name"]: c for c in release.pod_template()["spec"]["containers"]}
    assert containers["kube-rbac-proxy"]["image"] == proxy_image.ref
    pod = run_ready(node, release)
    try:
        assert_run_as_rendered(node, pod)
        url = metrics_url(release, pod)
        assert url.startswith("https://")
        assert scrape(url)[0] == 401  # no token: the proxy refuses
        assert_exact(node, Scraper(url, token="scraper-token"), exporter_image.ref)
        # The exporter itself listens on the pod's loopback only.
        with pytest.raises(OSError):
            scrape(f"http://{pod.ip}:9878/metrics")
    finally:
        node.kubelet.remove_pod(pod)


def _crio_expected(node: Node) -> tuple[int, int, dict[str, int]]:
    """(physical, logical, size per reference) from the layers.json and images.json podman wrote."""
    layers = {r["id"]: r for r in node.crio_store.layers()}
    tops = {r["id"]: r["layer"] for r in node.crio_store.images()}
    names = {n: r["id"] for r in node.crio_store.images() for n in r.get("names", [])}
    chains: dict[str, set[str]] = {}
    for ref in node.images:
        chain, layer_id = set(), tops[names[ref if "/" in ref.split(":")[0] else f"localhost/{ref}"]]
        while layer_id:
            chain.add(layer_id)
            layer_id = layers[layer_id].get("parent", "")
        chains[ref] = chain
    size = {ref: sum(layers[i].get("diff-size", 0) for i in chain) for ref, chain in chains.items()}
    distinct = {frozenset(c) for c in chains.values()}
    used = set().union(*distinct)
    return (
        sum(layers[i].get("diff-size", 0) for i in used),
        sum(sum(layers[i].get("diff-size", 0) for i in c) for c in distinct),
        size,
    )


def test_crio_values(node: Node, exporter_image: BuiltImage) -> None:
    """CRI served by containerd at CRI-O's socket (no CRI-O server here); layers from podman's containers/storage."""
    release = render({"runtime": {"type": "crio"}, "kubernetesEnrichment": {"enabled": False}})
    args = exporter_container_spec(release)["args"]
    assert "--runtime-endpoint=unix:///var/run/crio/crio.sock" in args
    assert "--layer-store=containers-storage" in args and f"--storage-root={CRIO_STORAGE}" in args
    node.serve_crio_socket()
    pod = run_ready(node, release)
    try:
        assert_run_as_rendered(node, pod)
        scraper = Scraper(metrics_url(release, pod))

        def matches() -> bool:
            metrics = scraper.metrics()
            physical, logical, sizes = _crio_expected(node)
            return (
                value(metrics, "layer_sharing_up") == 1
                and value(metrics, "layer_sharing_physical_bytes") == physical
                and value(metrics, "layer_sharing_logical_bytes") == logical
                and image_sizes(metrics).get(exporter_image.ref) == sizes[exporter_image.ref]
            )

        wait_for(matches, "exact figures from containers/storage", timeout=90)
    finally:
        node.kubelet.remove_pod(pod)


def test_the_pod_recovers_from_a_containerd_restart(node: Node, exporter_image: BuiltImage) -> None:
    # Chart defaults but for enrichment, and refreshes every 2 s rather than 30 s to keep the test short.
    values = {"kubernetesEnrichment": {"enabled": False}, "config": {"refreshIntervalSeconds": 2}}
    release = render(values)
    pod = run_ready(node, release)
    try:
        scraper = Scraper(metrics_url(release, pod))
        assert_exact(node, scraper, exporter_image.ref)
        pid = node.kubelet.pid(pod, "exporter")
        node.containerd.stop(kill=True)
        wait_for(lambda: value(scraper.metrics(), "layer_sharing_up") == 0, "up 0 while containerd is down")
        node.containerd.start()
        assert_exact(node, scraper, exporter_image.ref)
        # The same process, never restarted; and the kubelet still finds the pod ready.
        assert node.kubelet.pid(pod, "exporter") == pid
        node.kubelet.wait_ready(pod, timeout=30)
    finally:
        node.kubelet.remove_pod(pod)


def test_a_pod_that_could_not_start_fails_here(node: Node) -> None:
    """What a real kubelet refuses, this one refuses: a socket directory that is not on the
    node, and root in a pod that says runAsNonRoot."""
    missing = render({"kubernetesEnrichment": {"enabled": False}, "runtime": {"socketPath": "/run/nowhere/c.sock"}})
    with pytest.raises(PodFailedError, match="FailedMount"):
        node.kubelet.run_pod(missing)
    root = render({"kubernetesEnrichment": {"enabled": False}, "podSecurityContext": {"runAsUser": 0}})
    with pytest.raises(PodFailedError, match="runAsNonRoot"):
        node.kubelet.run_pod(root)


def test_a_probe_on_a_port_another_container_declares_fails(node: Node) -> None:
    release = render({"kubernetesEnrichment": {"enabled": False}})
    template = release.pod_template()
    exporter = exporter_container_spec(release)
    exporter["readinessProbe"]["httpGet"]["port"] = "elsewhere"
    template["spec"]["containers"] = [exporter]
    pod = node.kubelet.run_pod(release)
    try:
        result = node.kubelet.probe(pod, "exporter", "readinessProbe")
        assert not result.ok and "couldn't find port 'elsewhere'" in result.detail
    finally:
        node.kubelet.remove_pod(pod)


def test_the_exporter_measures_its_own_image(node: Node, exporter_image: BuiltImage) -> None:
    """Dogfood: the exporter in its pod reports its own image's size, unique and wasted bytes,
    and `df --image` of itself, run in its own container (CRI ExecSync), says the same.
    The image is meant to stay within 200 MB unpacked with nothing wasted."""
    release = render({"kubernetesEnrichment": {"enabled": False}})
    pod = run_ready(node, release)
    try:
        scraper = Scraper(metrics_url(release, pod))
        assert_exact(node, scraper, exporter_image.ref)
        _, _, sizes = node.expected()
        size = sizes[exporter_image.ref]

        def own(name: str) -> float | None:
            metrics = scraper.metrics()
            return next(
                (v for (n, labels), v in metrics.items() if n == name and ("image", exporter_image.ref) in labels), None
            )

        # Unique: its layers no other image uses (the kube-rbac-proxy stand-in shares its base).
        usage = {k: v[0] for k, v in node.containerd.snapshot_usage().items()}
        others = {c for ref, d in node.images.items() if ref != exporter_image.ref for c in _chains(d)}
        unique = sum(usage[c] for c in _chains(exporter_image.diff_ids) if c not in others)
        assert own("layer_sharing_image_unique_bytes") == unique
        wasted = wait_for(
            lambda: own("layer_sharing_image_wasted_bytes") is not None, "the layer analysis", timeout=240
        )
        assert wasted and own("layer_sharing_image_wasted_bytes") == 0
        assert size <= 200_000_000, f"the image unpacks to {size} bytes"

        endpoint = next(a for a in exporter_container(pod)["args"] if a.startswith("--runtime-endpoint="))
        code, out, err = node.kubelet.exec_sync(
            pod, "exporter", ["/opt/venv/bin/layer-sharing-exporter", "df", endpoint, "--image", exporter_image.ref]
        )
        assert code == 0, err
        assert exporter_image.ref in out
        # Kept for docs/image.md (the figures it shows are this node's).
        (ROOT / ".cache" / "image" / "df-image-self.txt").write_text(out)
        figures = {
            "size": size,
            "unique": unique,
            "wasted": 0,
            "layers": [usage[c] for c in _chains(exporter_image.diff_ids)],
        }
        (ROOT / ".cache" / "image" / "df-image-self.json").write_text(json.dumps(figures))
        print(f"unpacked {size} bytes, unique {unique}; df --image of itself:\n{out}")
    finally:
        node.kubelet.remove_pod(pod)


class GatewayFront:
    """A loopback server (the Kubernetes API STAND-IN, tests/harness/kube_api.py; the loopback
    registry) reachable from pods: a listener on the node's pod-network gateway, as the
    `kubernetes` service's address would be, each connection piped to the server. With `certs`
    it terminates TLS (the pod's in-cluster configuration needs HTTPS); without, plain TCP."""

    def __init__(self, upstream_port: int, gateway: str, certs: Path | None = None) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("0.0.0.0", 0))
        self.port = int(self._listener.getsockname()[1])
        self._context: ssl.SSLContext | None = None
        if certs is not None:
            self._make_certificate(gateway, certs)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _make_certificate(self, gateway: str, certs: Path) -> None:
        self.cert, self.key = certs / "api.crt", certs / "api.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kubernetes",
             "-addext", f"subjectAltName=IP:{gateway}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-keyout", str(self.key), "-out", str(self.cert)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.cert, self.key)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(client, server_side=True) if self._context else client
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return

        def pipe(source: socket.socket, target: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            finally:
                for s in (source, target):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pipe, args=(upstream, tls), daemon=True)
        back.start()
        pipe(tls, upstream)
        back.join(timeout=5)
        tls.close()
        upstream.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()


def kubelet_with_api(node: Node, gateway: str, front: GatewayFront, workdir: str) -> Kubelet:
    """A kubelet stand-in that gives pods the `kubernetes` service's address (the TLS front) and token."""
    return Kubelet(
        node.containerd.endpoint,
        NODE_NAME,
        node.workdir / workdir,
        kube_api=KubeApiAccess(gateway, front.port, front.cert.read_bytes()),
        runtime_pid=lambda: _runtime_pid(node.containerd),
    )


def test_chart_defaults_with_enrichment_against_the_api_stand_in(node: Node, exporter_image: BuiltImage) -> None:
    """The chart's defaults as they are (enrichment on): the pod gets its service account token,
    ca.crt and the `kubernetes` service's address as a kubelet gives them, and attributes the
    node's pods to their workloads from the Kubernetes API STAND-IN (tests/harness/kube_api.py)
    behind a TLS front (GatewayFront)."""
    release = render({})
    assert "--kubernetes" in exporter_container_spec(release)["args"]
    assert release.pod_template()["spec"]["automountServiceAccountToken"] is True
    gateway = str(ipaddress.ip_network(node.containerd.subnet)[1])  # the CNI bridge's address
    api = KubeApiStandIn(NODE_NAME).start()
    front = GatewayFront(api.port, gateway, node.workdir)
    kubelet = kubelet_with_api(node, gateway, front, "kubelet-api")
    maker = PodMaker(node.containerd.endpoint, str(node.containerd.pod_logs))
    app = maker.run_pod("default", "web-1", [ContainerSpec("app", "localhost/app:1")])
    pod = None
    try:
        api.add_owner(owned("ReplicaSet", "default", "web-5d8f", ("Deployment", "web")))
        api.add_pod(kube_pod("default", "web-1", NODE_NAME, ("ReplicaSet", "web-5d8f")))
        daemonset = release.one("DaemonSet")["metadata"]["name"]
        api.add_pod(kube_pod("monitoring", f"{daemonset}-x1", NODE_NAME, ("DaemonSet", daemonset)))
        pod = kubelet.run_pod(release, name=f"{daemonset}-x1")
        kubelet.wait_ready(pod, timeout=90)
        assert_run_as_rendered(node, pod)
        environ = pod_environ(kubelet.pid(pod, "exporter"))
        assert environ["KUBERNETES_SERVICE_HOST"] == gateway
        scraper = Scraper(metrics_url(release, pod))
        assert_exact(node, scraper, exporter_image.ref)

        def attributed() -> bool:
            metrics = scraper.metrics()
            web = {"namespace": "default", "workload": "web", "workload_kind": "Deployment"}
            own = {"namespace": "monitoring", "workload": daemonset, "workload_kind": "DaemonSet"}
            return value(metrics, "layer_sharing_workload_pods", **web) == 1 and (
                value(metrics, "layer_sharing_workload_pods", **own) == 1
            )

        wait_for(attributed, "workloads from the API stand-in", timeout=60)
        assert any(r.startswith("/api/v1/pods?") for r in api.requests)
    finally:
        if pod:
            kubelet.remove_pod(pod)
        maker.remove_pod(app)
        maker.close()
        kubelet.close()
        node.kubelet.created_host_paths += kubelet.created_host_paths  # removed with the node
        front.stop()
        api.stop()


def test_the_locality_deployment_prices_a_workload_as_the_report_does(node: Node) -> None:
    """The chart's locality Deployment (locality.enabled), its pod run as the kubelet runs it:
    its service account token, ca.crt and the `kubernetes` service's address from the kubelet;
    the Kubernetes API STAND-IN (tests/harness/kube_api.py) behind a TLS front, its pod proxy
    reaching the DaemonSet's pod at its pod IP; a loopback registry reached from the pod
    network through a plain front on the gateway (locality.extraArgs: --registry-endpoint).
    Ready once its first run is done, and its figures equal `report --view locality` asked
    from outside through the same API and registry."""
    gateway = str(ipaddress.ip_network(node.containerd.subnet)[1])
    registry = Registry().start()
    registry_front = GatewayFront(registry.port, gateway)
    api = KubeApiStandIn(NODE_NAME).start()
    api_front = GatewayFront(api.port, gateway, node.workdir)
    # A new top layer on a base the node holds: this node is cold for it, by exactly those bytes.
    image = ImageSpec(["x/locality"], [busybox_layer(), data_layer("locality-top", 40_000)]).build()
    ref = registry.push("team/locality", "1", image)
    endpoint = f"--registry-endpoint={registry.host}=http://{gateway}:{registry_front.port}"
    release = render({"kubernetesEnrichment": {"enabled": False}, "locality": {"enabled": True, "every": 2,
                                                                            "extraArgs": [endpoint]}})  # fmt: skip
    kubelet = kubelet_with_api(node, gateway, api_front, "kubelet-locality")
    exporter = locality = None
    try:
        exporter = run_ready(node, release)
        listed = exporter_pod("monitoring", exporter.name, NODE_NAME)
        listed["metadata"]["labels"] = release.pod_template()["metadata"]["labels"]  # as the DaemonSet made it
        api.exporter_pods.append(listed)
        api.proxied[("monitoring", exporter.name, 9877)] = f"http://{exporter.ip}:9877"
        workload = kube_pod("default", "loc-0", NODE_NAME, ("StatefulSet", "loc"))
        workload["spec"]["containers"] = [{"name": "app", "image": ref}]
        api.add_pod(workload)

        deployment = release.one("Deployment")
        locality = kubelet.run_pod(release, workload=deployment)
        kubelet.wait_ready(locality, timeout=120)
        assert_run_as_rendered(node, locality, "locality", kubelet)
        (port,) = [p["containerPort"] for c in locality.spec["containers"] for p in c["ports"]]
        scraper = Scraper(f"http://{locality.ip}:{port}/metrics")
        labels = {"namespace": "default", "workload_kind": "StatefulSet", "workload": "loc"}
        wait_for(lambda: value(scraper.metrics(), "layer_sharing_locality_workload_nodes", **labels) == 1,
                 "the locality service's first figures", timeout=60)  # fmt: skip

        kubeconfig = api.kubeconfig(node.workdir / "kubeconfig-locality")
        report = subprocess.run(
            [sys.executable, "-m", "exporter", "report", "--kubeconfig", str(kubeconfig), "--view", "locality",
             "-o", "json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        (expected,) = json.loads(report.stdout)["workloads"]
        assert expected["per_node"][NODE_NAME]["fetch_bytes"] == len(image.config.data) + len(image.layers[1].data)
        metrics = scraper.metrics()
        assert value(metrics, "layer_sharing_locality_up") == 1
        assert value(metrics, "layer_sharing_locality_workload_warm_nodes", **labels) == expected["warm_nodes"] == 0
        for quantile, key in (("0.5", "median_cold_start_bytes"), ("0.9", "p90_cold_start_bytes")):
            got = value(metrics, "layer_sharing_locality_workload_cold_start_bytes", **labels, quantile=quantile)
            assert got == expected[key], quantile
        assert value(metrics, "layer_sharing_locality_workload_rollout_bytes", **labels) == expected["registry_bytes"]
        # In-cluster: it listed pods cluster-wide and asked the exporter through the pod proxy.
        assert any(r.startswith("/api/v1/pods?") for r in api.requests)
        assert any("/proxy/pull-cost" in r for r in api.requests)
    finally:
        if locality:
            kubelet.remove_pod(locality)
        if exporter:
            node.kubelet.remove_pod(exporter)
        kubelet.close()
        node.kubelet.created_host_paths += kubelet.created_host_paths
        api_front.stop()
        registry_front.stop()
        api.stop()
        registry.stop()


def test_a_recreated_pod_starts_again(node: Node) -> None:
    """A DaemonSet pod recreated on its node (rollout, eviction, node reboot) finds the
    node's hostPath state as the first one left it, and must start all the same."""
    release = render({"kubernetesEnrichment": {"enabled": False}})
    for _ in range(2):
        pod = run_ready(node, release)
        node.kubelet.remove_pod(pod)
