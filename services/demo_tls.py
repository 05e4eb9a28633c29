"""The demo's mTLS: a mesh CA in the working folder, a short-lived certificate per
instance, re-issued while the demo runs, so rotation is exercised, not only described.

Does I/O (writes key and certificate files). Each instance's sidecar (and an app using
the in-process client, which reads the same config) gets a `tls:` block naming its
folder, `WORKDIR/tls/NAME/{cert,key,ca}.pem`, issued by `sidecar ca` (sidecar/tls/ca.py)
for its service and site; the access points' inbound listeners are `permissive`, for
the users outside the mesh. Every REISSUE_S the certificates are issued anew, each living
TTL_S: a sidecar that stopped picking up new files would see its peers refuse it within
a minute, and the demo's calls would fail.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

from sidecar.tls import ca

TTL_S = 60.0  # each certificate's lifetime
REISSUE_S = 20.0  # how often every certificate is issued anew (a third of its life)


class DemoPki:
    def __init__(self, folder: Path, domain: str) -> None:
        self.folder = folder
        self.ca_dir = folder / "ca"
        ca.init_ca(self.ca_dir, domain, datetime.timedelta(days=1))
        self.issued = 0
        self.rounds = 0

    def _issue(self, inst: Any) -> dict[str, str]:
        out = self.folder / inst.name
        ca.issue(self.ca_dir, inst.service, inst.site, out, datetime.timedelta(seconds=TTL_S))
        self.issued += 1
        return {
            "cert_file": str(out / "cert.pem"),
            "key_file": str(out / "key.pem"),
            "ca_file": str(out / "ca.pem"),
        }

    def configure(self, instances: list[Any]) -> None:
        """A certificate for every instance, and its `tls:` block in its sidecar config."""
        for inst in instances:
            inst.sidecar["tls"] = self._issue(inst)
            if inst.service == "accesspoint":
                # the perimeter: its users (the load generators) are outside the mesh and
                # call in plaintext; calls between sidecars are mTLS all the same
                inst.sidecar["inbound"]["mtls"] = "permissive"

    async def rotate(self, instances: list[Any]) -> None:
        """Issue every instance's certificate anew every REISSUE_S, until cancelled."""
        while True:
            await asyncio.sleep(REISSUE_S)
            for inst in instances:
                self._issue(inst)
            self.rounds += 1

    def summary(self) -> str:
        return (
            f"  mTLS between every sidecar: {self.issued} certificates issued "
            f"({TTL_S:.0f} s each), re-issued {self.rounds} times while running"
        )
