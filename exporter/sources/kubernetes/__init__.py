"""The Kubernetes API: this node's pods and their workloads, and the report's pod proxy."""
