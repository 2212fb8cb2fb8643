"""The image recipe, parsed with dockerfile-parse, and the wheel it installs built for real.

The image itself is built with podman and run as the chart's pod in
tests/integration/test_image_pod.py."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent


def parsed() -> list[dict[str, str]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser.structure


def stages(structure: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    out: list[list[dict[str, str]]] = []
    for instruction in structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def args() -> dict[str, str]:
    return {
        i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1]
        for i in parsed()
        if i["instruction"] == "ARG" and "=" in i["value"]
    }


def test_two_stages_on_debian_12_bases_with_one_python():
    """Both bases are Debian 12 and made of Debian packages (so the tests can make them from
    the Debian archive): debian slim to build, distroless python3 to run, whose python3.11
    is the build stage's, so the virtualenv runs unchanged."""
    bases = args()
    assert bases["BUILD_IMAGE"] == "docker.io/library/debian:bookworm-slim"
    assert re.fullmatch(r"gcr\.io/distroless/python3-debian12(:\w+)?", bases["RUNTIME_IMAGE"])
    build, runtime = stages(parsed())
    assert build[0]["value"] == "${BUILD_IMAGE} AS build"
    assert runtime[0]["value"] == "${RUNTIME_IMAGE} AS runtime"
    runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    assert "python3.11-venv" in runs and "python3.11 -m venv /opt/venv" in runs


def test_dependencies_install_from_the_lock_with_hashes():
    runs = " ".join(i["value"] for i in parsed() if i["instruction"] == "RUN")
    assert "--require-hashes" in runs and "requirements.lock" in runs
    lock = (ROOT / "requirements.lock").read_text()
    for dep in ("grpcio", "protobuf", "prometheus-client", "kubernetes", "pyyaml"):
        assert re.search(rf"^{dep}==\S+ \\\n\s+--hash=sha256:", lock, re.MULTILINE), dep


def test_runtime_stage_only_copies_and_has_an_exec_form_entrypoint():
    """No RUN in the runtime stage: nothing rewrites a base file, so no layer hides
    another's bytes (0 wasted bytes, measured in test_image_pod), and no shell is needed."""
    _, runtime = stages(parsed())
    copies = [i["value"] for i in runtime if i["instruction"] in ("COPY", "ADD")]
    assert copies == ["--from=build /opt/venv /opt/venv", "--from=build /opt/pycache /opt/pycache"]
    assert not [i for i in runtime if i["instruction"] == "RUN"]
    entrypoint = next(i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/opt/venv/bin/layer-sharing-exporter"]
    assert json.loads(next(i["value"] for i in runtime if i["instruction"] == "CMD")) == ["serve"]
    assert next(i["value"] for i in runtime if i["instruction"] == "USER") == "0:0"


def test_the_wheel_builds_with_generated_code_and_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("layer_sharing_exporter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "exporter/_generated/cri_runtime_v1_pb2.py" in names
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "layer-sharing-exporter = exporter.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def env_of(stage: list[dict[str, str]]) -> dict[str, str]:
    pairs = [p for i in stage if i["instruction"] == "ENV" for p in shlex.split(i["value"])]
    return dict(pair.split("=", 1) for pair in pairs)


def test_runtime_environment():
    """MALLOC_ARENA_MAX=2 in the environment (glibc reads it before any thread starts; the
    code's mallopt call is gone). No PYTHONOPTIMIZE: the bytecode is compiled at level 0,
    and docstrings and asserts stay (issue 23: only what a measurement justifies)."""
    _, runtime = stages(parsed())
    env = env_of(runtime)
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert "PYTHONOPTIMIZE" not in env
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # the root filesystem is read-only
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"


def test_bytecode_is_compiled_as_the_runtime_runs_python():
    """Only what the exporter imports is compiled, with the settings the runtime stage sets,
    into the cache prefix the runtime reads: hash-checked for the standard library (it comes
    with the runtime base), unchecked for the virtualenv (copied with its bytecode)."""
    build, runtime = stages(parsed())
    settings = {"PYTHONPYCACHEPREFIX": "/opt/pycache"}
    assert settings.items() <= env_of(runtime).items()
    env_at = next(n for n, i in enumerate(build) if i["instruction"] == "ENV" and "PYTHONPYCACHEPREFIX" in i["value"])
    assert settings.items() <= env_of(build[env_at:]).items()
    # Neither changed the pod's RSS measurably (docs/image.md): not set, so not compiled for.
    assert not {"PYTHONOPTIMIZE", "PYTHONNODEBUGRANGES"} & (env_of(build).keys() | env_of(runtime).keys())
    compile_at, compile_run = next(
        (n, i["value"]) for n, i in enumerate(build) if i["instruction"] == "RUN" and "py_compile" in i["value"]
    )
    assert env_at < compile_at
    assert "compileall" not in " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    assert "UNCHECKED_HASH" in compile_run and "CHECKED_HASH" in compile_run
    assert "import exporter.cli.main" in compile_run and "client.ApiClient()" in compile_run


def test_tests_and_benchmark_run_python_as_the_image_does():
    from tests.harness.image_env import PYCACHE, image_python_env, runtime_env

    _, runtime = stages(parsed())
    assert runtime_env() == {k: v for k, v in env_of(runtime).items() if k.startswith(("PYTHON", "MALLOC_"))}
    assert runtime_env()["MALLOC_ARENA_MAX"] == "2"
    env = image_python_env()
    assert "PYTHONOPTIMIZE" not in runtime_env() and env["PYTHONPYCACHEPREFIX"] == str(PYCACHE)


def test_dockerignore_keeps_the_context_to_what_is_copied():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", ".cache", "tests", "benchmarks", "charts", "docs", "**/__pycache__"):
        assert path in ignored
