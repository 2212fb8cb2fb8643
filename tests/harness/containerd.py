"""A real, sandboxed containerd: its own root, state, socket and CNI network.

Used by the integration tests, the demo and the benchmarks. Needs root and the
Debian packages containerd, runc, containernetworking-plugins, busybox-static
(`scripts/setup.sh` installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from tests.harness._generated import cri_harness_pb2 as pb

PAUSE_REF = "localhost/pause:test"


@dataclass(frozen=True)
class Binaries:
    """Where one containerd release's binaries live ("" = on PATH)."""

    bin_dir: str = ""

    def path(self, name: str) -> str:
        if self.bin_dir:
            return str(Path(self.bin_dir) / name)
        found = shutil.which(name)
        if not found:
            raise RuntimeError(f"{name} not found: run scripts/setup.sh (needs the Debian package containerd)")
        return found

    def version(self) -> str:
        out = subprocess.run([self.path("containerd"), "--version"], capture_output=True, text=True, check=True)
        return out.stdout.split()[2].lstrip("v")

    def major(self) -> int:
        return int(self.version().split(".")[0])


class Containerd:
    """Start, restart and stop one containerd; run `ctr` against it."""

    def __init__(
        self,
        workdir: Path | None = None,
        binaries: Binaries | None = None,
        snapshotter: str = "overlayfs",
        discard_unpacked_layers: bool = False,
        sandbox_image: str = PAUSE_REF,
    ) -> None:
        self.sandbox_image = sandbox_image
        self.binaries = binaries or Binaries()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lse-containerd-"))
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        self.socket = self.workdir / "containerd.sock"
        self.config_path = self.workdir / "config.toml"
        self.log_path = self.workdir / "containerd.log"
        self.pod_logs = self.workdir / "pod-logs"
        self.snapshotter = snapshotter
        self.discard_unpacked_layers = discard_unpacked_layers
        self._proc: subprocess.Popen[bytes] | None = None
        tag = random.randrange(16**4)
        self.bridge = f"lse{tag:04x}"
        self.subnet = f"10.{random.randrange(100, 200)}.{random.randrange(256)}.0/24"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def write_config(self) -> None:
        cni_dir = self.workdir / "cni"
        cni_dir.mkdir(parents=True, exist_ok=True)
        self.pod_logs.mkdir(parents=True, exist_ok=True)
        (cni_dir / "10-test.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": f"net-{self.bridge}",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.subnet}]],
                                "dataDir": str(self.workdir / "ipam"),
                            },
                        },
                        {"type": "loopback"},
                    ],
                }
            )
        )
        discard = "true" if self.discard_unpacked_layers else "false"
        if self.binaries.major() >= 2:
            config = f"""version = 3
root = "{self.root}"
state = "{self.state}"
[grpc]
  address = "{self.socket}"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "{self.snapshotter}"
  discard_unpacked_layers = {discard}
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{self.sandbox_image}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni_dir}"
"""
        else:
            config = f"""version = 2
root = "{self.root}"
state = "{self.state}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.sandbox_image}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{self.snapshotter}"
    discard_unpacked_layers = {discard}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir}"
"""
        self.config_path.write_text(config)

    def start(self, timeout: float = 30.0) -> None:
        if not self.config_path.exists():
            self.write_config()
        env = dict(os.environ)
        if self.binaries.bin_dir:
            env["PATH"] = f"{self.binaries.bin_dir}:{env.get('PATH', '')}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(
            [self.binaries.path("containerd"), "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"containerd exited with {self._proc.returncode}; see {self.log_path}:\n{self.tail_log()}"
                )
            if self.socket.exists() and self._cri_ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"containerd did not become ready in {timeout}s; see {self.log_path}:\n{self.tail_log()}")

    def _cri_ready(self) -> bool:
        """CRI answers a real call. Its plugin reports "ok" before the server has
        loaded its state, and until then every call fails with "server is not
        initialized yet" (seen on 1.6 right after a restart)."""
        channel = grpc.insecure_channel(self.endpoint)
        try:
            list_images = channel.unary_unary(
                "/runtime.v1.ImageService/ListImages",
                request_serializer=pb.Empty.SerializeToString,
                response_deserializer=pb.Empty.FromString,
            )
            list_images(pb.Empty(), timeout=5)
        except grpc.RpcError:
            return False
        finally:
            channel.close()
        return True

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, kill: bool = False) -> None:
        """Stop containerd (SIGTERM, or SIGKILL to simulate a crash). Pods survive."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ctr(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [self.binaries.path("ctr"), "-a", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def import_image(self, tar_path: Path) -> None:
        args = ["images", "import"]
        if self.snapshotter != "overlayfs":
            args += ["--snapshotter", self.snapshotter]
            if self.binaries.major() >= 2:
                # 2.x's transfer-service import cannot unpack to another snapshotter
                # ("no unpack platforms defined"); the client-side import can.
                args.append("--local")
        self.ctr(*args, str(tar_path))

    def remove_image(self, repository: str, tag: str) -> None:
        """`ctr images rm --sync` of an image's tag and of the other records CRI made when it pulled
        it (repository@digest, and its ID sha256:config) so the image and its layers are gone."""
        listed = [line.split() for line in self.ctr("images", "ls").splitlines()[1:] if line.strip()]
        target = next(parts[2] for parts in listed if parts[0] == f"{repository}:{tag}")
        refs = [
            parts[0]
            for parts in listed
            if parts[2] == target and (parts[0].startswith(repository + "@") or parts[0].startswith("sha256:"))
        ]
        self.ctr("images", "rm", "--sync", f"{repository}:{tag}", *refs)

    def snapshot_usage(self) -> dict[str, tuple[int, int]]:
        """The oracle: `ctr snapshots usage` as {key: (bytes, inodes)}."""
        out = self.ctr("snapshots", "--snapshotter", self.snapshotter, "usage", "-b")
        usage = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                usage[parts[0]] = (int(parts[1]), int(parts[2]))
        return usage

    def content_digests(self) -> set[str]:
        """The oracle for compressed blobs present: `ctr content ls -q`."""
        return set(self.ctr("content", "ls", "-q").split())

    def cleanup(self) -> None:
        """Stop everything this instance started and delete its directory."""
        self.stop()
        # Shims outlive containerd by design; end the ones for this socket.
        for pid in _pids_matching(str(self.workdir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for mount in reversed(_mounts_under(self.workdir)):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _pids_matching(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmdline and "containerd-shim" in cmdline:
                pids.append(int(entry.name))
    return pids


def _mounts_under(path: Path) -> list[str]:
    mounts = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(str(path)):
                mounts.append(target)
    return mounts


@contextlib.contextmanager
def running_containerd(**kwargs: object) -> Iterator[Containerd]:
    instance = Containerd(**kwargs)  # type: ignore[arg-type]
    try:
        instance.start()
        yield instance
    finally:
        instance.cleanup()
