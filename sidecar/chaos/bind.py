"""BIND 9 as a chaos run's DNS server (`discovery: bind`): an authoritative primary for
the scenario's zone that takes TSIG-signed RFC 2136 updates, as in production.

Does I/O (writes the zone and named.conf; `named -g` is started by the caller as one
of the run's processes). The zone file is written only once: a restarted `named` (the
`dns_down` fault) reads it back with its journal (`.jnl`), so registrations survive as
they do in a real BIND, and instances keep renewing theirs.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

KEY_NAME = "sidecar-chaos."


def named() -> str | None:
    """The `named` binary, or None (Debian: apt-get install bind9)."""
    found = shutil.which("named")
    return found or ("/usr/sbin/named" if os.path.exists("/usr/sbin/named") else None)


def new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def prepare(folder: Path, zone: str, hosts: list[str], port: int, secret: str) -> Path:
    """Write named.conf (listening on `hosts`, port `port`) and, the first time, the zone
    file; returns named.conf."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / f"{zone}.db"
    if not db.exists():
        db.write_text(
            "$TTL 30\n"
            f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 5\n"
            f"@ IN NS ns.{zone}.\n"
            "ns IN A 127.0.0.1\n"
        )
    listen = " ".join(f"{h};" for h in hosts)
    conf = folder / "named.conf"
    conf.write_text(f"""options {{
    directory "{folder}";
    pid-file "{folder}/named.pid";
    session-keyfile "{folder}/session.key";
    managed-keys-directory "{folder}";
    listen-on port {port} {{ {listen} }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    max-records-per-type 0;
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{
    type primary;
    file "{db}";
    allow-update {{ key "{KEY_NAME}"; }};
}};
""")
    return conf
