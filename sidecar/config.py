"""The sidecar's configuration: one YAML file, validated whole before anything starts.

Pure (no I/O but reading the file). Every key is documented in README.md with its
default; unknown keys are errors, so a typo is refused rather than ignored. A bad
file raises ConfigError naming the key path and the reason, and nothing is applied.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sidecar import naming
from sidecar.endpoint import parse_hostport

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# gRPC status names accepted wherever a config lists statuses.
STATUS_NAMES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]


class ConfigError(Exception):
    """A refused configuration: `key` is a dotted path, `reason` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hostport(value: str) -> str:
    parse_hostport(value)
    return value


HostPort = Annotated[str, Field(min_length=3)]


class InboundAdmission(_Model):
    """Request dropping in front of the local app (see sidecar/shedding)."""

    max_concurrency: int | None = Field(default=None, ge=1)  # None: no limit
    adaptive: Literal["gradient", "aimd"] | None = None
    min_concurrency: int = Field(default=4, ge=1)
    max_concurrency_limit: int = Field(default=1000, ge=1)
    queue_size: int = Field(default=256, ge=0)
    codel_target_ms: float = Field(default=5.0, gt=0)
    codel_interval_ms: float = Field(default=100.0, gt=0)
    min_deadline_ms: float = Field(default=0.0, ge=0)
    pushback_ms: int = Field(default=50, ge=0)


class FaultDelay(_Model):
    percent: float = Field(ge=0, le=100)
    ms: float = Field(ge=0)


class FaultAbort(_Model):
    percent: float = Field(ge=0, le=100)
    status: str = "UNAVAILABLE"

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        if value not in STATUS_NAMES or value == "OK":
            raise ValueError(f"{value!r} is not a gRPC error status name")
        return value


class Faults(_Model):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class AppHealth(_Model):
    """How the inbound side checks its local app."""

    mode: Literal["grpc", "tcp", "none"] = "grpc"
    service: str = ""  # grpc.health.v1 service name to ask for ("" = whole server)
    interval_s: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)


class Http2(_Model):
    """A listener's HTTP/2 limits toward its callers (sidecar/h2relay/connection.py and
    plane.py say which attack each one bounds). Names and defaults follow Envoy's
    `http2_protocol_options` where Envoy has the limit."""

    max_concurrent_streams: int = Field(default=10_000, ge=1, le=2**31 - 1)
    max_header_list_size: int = Field(default=16 * 1024, ge=1024, le=2**24)
    max_continuation_frames: int = Field(default=8, ge=1)  # nghttp2 1.61's default
    max_consecutive_inbound_frames_with_empty_payload: int = Field(default=1, ge=0)
    max_inbound_priority_frames_per_stream: int = Field(default=100, ge=0)
    max_inbound_window_update_frames_per_data_frame_sent: int = Field(default=10, ge=1)
    max_inbound_control_frames_per_s: int = Field(default=1000, ge=1)
    max_outbound_control_frames: int = Field(default=1000, ge=1)
    premature_reset_min_stream_lifetime_s: float = Field(default=1.0, ge=0)
    premature_reset_total_stream_count: int = Field(default=500, ge=2)
    preface_timeout_s: float = Field(default=10.0, gt=0)
    frame_timeout_s: float = Field(default=10.0, gt=0)
    idle_timeout_s: float = Field(default=3600.0, gt=0)
    max_connections: int = Field(default=1024, ge=1)
    # answer bytes held for a caller that does not take them (CVE-2019-9517)
    max_buffered_bytes: int = Field(default=16 * MiB, ge=64 * 1024)


class TlsConfig(_Model):
    """This sidecar's certificate (URI SAN: its SPIFFE ID), key and trust bundle
    (sidecar/tls/certs.py checks them; they are watched for rotation)."""

    cert_file: str = Field(min_length=1)  # leaf first, then intermediates
    key_file: str = Field(min_length=1)
    ca_file: str = Field(min_length=1)  # may hold several CAs (CA rotation)


class AuthzRule(_Model):
    methods: list[str] = Field(min_length=1)  # package.Service/Method or package.Service/*
    callers: list[str] = Field(min_length=1)  # service names (any site) or SPIFFE ID patterns


