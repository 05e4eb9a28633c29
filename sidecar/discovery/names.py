"""SRV names from the configured template, and this instance's own names.

Pure (no I/O). One template serves every naming scheme: the default
`_{service}._grpc.{site}.{domain}` (Spotify's `_spotify-search._hm.lon3.spotify.net`),
Kubernetes `_grpc._tcp.{service}.{namespace}.svc.cluster.local` and Consul
`_{service}._tcp.service.{site}.consul` differ only in the template string.
"""

from __future__ import annotations

from sidecar.config import Config

DEFAULT_TEMPLATE = "_{service}._grpc.{site}.{domain}"


def srv_name(
    template: str, *, service: str, site: str, domain: str, namespace: str = "default"
) -> str:
    """Fill in the template; the result is made absolute (trailing dot)."""
    name = template.format(service=service, site=site, domain=domain, namespace=namespace)
    return name if name.endswith(".") else name + "."


def upstream_names(config: Config) -> list[tuple[str, str, str]]:
    """(upstream, site, SRV name) for every upstream discovered through DNS.

    Upstreams with static `endpoints` are left out. An upstream's own `srv_name`
    replaces the template and may use the same placeholders.
    """
    out: list[tuple[str, str, str]] = []
    for upstream, spec in config.upstreams.items():
        if spec.endpoints is not None:
            continue
        template = spec.srv_name or config.discovery.srv_template
        for site in config.upstream_sites(upstream):
            name = srv_name(
                template,
                service=upstream,
                site=site,
                domain=config.domain,
                namespace=config.discovery.namespace,
            )
            out.append((upstream, site, name))
    return out


def own_srv_name(config: Config) -> str:
    """The SRV name this instance registers under (what its callers look up)."""
    assert config.service is not None
    return srv_name(
        config.discovery.srv_template,
        service=config.service,
        site=config.site,
        domain=config.domain,
        namespace=config.discovery.namespace,
    )
