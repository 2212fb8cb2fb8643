"""Run Python here as the image runs it: the Dockerfile's runtime-stage
PYTHON* and MALLOC_* environment (a bytecode cache prefix, glibc's arena cap),
read from the Dockerfile itself so the tests and the benchmark cannot drift from it.

The image's cache prefix (/opt/pycache) becomes .cache/pycache-image here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent.parent
PYCACHE = ROOT / ".cache" / "pycache-image"


def runtime_env() -> dict[str, str]:
    """The PYTHON* and MALLOC_* variables the runtime stage sets, as written there."""
    envs = DockerfileParser(path=str(ROOT / "Dockerfile")).envs  # the last stage's
    return {k: v for k, v in envs.items() if k.startswith(("PYTHON", "MALLOC_"))}


def image_python_env(write_bytecode: bool = True) -> dict[str, str]:
    """os.environ plus the image's Python settings, its cache moved under .cache.

    With `write_bytecode` the first process to import a module caches its
    bytecode (the image has it precompiled; see `compile_like_image`).
    """
    env = {**os.environ, **runtime_env(), "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_like_image() -> None:
    """Precompile what the image precompiles (standard library, site-packages,
    the package) with the image's settings, as its build stage does."""
    trees = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], str(ROOT / "exporter")]
    subprocess.run(
        # Test directories hold deliberately broken files; the base image has none.
        [sys.executable, "-m", "compileall", "-q", "-j0", "-x", r"/(test|tests|idle_test)/", *trees],
        env=image_python_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def compile_like_pip_install() -> None:
    """Byte-compile the package as `pip install` does (Python's default settings),
    so that a process run that way does not compile it at every start."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "exporter")], check=True)


PIP_VENV = ROOT / ".cache" / "pip-install-venv"


def pip_installed_python() -> str:
    """A Python with the exporter as `pip install` gives it: its own virtualenv
    holding only the locked runtime dependencies and the package (byte-compiled,
    not editable), none of the test tools. The dependencies are kept between runs
    (until requirements.lock changes); the package is installed afresh each time.
    pip finds its index in the machine's own configuration."""
    lock = (ROOT / "requirements.lock").read_bytes()
    stamp = PIP_VENV / "requirements.lock"
    python = PIP_VENV / "bin" / "python"
    if not python.exists() or not stamp.exists() or stamp.read_bytes() != lock:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PIP_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(ROOT / "requirements.lock")], check=True)
        stamp.write_bytes(lock)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True)
    return str(python)


def default_python_env() -> dict[str, str]:
    """os.environ without any PYTHON* setting: Python as a plain install runs it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