class Authz(_Model):
    """Which callers may call which methods of the local app (sidecar/authz/rules.py)."""

    mode: Literal["enforce", "audit"] = "enforce"
    default: Literal["deny", "allow"] = "deny"
    rules: list[AuthzRule] = []


class Inbound(_Model):
    listen: HostPort = "0.0.0.0:8181"
    app: HostPort = "127.0.0.1:9181"
    health: AppHealth = AppHealth()
    admission: InboundAdmission = InboundAdmission()
    faults: Faults | None = None  # injected on calls to the app (upstream name `app`)
    http2: Http2 = Http2()
    rate_limits: list[InboundRateLimit] = []  # first matching method pattern applies
    # callers' TLS: default `strict` when the top-level `tls` is set, else `off`
    mtls: Literal["strict", "permissive", "off"] | None = None
    authz: Authz | None = None  # off unless configured (needs mTLS)

    _v = field_validator("listen", "app")(_check_hostport)


class Outbound(_Model):
    listen: HostPort = "127.0.0.1:15001"
    channel_idle_timeout_s: float = Field(
        default=300.0, gt=0
    )  # pooled channels unused this long close
    http2: Http2 = Http2()

    _v = field_validator("listen")(_check_hostport)


class Admin(_Model):
    listen: HostPort = "127.0.0.1:9901"
    # with a token, mutating endpoints (POST /drain, /faults) need `Authorization: Bearer`;
    # without one they answer only callers on loopback (sidecar/admin/server.py)
    token: str | None = Field(default=None, min_length=16)

    _v = field_validator("listen")(_check_hostport)


class Xds(_Model):
    """Serve this sidecar's upstreams over xDS (ADS) to proxyless gRPC clients and Envoy."""

    listen: HostPort = "127.0.0.1:18000"
    refresh_s: float = Field(default=1.0, gt=0)  # health/breaker changes reach EDS this fast

    _v = field_validator("listen")(_check_hostport)


class SiteNaming(_Model):
    """What differs per site (a Kubernetes cluster, a Consul datacenter) in its SRV names."""

    cluster_domain: str | None = None  # default: discovery.cluster_domain
    namespace: str | None = None  # default: discovery.namespace
    domain: str | None = None  # default: the top-level `domain`
    nameservers: list[HostPort] | None = None  # default: discovery.nameservers

    _v = field_validator("nameservers")(
        lambda v: v if v is None else [_check_hostport(x) for x in v]
    )


NamingPreset = Literal["spotify", "kubernetes", "consul"]


def _check_template(value: str | None) -> str | None:
    if value is not None:
        try:
            naming.placeholders(value)
        except naming.TemplateError as exc:
            raise ValueError(str(exc)) from None
    return value


class DiscoveryConfig(_Model):
    nameservers: list[HostPort] = []  # empty: the system resolver configuration
    naming: NamingPreset = "spotify"  # the SRV naming preset (sidecar/naming.py)
    srv_template: str | None = None  # default: the preset's template
    sites: list[str] = []  # empty: just this instance's own site
    ttl_floor_s: float = Field(default=5.0, ge=0)
    ttl_cap_s: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.1, ge=0, le=1)
    timeout_s: float = Field(default=2.0, gt=0)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    empty_grace_s: float = Field(default=30.0, ge=0)  # NXDOMAIN/empty believed after this
    namespace: str = "default"  # fills {namespace} (Kubernetes)
    port_name: str = "grpc"  # fills {port_name}: the Service's named port (Kubernetes)
    cluster_domain: str = "cluster.local"  # fills {cluster_domain} (Kubernetes)
    per_site: dict[str, SiteNaming] = {}  # per site: cluster_domain, namespace, ...

    _v = field_validator("nameservers")(lambda v: [_check_hostport(x) for x in v])
    _t = field_validator("srv_template")(_check_template)

    @property
    def template(self) -> str:
        """The template in force: the explicit one, else the preset's."""
        return self.srv_template or naming.PRESETS[self.naming]

    def nameservers_for(self, site: str) -> list[str]:
        per = self.per_site.get(site)
        if per is not None and per.nameservers is not None:
            return list(per.nameservers)
        return list(self.nameservers)


