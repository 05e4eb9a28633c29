"""SRV naming presets and templates (sidecar/naming.py) and what the config fills in."""

from __future__ import annotations

from pathlib import Path

import dns.name
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar import naming
from sidecar.cli import main
from sidecar.config import ConfigError, parse_config
from sidecar.discovery.names import own_srv_name, upstream_names

# DNS labels as Kubernetes and Consul allow them: lower-case letters, digits, inner dashes.
label = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
domain = st.lists(label, min_size=1, max_size=3).map(".".join)


@given(service=label, site=label, dom=domain)
def test_spotify_preset_is_the_format_string_it_always_was(
    service: str, site: str, dom: str
) -> None:
    """The default preset renders exactly what str.format of the old default did."""
    values = {"service": service, "site": site, "domain": dom}
    old = "_{service}._grpc.{site}.{domain}".format(**values) + "."
    assert naming.render(naming.PRESETS["spotify"], values) == old


@given(service=label, site=label, tag=label)
def test_consul_tag_label_is_dropped_when_empty_and_prefixed_when_set(
    service: str, site: str, tag: str
) -> None:
    """`{tag}` alone in a label: no tag gives the untagged name; a tag prefixes it."""
    template = naming.PRESETS["consul"]
    plain = naming.render(template, {"service": service, "site": site, "tag": ""})
    tagged = naming.render(template, {"service": service, "site": site, "tag": tag})
    assert plain == f"{service}.service.{site}.consul."
    assert tagged == f"{tag}.{plain}"


@given(
    values=st.fixed_dictionaries(
        {
            "service": label,
            "site": label,
            "namespace": label,
            "port_name": label,
            "cluster_domain": domain,
            "domain": domain,
            "tag": label | st.just(""),
        }
    ),
    preset=st.sampled_from(sorted(naming.PRESETS)),
)
def test_every_preset_makes_a_valid_absolute_dns_name(values: dict[str, str], preset: str) -> None:
    """Whatever the values, a preset's name parses as an absolute DNS name with no empty label."""
    rendered = naming.render(naming.PRESETS[preset], values)
    name = dns.name.from_text(rendered)
    assert name.is_absolute()
    assert name.to_text() == rendered
    assert all(lbl for lbl in name.labels[:-1])


def test_kubernetes_preset_is_the_named_port_srv_name() -> None:
    """`_grpc._tcp.SVC.NS.svc.CLUSTER_DOMAIN.`: the Kubernetes DNS specification's form."""
    name = naming.render(
        naming.PRESETS["kubernetes"],
        {
            "service": "playlist",
            "namespace": "music",
            "port_name": "grpc",
            "cluster_domain": "cluster.local",
            "site": "lon3",
        },
    )
    assert name == "_grpc._tcp.playlist.music.svc.cluster.local."


@pytest.mark.parametrize(
    ("template", "values", "reason"),
    [
        ("_{svc}.x", {}, "unknown placeholder {svc}"),
        ("_{service.x", {"service": "a"}, "unbalanced"),
        ("_{service}._{tag}.x", {"service": "a", "tag": ""}, "{tag} is empty"),
        ("{service}.{site}", {"service": "a", "site": ""}, "{site} is empty"),
        ("{service}..x", {"service": "a"}, "empty label"),
        ("{service}.x", {"service": "a" * 64}, "longer than 63"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(
    template: str, values: dict[str, str], reason: str
) -> None:
    with pytest.raises(naming.TemplateError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        naming.render(template, values)


def k8s_config(**discovery: object) -> dict[str, object]:
    return {
        "site": "lon3",
        "discovery": {
            "naming": "kubernetes",
            "sites": ["lon3", "sto3"],
            "namespace": "music",
            "per_site": {
                "lon3": {"cluster_domain": "lon3.local"},
                "sto3": {"cluster_domain": "sto3.local", "namespace": "music-sto3"},
            },
            **discovery,
        },
        "upstreams": {"playlist": {}, "search": {"port_name": "api", "namespace": "find"}},
    }


def test_kubernetes_sites_are_clusters_with_their_own_suffix() -> None:
    """Per site: its cluster_domain and namespace; per upstream: its port name and namespace."""
    config = parse_config(k8s_config())
    assert upstream_names(config) == [
        ("playlist", "lon3", "_grpc._tcp.playlist.music.svc.lon3.local."),
        ("playlist", "sto3", "_grpc._tcp.playlist.music-sto3.svc.sto3.local."),
        ("search", "lon3", "_api._tcp.search.find.svc.lon3.local."),
        ("search", "sto3", "_api._tcp.search.find.svc.sto3.local."),
    ]


def test_two_sites_sharing_one_name_are_refused() -> None:
    """Two clusters with the same cluster_domain would be one name watched twice."""
    with pytest.raises(ConfigError) as err:
        parse_config(k8s_config(per_site={}))
    assert err.value.key == "discovery.per_site"
    assert "lon3 and sto3" in err.value.reason and "cluster_domain" in err.value.reason


def test_consul_names_per_datacenter_with_and_without_tag() -> None:
    config = parse_config(
        {
            "site": "dc1",
            "discovery": {"naming": "consul", "sites": ["dc1", "dc2"]},
            "upstreams": {"web": {}, "api": {"tag": "v2"}},
        }
    )
    assert [n for _, _, n in upstream_names(config)] == [
        "web.service.dc1.consul.",
        "web.service.dc2.consul.",
        "v2.api.service.dc1.consul.",
        "v2.api.service.dc2.consul.",
    ]


def test_explicit_template_wins_over_the_preset() -> None:
    config = parse_config(
        {
            "site": "dc1",
            "discovery": {"naming": "consul", "srv_template": "_{service}._tcp.{site}.{domain}"},
            "upstreams": {"web": {}},
        }
    )
    assert upstream_names(config) == [("web", "dc1", "_web._tcp.dc1.example.net.")]


@pytest.mark.parametrize("preset", ["kubernetes", "consul"])
def test_registration_is_refused_where_the_platform_registers(preset: str) -> None:
    """`sidecar check` names the key and says who registers instead."""
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "service": "echo",
                "inbound": {},
                "discovery": {"naming": preset},
                "registration": {},
            }
        )
    assert err.value.key == "registration"
    assert preset in err.value.reason and "remove `registration`" in err.value.reason


def test_registration_under_the_default_preset_keeps_its_name() -> None:
    config = parse_config({"service": "echo", "site": "lon3", "inbound": {}, "registration": {}})
    assert own_srv_name(config) == "_echo._grpc.lon3.example.net."


def test_an_upstream_template_that_cannot_make_a_name_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"upstreams": {"web": {"srv_name": "_{tag}._tcp.{site}.x"}}})
    assert err.value.key == "upstreams.web"
    assert "{tag} is empty" in err.value.reason


def test_sidecar_check_refuses_registration_on_kubernetes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "service: echo\ninbound: {}\ndiscovery: {naming: kubernetes}\nregistration: {}\n"
    )
    assert main(["check", "-c", str(cfg)]) == 1
    assert "registration: refused with discovery.naming kubernetes" in capsys.readouterr().err
