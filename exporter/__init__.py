"""layer-sharing-exporter: shared versus unique container image layer bytes per Kubernetes node."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("layer-sharing-exporter")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