class TsigKey(_Model):
    name: str
    secret: str  # base64
    algorithm: str = "hmac-sha256"


class Registration(_Model):
    nameserver: HostPort = "127.0.0.1:5353"
    zone: str | None = None  # default: `domain`
    tsig: TsigKey | None = None
    ttl_s: int = Field(default=30, ge=1)
    target: str | None = None  # default: {service}-{site}-{port}.{site}.{domain}
    address: str | None = None  # default: the inbound listen address, or 127.0.0.1
    priority: int = Field(default=10, ge=0, le=65535)
    weight: int = Field(default=100, ge=0, le=65535)
    renew_s: float | None = Field(default=None, gt=0)  # default: ttl_s / 3
    timeout_s: float = Field(default=2.0, gt=0)  # per UPDATE exchange
    check_interval_s: float = Field(default=1.0, gt=0)  # how often app health is read
    # After deregistering on drain/SIGTERM, keep serving this long before the listeners
    # close, so callers' DNS caches let go of us first. Default: ttl_s.
    linger_s: float | None = Field(default=None, ge=0)

    _v = field_validator("nameserver")(_check_hostport)


class Breaker(_Model):
    fail_max: int = Field(default=5, ge=1)
    reset_timeout_s: float = Field(default=10.0, gt=0)
    max_reset_timeout_s: float = Field(default=300.0, gt=0)
    max_ejection_percent: float = Field(default=50.0, ge=0, le=100)


class Limits(_Model):
    max_requests: int = Field(default=1024, ge=1)
    max_pending: int = Field(default=1024, ge=0)


