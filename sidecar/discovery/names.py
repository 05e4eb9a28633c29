"""SRV names from the configured naming, and this instance's own name.

Pure (no I/O). The templates and presets (`spotify`, `kubernetes`, `consul`) are
`sidecar/naming.py`'s; what fills each placeholder per upstream and site is
`Config.naming_values`'s. The config refuses, at load, a template that cannot make a
name and two sites that would share one.
"""

from __future__ import annotations

from sidecar import naming
from sidecar.config import Config

DEFAULT_TEMPLATE = naming.PRESETS["spotify"]


def srv_name(
    template: str,
    *,
    service: str,
    site: str,
    domain: str,
    namespace: str = "default",
    port_name: str = "grpc",
    cluster_domain: str = "cluster.local",
    tag: str = "",
) -> str:
    """Fill in the template; the result is absolute (trailing dot)."""
    return naming.render(
        template,
        {
            "service": service,
            "site": site,
            "domain": domain,
            "namespace": namespace,
            "port_name": port_name,
            "cluster_domain": cluster_domain,
            "tag": tag,
        },
    )


def upstream_names(config: Config) -> list[tuple[str, str, str]]:
    """(upstream, site, SRV name) for every upstream discovered through DNS.

    Upstreams with static `endpoints` are left out. An upstream's own `srv_name`
    replaces the template and may use the same placeholders.
    """
    out: list[tuple[str, str, str]] = []
    for upstream, spec in config.upstreams.items():
        if spec.endpoints is not None:
            continue
        for site in config.upstream_sites(upstream):
            out.append((upstream, site, config.srv_name_for(upstream, site)))
    return out


def own_srv_name(config: Config) -> str:
    """The SRV name this instance registers under (what its callers look up)."""
    assert config.service is not None
    return config.srv_name_for(None, config.site)
