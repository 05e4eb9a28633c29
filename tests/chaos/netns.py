"""The chaos namespaces live in the engine now (sidecar/chaos/netns.py); the Python
scenarios of the full tier import them from here."""

from sidecar.chaos.netns import Namespace, Network, available, sweep_stale

__all__ = ["Namespace", "Network", "available", "sweep_stale"]