class Retries(_Model):
    max_attempts: int = Field(default=3, ge=1)
    on: list[str] = ["UNAVAILABLE"]
    budget_percent: float = Field(default=20.0, ge=0, le=100)
    min_retries_per_s: float = Field(default=10.0, ge=0)
    budget_window_s: float = Field(default=10.0, gt=0)  # the budget's sliding window
    backoff_base_ms: float = Field(default=25.0, ge=0)
    backoff_max_ms: float = Field(default=250.0, ge=0)
    buffer_bytes: int = Field(default=1 * MiB, ge=0)  # streams replayable up to this size

    @field_validator("on")
    @classmethod
    def _statuses(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in STATUS_NAMES:
                raise ValueError(f"{name!r} is not a gRPC status name")
        return value


class HedgingPolicy(_Model):
    """gRPC A6's hedgingPolicy (grpc/proposal A6-client-retries.md): up to `max_attempts`
    copies of a call, a new one every `hedging_delay_ms` until one answers. The hedges
    after the first draw from a retry budget of their own, like retries do."""

    max_attempts: int = Field(ge=2, le=5)  # A6: more than 1; clients cap it at 5
    hedging_delay_ms: float = Field(default=0.0, ge=0)
    non_fatal_status_codes: list[str] = []
    budget_percent: float = Field(default=20.0, ge=0, le=100)
    min_retries_per_s: float = Field(default=10.0, ge=0)
    budget_window_s: float = Field(default=10.0, gt=0)

    @field_validator("non_fatal_status_codes")
    @classmethod
    def _statuses(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in STATUS_NAMES:
                raise ValueError(f"{name!r} is not a gRPC status name")
        return value


class HealthCheck(_Model):
    service: str = ""  # grpc.health.v1 service name asked ("" = the whole server)
    interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    unhealthy_threshold: int = Field(default=2, ge=1)
    healthy_threshold: int = Field(default=1, ge=1)


class Throttling(_Model):
    """Client-side adaptive throttling (Google SRE book, "Handling Overload")."""

    k: float = Field(default=2.0, ge=1)
    window_s: float = Field(default=120.0, gt=0)
    min_requests: int = Field(default=20, ge=0)  # no local rejection below this many


# ---- traffic policy: header routes, weighted splits, mirrors, local rate limits --------
# (what each key does: README.md "Routes" and "Rate limits"; the runtime objects:
# sidecar/route_rules.py, sidecar/ratelimit.py, sidecar/h2relay/mirror.py)


def _compile_regex(value: str) -> Any:
    """An RE2 pattern (linear-time matching: no backtracking blow-up on hostile headers)."""
    import re2  # google-re2

    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(value, options=options)
    except re2.error as exc:
        why = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"not an RE2 regular expression: {why}") from None


class HeaderMatch(_Model):
    """One request header condition of a route: exactly one of exact, prefix, regex,
    present; `invert` turns the answer round."""

    name: str = Field(min_length=1)
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None  # RE2 syntax, matched against the whole value
    present: bool | None = None
    invert: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError("header names are lowercase in HTTP/2 (RFC 9113 §8.2.1)")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile_regex(value)
        return value

    @model_validator(mode="after")
    def _one_matcher(self) -> HeaderMatch:
        given = [k for k in ("exact", "prefix", "regex", "present") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a header match needs exactly one of exact, prefix, regex, present "
                f"(got {', '.join(given) or 'none'})"
            )
        return self


class RouteMatch(_Model):
    """Which calls a route takes: all of its conditions hold (none given: every call)."""

    service: str | None = Field(default=None, min_length=1)  # a gRPC service, every method
    method: str | None = None  # one full method path, /package.Service/Method
    headers: list[HeaderMatch] = []

    @field_validator("method")
    @classmethod
    def _method(cls, value: str | None) -> str | None:
        if value is not None:
            service, sep, name = value.lstrip("/").partition("/")
            if not value.startswith("/") or not sep or not service or not name or "/" in name:
                raise ValueError(f"{value!r} is not a full method path /package.Service/Method")
        return value


class WeightedUpstream(_Model):
    upstream: str = Field(min_length=1)
    weight: int = Field(ge=0, le=1_000_000)


class MirrorConfig(_Model):
    """Copy a share of a route's calls to a shadow upstream, fire and forget."""

    upstream: str = Field(min_length=1)
    percent: float = Field(default=100.0, ge=0, le=100)
    max_in_flight: int = Field(default=64, ge=1)  # shadow calls beyond this are shed
    max_request_bytes: int = Field(default=1 * MiB, ge=0)  # larger requests are not copied
    timeout_ms: float = Field(default=1000.0, gt=0)  # a shadow call is cut after this


class RouteConfig(_Model):
    """One outbound route: a match, where matching calls go (one `upstream`, or a
    weighted `split`), and the policies that replace the upstream's on this route."""

    match: RouteMatch = RouteMatch()
    upstream: str | None = None
    split: list[WeightedUpstream] | None = None
    hash_on: str | None = Field(default=None, min_length=1)  # request header: sticky split
    timeout_ms: float | None = Field(default=None, gt=0)  # default: the upstream's
    per_try_timeout_ms: float | None = Field(default=None, gt=0)  # default: the upstream's
    retries: Retries | None = None  # default: the upstream's
    hedging_policy: HedgingPolicy | None = None  # default: the upstream's (unless `retries`)
    mirror: MirrorConfig | None = None

    @field_validator("hash_on")
    @classmethod
    def _hash_on(cls, value: str | None) -> str | None:
        if value is not None and value != value.lower():
            raise ValueError("header names are lowercase in HTTP/2 (RFC 9113 §8.2.1)")
        return value

    @model_validator(mode="after")
    def _target(self) -> RouteConfig:
        if (self.upstream is None) == (self.split is None):
            raise ValueError("a route needs exactly one of `upstream` and `split`")
        if self.split is not None:
            if not self.split:
                raise ValueError("split: needs at least one upstream")
            if sum(w.weight for w in self.split) <= 0:
                raise ValueError("split: the weights sum to 0, so no call could go anywhere")
            names = [w.upstream for w in self.split]
            if len(set(names)) != len(names):
                raise ValueError("split: an upstream is listed twice")
        elif self.hash_on is not None:
            raise ValueError("hash_on: only a route with a `split` hashes")
        return self

    @property
    def targets(self) -> list[str]:
        """The upstreams this route sends calls to (the mirror's not included)."""
        if self.split is not None:
            return [w.upstream for w in self.split]
        return [self.upstream] if self.upstream is not None else []


class TokenBucketConfig(_Model):
    """A token bucket: `tokens_per_s` refill, at most `burst` tokens held (full at start)."""

    tokens_per_s: float = Field(gt=0, le=1_000_000)
    burst: int = Field(default=1, ge=1, le=1_000_000)


class InboundRateLimit(TokenBucketConfig):
    """Calls to the local app whose method matches `method` share one bucket: a full
    path (/package.Service/Method), a service (/package.Service/*), or `*` (all). With
    `per_caller`, one bucket per caller identity (the mTLS peer's SPIFFE ID; plaintext
    callers share one)."""

    method: str = "*"
    per_caller: bool = False

    @field_validator("method")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if value == "*":
            return value
        service, sep, name = value.lstrip("/").partition("/")
        if not value.startswith("/") or not sep or not service or not name or "/" in name:
            raise ValueError(
                f"{value!r} is not a method pattern: /package.Service/Method, "
                "/package.Service/* or *"
            )
        if ("*" in name and name != "*") or "*" in service:
            raise ValueError(f"{value!r}: `*` stands only for a whole method name, or alone")
        return value


def check_routes(config: Config) -> None:
    """Cross-checks of `routes`: every upstream they name exists (the key and the reason)."""
    for i, route in enumerate(config.routes):
        if route.upstream is not None and route.upstream not in config.upstreams:
            raise ValueError(f"routes.{i}.upstream: no upstream named {route.upstream!r}")
        for j, part in enumerate(route.split or ()):
            if part.upstream not in config.upstreams:
                raise ValueError(
                    f"routes.{i}.split.{j}.upstream: no upstream named {part.upstream!r}"
                )
        mirror = route.mirror
        if mirror is not None:
            if mirror.upstream not in config.upstreams:
                raise ValueError(
                    f"routes.{i}.mirror.upstream: no upstream named {mirror.upstream!r}"
                )
            if mirror.upstream in route.targets:
                raise ValueError(
                    f"routes.{i}.mirror.upstream: {mirror.upstream!r} already takes this "
                    "route's calls; a shadow must be another upstream"
                )
        if route.hedging_policy is not None and route.retries is not None:
            raise _retried_and_hedged(f"routes.{i}")
        for name in route.targets:
            up = config.upstreams[name]
            # what this route's calls to `name` run with: its own policies, else the upstream's
            hedged = route.hedging_policy is not None or (
                route.retries is None and up.hedging_policy is not None
            )
            per_try = route.per_try_timeout_ms or up.per_try_timeout_ms
            if hedged and per_try is not None:
                raise ValueError(
                    f"routes.{i}.hedging_policy: its calls to upstream {name!r} would be hedged "
                    "with a per_try_timeout_ms; hedged attempts run to the call's deadline "
                    "(gRPC A6 has no per-attempt timeout for hedging)"
                )


def _retried_and_hedged(key: str) -> ValueError:
    """A block (a route, an upstream) that names both failure policies: one must go."""
    return ValueError(
        f"{key}.hedging_policy: a call is either retried or hedged, never both (gRPC A6): "
        "remove `retries` or `hedging_policy`"
    )


LbName = Literal["peak_ewma", "least_request", "round_robin", "random", "ring_hash"]


class UpstreamConfig(_Model):
    grpc_services: list[str] = []
    endpoints: list[HostPort] | None = None  # static; without it, SRV discovery
    srv_name: str | None = None  # default: discovery.srv_template filled in per site
    tag: str | None = None  # fills {tag} (Consul service tags)
    port_name: str | None = None  # fills {port_name}; default: discovery.port_name
    namespace: str | None = None  # fills {namespace}; default: the site's, discovery.namespace
    sites: list[str] | None = None  # default: discovery.sites
    timeout_ms: float = Field(default=1000.0, gt=0)  # when the caller sends no deadline
    per_try_timeout_ms: float | None = Field(default=None, gt=0)
    lb: LbName = "peak_ewma"
    hash_key: str = "x-hash-key"  # request metadata key for ring_hash
    overprovisioning_factor: float = Field(default=1.4, ge=1)
    panic_threshold_percent: float = Field(default=50.0, ge=0, le=100)
    breaker: Breaker = Breaker()
    limits: Limits = Limits()
    retries: Retries | None = None  # off unless configured
    hedging_policy: HedgingPolicy | None = None  # off unless configured; never with retries
    health_check: HealthCheck | None = None
    throttling: Throttling | None = Throttling()
    faults: Faults | None = None
    rate_limit: TokenBucketConfig | None = None  # calls to this upstream, off unless set
    tls: bool = True  # with the top-level `tls`: mTLS to this upstream (false: a peer outside)
    identities: list[str] | None = None  # the peer IDs accepted; default: this upstream's name

    _v = field_validator("endpoints")(lambda v: v if v is None else [_check_hostport(x) for x in v])
    _t = field_validator("srv_name")(_check_template)


class LogConfig(_Model):
    """The sidecar's own log lines (sidecar/logs.py), on stderr."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    repeat_interval_s: float = Field(default=10.0, ge=0)  # a repeated event logs once per this


class AccessLogConfig(_Model):
    """One JSON line per logical call (sidecar/access_log.py)."""

    path: str = Field(default="stdout", min_length=1)  # a file (appended to), or "stdout"
    format: Literal["json"] = "json"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # share of calls logged
    buffer_lines: int = Field(default=10000, ge=1)  # lines waiting for the writer; beyond: dropped


_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token, lower case (gRPC)


class TracingConfig(_Model):
    """Distributed traces: OpenTelemetry spans per call, exported over OTLP (sidecar/tracing/)."""

    sample_ratio: float = Field(default=0.01, ge=0, le=1)  # traces started here; failures always
    exporter: Literal["otlp_grpc", "otlp_http"] = "otlp_grpc"
    # default: http://127.0.0.1:4317 (otlp_grpc) or http://127.0.0.1:4318/v1/traces (otlp_http)
    endpoint: str | None = None
    headers: dict[str, str] = {}  # sent with every export (an API key, a tenant)
    timeout_s: float = Field(default=10.0, gt=0)  # one export request
    queue_calls: int = Field(default=2048, ge=1)  # finished calls waiting; beyond: dropped
    batch_spans: int = Field(default=512, ge=1)  # spans per export request at most
    export_interval_s: float = Field(default=1.0, gt=0)
    service_name: str | None = None  # the resource's service.name; default: `service`

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"{value!r} is not an http:// or https:// URL with a host "
                "(e.g. http://127.0.0.1:4317)"
            )
        try:
            parsed.port  # noqa: B018 (it raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, v in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} must be a lower-case HTTP token")
            if any(c in v for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: the value must not hold CR, LF or NUL")
        return value


def _tracing_off(value: Any) -> Any:
    """`tracing: off` (YAML reads a bare off as false) and `tracing: "off"` mean no tracing."""
    if value is False or value == "off":
        return None
    if value is True or value == "on":
        raise ValueError("write `tracing: {}` for tracing with every default, or `tracing: off`")
    return value


class Config(_Model):
    service: str | None = None
    site: str = "local"
    domain: str = "example.net"
    inbound: Inbound | None = None
    outbound: Outbound | None = None
    admin: Admin = Admin()
    max_message_bytes: int = Field(default=16 * MiB, ge=1024)
    drain_grace_s: float = Field(default=10.0, ge=0)
    discovery: DiscoveryConfig = DiscoveryConfig()
    registration: Registration | None = None
    xds: Xds | None = None  # off unless configured
    access_log: AccessLogConfig | None = None  # off unless configured
    tracing: TracingConfig | None = None  # off unless configured (`tracing: off` too)
    log: LogConfig = LogConfig()
    tls: TlsConfig | None = None  # off unless configured: plaintext between sidecars
    upstreams: dict[str, UpstreamConfig] = {}
    routes: list[RouteConfig] = []  # outbound, before grpc_services; first match wins

    @property
    def inbound_mtls(self) -> str:
        """The inbound listener's `mtls` mode in force."""
        mode = self.inbound.mtls if self.inbound is not None else None
        return mode or ("strict" if self.tls is not None else "off")

    def _tls_checks(self) -> None:
        from sidecar.authz.rules import Authorizer
        from sidecar.tls.identity import IdPattern, SpiffeId

        if self.tls is not None:
            if not self.service:
                raise ValueError(
                    "tls: needs `service`: the certificate must name "
                    "spiffe://<domain>/site/<site>/service/<service>"
                )
            try:
                SpiffeId.parse(str(SpiffeId(self.domain, self.site, self.service)))
            except ValueError as exc:
                raise ValueError(
                    f"tls: domain, site and service make no SPIFFE ID: {exc}"
                ) from None
        inbound = self.inbound
        if inbound is not None and inbound.mtls in ("strict", "permissive") and self.tls is None:
            raise ValueError(f"inbound.mtls: {inbound.mtls} needs the top-level `tls` block")
        if inbound is not None and inbound.authz is not None:
            if self.inbound_mtls == "off":
                raise ValueError(
                    "inbound.authz: needs mTLS on the inbound listener (callers are told "
                    "apart by their certificates): set `tls`, and inbound.mtls strict or permissive"
                )
            authz = inbound.authz
            try:
                Authorizer(
                    [(r.methods, r.callers) for r in authz.rules],
                    domain=self.domain,
                    default=authz.default,
                    mode=authz.mode,
                )
            except ValueError as exc:
                raise ValueError(f"inbound.authz.{exc}") from None
        for name, spec in self.upstreams.items():
            for i, text in enumerate(spec.identities or ()):
                try:
                    IdPattern.parse(text, self.domain)
                except ValueError as exc:
                    raise ValueError(f"upstreams.{name}.identities[{i}]: {exc}") from None
            if spec.identities is not None and (self.tls is None or not spec.tls):
                raise ValueError(
                    f"upstreams.{name}.identities: only checked over mTLS (needs the "
                    "top-level `tls` and this upstream's tls: true)"
                )

    _off = field_validator("tracing", mode="before")(_tracing_off)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        check_routes(self)
        self._tls_checks()
        seen: dict[str, str] = {}
        for name, upstream in self.upstreams.items():
            for svc in upstream.grpc_services:
                if svc in seen:
                    raise ValueError(
                        f"upstreams.{name}.grpc_services: {svc!r} is already routed to "
                        f"upstream {seen[svc]!r}"
                    )
                seen[svc] = name
        if self.admin.token is None and not is_loopback(parse_hostport(self.admin.listen)[0]):
            raise ValueError(
                "admin.listen: a non-loopback admin address needs admin.token, or anyone who "
                "reaches it could drain the sidecar or inject faults"
            )
        if self.registration is not None and (self.inbound is None or not self.service):
            raise ValueError("registration: needs `service` and an `inbound` listener to publish")
        preset = self.discovery.naming
        if self.registration is not None and preset not in naming.SELF_REGISTERING:
            who = {
                "kubernetes": "Kubernetes publishes a pod's SRV and A records itself (the "
                "endpoints of its headless Service, once the pod is ready)",
                "consul": "Consul publishes what its agents register and health-check",
            }[preset]
            raise ValueError(
                f"registration: refused with discovery.naming {preset}: {who}; "
                "remove `registration` (the sidecar registers nothing on this platform)"
            )
        for up_name, spec in self.upstreams.items():
            if spec.hedging_policy is not None and spec.retries is not None:
                raise _retried_and_hedged(f"upstreams.{up_name}")
            if spec.hedging_policy is not None and spec.per_try_timeout_ms is not None:
                raise ValueError(
                    f"upstreams.{up_name}.hedging_policy: hedged attempts run to the call's "
                    "deadline (gRPC A6 has no per-attempt timeout for hedging): remove "
                    "`per_try_timeout_ms` or `hedging_policy`"
                )
        for up_name, spec in self.upstreams.items():
            if spec.endpoints is not None:
                continue
            seen_names: dict[str, str] = {}
            for site in self.upstream_sites(up_name):
                try:
                    srv = self.srv_name_for(up_name, site)
                except naming.TemplateError as exc:
                    raise ValueError(
                        f"upstreams.{up_name}: no SRV name for site {site}: {exc}"
                    ) from None
                if srv in seen_names:
                    raise ValueError(
                        f"discovery.per_site: sites {seen_names[srv]} and {site} give upstream "
                        f"{up_name} the same SRV name {srv}; a site needs a name of its own "
                        "(with naming kubernetes: its own per_site.SITE.cluster_domain)"
                    )
                seen_names[srv] = site
        return self

    @property
    def sites(self) -> list[str]:
        """Sites to discover, local first."""
        sites = list(self.discovery.sites) or [self.site]
        if self.site in sites:
            sites.remove(self.site)
        return [self.site, *sites]

    def naming_values(self, upstream: str | None, site: str) -> dict[str, str]:
        """What fills the placeholders for `upstream` (None: this instance) in `site`."""
        disc = self.discovery
        per = disc.per_site.get(site, SiteNaming())
        spec = self.upstreams.get(upstream) if upstream is not None else None
        service = upstream if upstream is not None else (self.service or "")
        return {
            "service": service,
            "site": site,
            "domain": per.domain or self.domain,
            "namespace": (spec.namespace if spec else None) or per.namespace or disc.namespace,
            "port_name": (spec.port_name if spec else None) or disc.port_name,
            "cluster_domain": per.cluster_domain or disc.cluster_domain,
            "tag": (spec.tag if spec else None) or "",
        }

    def srv_name_for(self, upstream: str | None, site: str) -> str:
        """The SRV name looked up for `upstream` in `site` (None: this instance's own)."""
        spec = self.upstreams.get(upstream) if upstream is not None else None
        template = (spec.srv_name if spec else None) or self.discovery.template
        return naming.render(template, self.naming_values(upstream, site))

    def upstream_sites(self, name: str) -> list[str]:
        explicit = self.upstreams[name].sites
        if explicit is None:
            return self.sites
        return sorted(explicit, key=lambda s: s != self.site)


def is_loopback(host: str | None) -> bool:
    """`host` (an address, `localhost`, or "" / None for a unix socket) is this machine only."""
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_SUBKEY = re.compile(r"[a-z_]+: ")


def _format_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    reason = first["msg"]
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif reason.startswith("Value error, "):
        reason = reason.removeprefix("Value error, ")
        # cross-checks name their own key path; a section's own check may name one
        # of its keys (`split: ...` under routes.0 is routes.0.split)
        if not key and ": " in reason:
            key, _, reason = reason.partition(": ")
        elif key and _SUBKEY.match(reason):
            sub, _, reason = reason.partition(": ")
            key = f"{key}.{sub}"
    return ConfigError(key, reason)


# Keys of an earlier release, still accepted (and ignored) with a warning that says what
# to do, so a config written for it keeps starting. There is one data plane now (the
# HTTP/2 frame relay), which forwards every RPC kind as frames and needs no kind table.
DEPRECATED = {
    "dataplane": "there is one data plane (the HTTP/2 frame relay): remove the key",
    "method_kinds": "the relay forwards every RPC kind without a kind table: remove the key",
    "proto_modules": "the relay needs no generated modules to forward calls: remove the key",
}


def deprecations(data: Any) -> list[str]:
    """What a parsed YAML document says that this release only accepts for compatibility."""
    if not isinstance(data, dict):
        return []
    return [f"{key}: deprecated, ignored; {why}" for key, why in DEPRECATED.items() if key in data]


def parse_config(data: Any) -> Config:
    """Validate a parsed YAML document; raise ConfigError naming the first bad key.
    Deprecated keys are logged (one warning each) and dropped."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", "the config file must be a YAML mapping")
    for warning in deprecations(data):
        log.warning("config: %s", warning)
    data = {k: v for k, v in data.items() if k not in DEPRECATED}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _format_error(exc) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    return parse_config(data)


def redacted(config: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced, for /config_dump."""
    data = config.model_dump(mode="json")
    reg = data.get("registration")
    if reg and reg.get("tsig"):
        reg["tsig"]["secret"] = "<redacted>"
    if data.get("admin", {}).get("token"):
        data["admin"]["token"] = "<redacted>"
    return data
