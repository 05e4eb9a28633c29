"""SRV naming: the presets for each platform and the templates they are written in.

Pure (no I/O). A template is a DNS name whose labels may hold placeholders in braces:

- `{service}`: the upstream's name (or this instance's `service` when it registers)
- `{site}`: the site being looked up (a datacenter, a cluster)
- `{domain}`: `domain` (or the site's `discovery.per_site.SITE.domain`)
- `{namespace}`: the Kubernetes namespace (upstream, site, then `discovery.namespace`)
- `{port_name}`: the Service's named port (upstream, then `discovery.port_name`)
- `{cluster_domain}`: the cluster's DNS suffix (site, then `discovery.cluster_domain`)
- `{tag}`: the upstream's `tag` (Consul service tags)

A label that is one placeholder alone and whose value is empty is left out, dot and all:
that is how `{tag}.{service}.service.{site}.consul` reads `web.service.dc1.consul` for an
upstream without a tag and `v2.web.service.dc1.consul` for one with `tag: v2`. Any other
empty value is an error (a name with an empty label does not exist in DNS).

The presets, and where their shapes come from:

- `spotify`: `_{service}._grpc.{site}.{domain}`, after Spotify's `_spotify-search._hm.lon3...`.
- `kubernetes`: `_{port_name}._tcp.{service}.{namespace}.svc.{cluster_domain}`, the SRV
  name of a Service's named port in the Kubernetes DNS specification, as CoreDNS's
  `kubernetes` plugin answers it (one record per ready endpoint of a headless Service).
  `{site}` is not in the name: a site is a cluster, told apart by its `cluster_domain`.
- `consul`: `{tag}.{service}.service.{site}.consul`, Consul's standard service lookup,
  with the site as the datacenter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDERS = ("service", "site", "domain", "namespace", "port_name", "cluster_domain", "tag")

PRESETS: dict[str, str] = {
    "spotify": "_{service}._grpc.{site}.{domain}",
    "kubernetes": "_{port_name}._tcp.{service}.{namespace}.svc.{cluster_domain}",
    "consul": "{tag}.{service}.service.{site}.consul",
}

# Who publishes the records under each preset: the sidecar itself (RFC 2136) only under
# `spotify`; on the platforms, the platform does (the Endpoints controller feeding CoreDNS,
# the Consul catalog fed by its agents and their health checks).
SELF_REGISTERING = frozenset({"spotify"})

_FIELD = re.compile(r"\{([^{}]*)\}")
MAX_LABEL = 63  # RFC 1035, 2.3.4
MAX_NAME = 253  # in text form, without the final dot


class TemplateError(ValueError):
    """A template that cannot make a DNS name; the message says why."""


def placeholders(template: str) -> list[str]:
    """The placeholders a template uses, in order; TemplateError for unknown ones or
    stray braces."""
    names = _FIELD.findall(template)
    for name in names:
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise TemplateError(f"unknown placeholder {{{name}}}; use {known}")
    if "{" in _FIELD.sub("", template) or "}" in _FIELD.sub("", template):
        raise TemplateError("unbalanced brace")
    if not template.strip("."):
        raise TemplateError("empty template")
    return names


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a template in; the result is absolute (trailing dot) and lower-case-preserving.

    A label that is a single placeholder with an empty value is dropped. Raises
    TemplateError for unknown placeholders, empty labels and over-long names.
    """
    placeholders(template)
    labels: list[str] = []
    for label in template.rstrip(".").split("."):
        whole = _FIELD.fullmatch(label)
        if whole is not None and values.get(whole.group(1), "") == "":
            if whole.group(1) in ("service", "site"):
                raise TemplateError(f"{{{whole.group(1)}}} is empty")
            continue
        for name in _FIELD.findall(label):
            if values.get(name, "") == "":
                raise TemplateError(f"{{{name}}} is empty in label {label!r}")
        text = _FIELD.sub(lambda m: values[m.group(1)].rstrip("."), label)
        labels.extend(text.split("."))  # a value may hold dots: domain, cluster_domain
    if not labels:
        raise TemplateError("the name is empty")
    for label in labels:
        if not label:
            raise TemplateError("the name has an empty label (two dots in a row)")
        if len(label) > MAX_LABEL:
            raise TemplateError(f"label {label[:20]!r}... is longer than {MAX_LABEL} bytes")
    name = ".".join(labels)
    if len(name) > MAX_NAME:
        raise TemplateError(f"the name is longer than {MAX_NAME} bytes")
    return name + "."


__all__ = ["PLACEHOLDERS", "PRESETS", "SELF_REGISTERING", "TemplateError", "placeholders", "render"]
