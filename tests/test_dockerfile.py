"""The image recipe: parsed with dockerfile-parse (no container engine here), and
the wheel it installs built for real."""

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


def test_multi_stage_on_a_pinned_slim_python_base():
    structure = parsed()
    args = {i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1] for i in structure if i["instruction"] == "ARG"}
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    build, runtime = stages(structure)
    assert build[0]["value"] == "${PYTHON_IMAGE} AS build"
    assert runtime[0]["value"] == "${PYTHON_IMAGE} AS runtime"


def test_dependencies_install_from_the_lock_with_hashes():
    runs = " ".join(i["value"] for i in parsed() if i["instruction"] == "RUN")
    assert "--require-hashes" in runs and "requirements.lock" in runs
    lock = (ROOT / "requirements.lock").read_text()
    for dep in ("grpcio", "protobuf", "prometheus-client", "kubernetes", "pyyaml"):
        assert re.search(rf"^{dep}==\S+ \\\n\s+--hash=sha256:", lock, re.MULTILINE), dep


def test_runtime_stage_has_only_the_venv_and_an_exec_form_entrypoint():
    _, runtime = stages(parsed())
    copies = [i["value"] for i in runtime if i["instruction"] in ("COPY", "ADD")]
    assert copies == ["--from=build /opt/venv /opt/venv", "--from=build /opt/pycache /opt/pycache"]
    assert not [i for i in runtime if i["instruction"] == "RUN"]  # no shell needed
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


def test_bytecode_is_compiled_as_the_runtime_runs_python():
    """-OO and no column tables save RSS; the base image has no stdlib bytecode and
    the root filesystem is read-only, so the build compiles all of it, with the
    very settings the runtime stage sets, into the cache the runtime reads."""
    structure = parsed()
    build, runtime = stages(structure)
    settings = {"PYTHONOPTIMIZE": "2", "PYTHONNODEBUGRANGES": "1", "PYTHONPYCACHEPREFIX": "/opt/pycache"}
    assert settings.items() <= env_of(runtime).items()
    env_at = next(n for n, i in enumerate(build) if i["instruction"] == "ENV" and "PYTHONOPTIMIZE" in i["value"])
    assert settings.items() <= env_of(build[env_at:]).items()
    compile_at, compile_run = next(
        (n, i["value"]) for n, i in enumerate(build) if i["instruction"] == "RUN" and "compileall" in i["value"]
    )
    assert env_at < compile_at
    base = next(i["value"] for i in structure if i["instruction"] == "ARG").split("=", 1)[1]
    minor = re.match(r"python:(\d+\.\d+)", base)
    assert minor is not None
    for tree in (f"/usr/local/lib/python{minor[1]}", f"/opt/venv/lib/python{minor[1]}/site-packages"):
        assert f" {tree} " in f"{compile_run} "
    assert "--invalidation-mode unchecked-hash" in compile_run


def test_tests_and_benchmark_run_python_as_the_image_does():
    from tests.harness.image_env import PYCACHE, image_python_env, runtime_env

    _, runtime = stages(parsed())
    assert runtime_env() == {k: v for k, v in env_of(runtime).items() if k.startswith("PYTHON")}
    env = image_python_env()
    assert env["PYTHONOPTIMIZE"] == "2" and env["PYTHONPYCACHEPREFIX"] == str(PYCACHE)
