"""layer-sharing-exporter: shared versus unique container image layer bytes per Kubernetes node."""

# The one source of the version: pyproject.toml reads it from here (hatch version.path),
# so the wheel's metadata and the running code always agree.
__version__ = "0.1.0"
