"""Hot reload of the config file (SIGHUP, `POST /reload`, the in-process client's
`reload()`): checked whole, applied live by the parts that claim its keys.

reloader.py tells the flow and the contract a reloadable section follows; diff.py is
the pure diff and the config's version hash; parts.py holds the parts a sidecar and
the in-process client are made of (upstreams, faults, admission, listeners).
"""

from sidecar.reload.reloader import (
    Change,
    ConfigVersion,
    Part,
    Reloader,
    ReloadResult,
    first_version,
)

__all__ = ["Change", "ConfigVersion", "Part", "ReloadResult", "Reloader", "first_version"]
