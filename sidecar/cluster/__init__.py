"""An upstream's live endpoint set and the decision of which endpoint to call.

Pure: time comes in as `now`, randomness from an injected `random.Random`.
"""

from sidecar.cluster.cluster import Cluster, Host

__all__ = ["Cluster", "Host"]
