"""One hand-computed node: the accounting traps with their expected figures.

Layers (by chain): B=1000 bottom of everything; OS=300 on B; A=200 on OS;
X=400 on OS; O2=250 on B; A2 = diff A again but on O2 (200, a different layer);
E=0 (empty) and T=100 on OS for the unused `tool` image.
"""

from __future__ import annotations

from exporter.core.facts import NodeFacts
from tests.fakes import container, image, pod, usage_for

PAUSE = image("pause", ["B"], tags=["localhost/pause:test"])
BASE = image("base", ["B", "OS"])
APP_A = image("app-a", ["B", "OS", "A"], tags=["localhost/app-a:1", "localhost/app-a:latest"])
APP_B = image("app-b", ["B", "OS", "X"])
APP_C = image("app-c", ["B", "O2", "A"])
TOOL = image("tool", ["B", "OS", "E", "T"])
IMAGES = (PAUSE, BASE, APP_A, APP_B, APP_C, TOOL)

SIZES = {
    ("B",): 1000,
    ("B", "OS"): 300,
    ("B", "OS", "A"): 200,
    ("B", "OS", "X"): 400,
    ("B", "O2"): 250,
    ("B", "O2", "A"): 200,
    ("B", "OS", "E"): 0,
    ("B", "OS", "E", "T"): 100,
}


def sample_facts() -> NodeFacts:
    return NodeFacts(
        images=IMAGES,
        containers=(
            container("app", APP_A, "default", "web-1", writable=10),
            container("sidecar", APP_B, "default", "web-1", writable=5),
            container("app", APP_A, "default", "web-2", writable=7),
            container("app", APP_C, "other", "solo", state="exited"),
        ),
        pods=(pod("default", "web-1"), pod("default", "web-2"), pod("other", "solo")),
        layer_usage=usage_for(SIZES),
        sandbox_image_ids=frozenset({PAUSE.image_id}),
        node_name="node-1",
        runtime_name="containerd",
        runtime_version="1.6.20",
    )
