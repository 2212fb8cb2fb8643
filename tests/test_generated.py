import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_protobuf_modules_are_not_stale():
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_read_only_protos_declare_no_mutating_rpc():
    text = "".join(p.read_text() for p in (ROOT / "proto").glob("*.proto"))
    for verb in ("Create", "Remove", "Delete", "Update", "Run", "Start", "Stop", "Write", "Prepare", "Commit", "Pull"):
        assert f"rpc {verb}" not in text
