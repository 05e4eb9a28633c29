"""The scenario file of `sidecar chaos run`: its schema and its validation.

Pure (parses data; `load_scenario` reads one file). Every error names the key and the
reason, as `sidecar check` does for sidecar configs (sidecar/config.py). Times are
seconds since the load started.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PLACEHOLDERS = ("port", "site", "name", "index", "service", "outbound", "python", "workdir")


class ScenarioError(Exception):
    """A refused scenario: `key` is a dotted path, `reason` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


def _bad(key: str, reason: str) -> ValueError:
    """A validator's error naming its key (relative to the model raising it)."""
    return ValueError(f"{_SEP}{key}{_SEP}{reason}")


_SEP = "\x00"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Service(_Model):
    command: str = Field(min_length=1)  # the app; {port} {site} {name} {index} {outbound}
    sites: dict[str, Annotated[int, Field(ge=0, le=50)]] = Field(min_length=1)
    sidecar: str | None = None  # a sidecar config file; default: `sidecar init`'s
    grpc_services: list[str] = []  # what the app serves (the caller routes these to it)
    health: Literal["grpc", "tcp", "none"] = "tcp"
    calls: list[str] = []  # services of this scenario the app calls (through {outbound})
    cwd: str | None = None  # default: the scenario file's folder
    env: dict[str, str] = {}
    ready_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _placeholders(self) -> Service:
        for name in re.findall(r"\{(\w*)\}", self.command):
            if name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                raise _bad("command", f"unknown placeholder {{{name}}}; known: {known}")
        if "{port}" not in self.command:
            raise _bad("command", "needs {port}, the port the app must listen on")
        for site in self.sites:
            if not _NAME.match(site):
                raise _bad(f"sites.{site}", "not a site name (it becomes a DNS label)")
        return self


class Request(_Model):
    json_: dict[str, Any] | None = Field(default=None, alias="json")  # through the stubs
    base64: str | None = None  # raw request bytes
    hex: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one(self) -> Request:
        given = [k for k in ("json_", "base64", "hex") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give one of json, base64, hex")
        if self.base64 is not None:
            try:
                base64.b64decode(self.base64, validate=True)
            except ValueError as exc:
                raise _bad("base64", f"not base64 ({exc})") from None
        if self.hex is not None:
            try:
                bytes.fromhex(self.hex)
            except ValueError as exc:
                raise _bad("hex", f"not hex ({exc})") from None
        return self


class Load(_Model):
    service: str  # which of `services` the caller sends to
    method: str = Field(pattern=r"^/[\w.]+/\w+$")  # /pkg.Service/Method
    request: Request = Request()
    rate: float | None = Field(default=None, gt=0, le=5000)  # calls per second (open loop)
    concurrency: int | None = Field(default=None, ge=1, le=500)  # or: calls in flight
    duration_s: float = Field(gt=0, le=3600)
    deadline_ms: float = Field(default=1000.0, gt=0)
    max_calls: int = Field(default=200_000, ge=1)  # a bound whatever the rate
    site: str | None = None  # the caller's site; default: the service's first site

    @model_validator(mode="after")
    def _mode(self) -> Load:
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("give one of rate (calls/s) and concurrency (calls in flight)")
        return self


class SteadyState(_Model):
    success_ratio: float = Field(default=0.99, ge=0, le=1)
    p99_ms: float | None = Field(default=None, gt=0)
    no_unknown: bool = True
    no_past_deadline: bool = True
    warmup_s: float = Field(default=1.0, ge=0)  # left out of the steady phase
    deadline_slack_ms: float = Field(default=250.0, ge=0)


class Expect(_Model):
    success_ratio: float | None = Field(default=None, ge=0, le=1)  # over the fault's phase
    p99_ms: float | None = Field(default=None, gt=0)
    recovered_within_s: float | None = Field(default=None, ge=0)  # steady success again
    traffic_moved_within_s: float | None = Field(default=None, ge=0)  # victim gets none
    victim_share_below: float | None = Field(default=None, ge=0, le=1)  # of attempts
    settle_s: float = Field(default=2.0, ge=0)  # victim_share_below counts from then on
    endpoints_kept: bool = False  # the caller forgets no endpoint during the phase
    discovered_within_s: float | None = Field(default=None, ge=0)  # scale_out: seen by then
    no_unknown: bool | None = None
    no_past_deadline: bool | None = None


Action = Literal[
    "kill", "stop", "latency", "abort", "partition", "dns_down", "site_down", "scale_out",
    "scale_in",
]  # fmt: skip
TARGETED = {"kill", "stop", "latency", "abort", "partition", "scale_in"}


class Fault(_Model):
    at_s: float = Field(ge=0)
    action: Action
    target: str = "busiest"  # an instance name (service-site-index) or "busiest"
    service: str | None = None  # default: the load's service
    site: str | None = None  # site_down, scale_out; default: the service's first site
    duration_s: float | None = Field(default=None, gt=0)  # then undone (stop, latency, ...)
    ms: float = Field(default=200.0, ge=0)  # latency
    percent: float = Field(default=100.0, ge=0, le=100)  # latency, abort
    status: str = "UNAVAILABLE"  # abort
    count: int = Field(default=1, ge=1, le=20)  # scale_out
    name: str | None = None  # shown in reports; default: action and target
    expect: Expect = Expect()

    @model_validator(mode="after")
    def _fits(self) -> Fault:
        if self.action not in TARGETED and self.target != "busiest":
            raise _bad("target", f"{self.action} takes no target (it is not one instance)")
        for key in ("traffic_moved_within_s", "victim_share_below"):
            if getattr(self.expect, key) is not None and self.action not in TARGETED:
                raise _bad(f"expect.{key}", f"{self.action} hits no one instance to measure")
        if self.expect.discovered_within_s is not None and self.action != "scale_out":
            raise _bad("expect.discovered_within_s", "only scale_out adds instances to discover")
        return self

    @property
    def label(self) -> str:
        return self.name or (
            f"{self.action} {self.target}" if self.action in TARGETED else self.action
        )


class Abort(_Model):
    success_below: float = Field(default=0.5, ge=0, le=1)  # stop injecting under this
    window_s: float = Field(default=2.0, gt=0)


class Scenario(_Model):
    name: str = Field(pattern=r"^[\w.-]+$")
    domain: str = "example.net"
    # stub folders (put on the apps' PYTHONPATH too) or module names, for JSON requests
    stubs: list[str] = []
    discovery: Literal["embedded", "bind"] = "embedded"  # `sidecar registry`, or BIND 9
    # an instance per network namespace (root, `ip netns`, iptables): auto = when a fault
    # is a partition (then an iptables DROP; without them the sidecar is frozen instead)
    namespaces: Literal["auto", "on", "off"] = "auto"
    services: dict[str, Service] = Field(min_length=1)
    load: Load
    upstream: dict[str, Any] = {}  # the caller's upstream config (over init's defaults)
    steady_state: SteadyState = SteadyState()
    faults: list[Fault] = []
    abort: Abort = Abort()

    @model_validator(mode="after")
    def _refs(self) -> Scenario:
        for name, svc in self.services.items():
            if not _NAME.match(name):
                raise _bad(f"services.{name}", "not a service name (it becomes a DNS label)")
            for peer in svc.calls:
                if peer not in self.services:
                    raise _bad(f"services.{name}.calls", f"no service {peer!r} here")
        if self.load.service not in self.services:
            known = ", ".join(self.services)
            raise _bad("load.service", f"no service {self.load.service!r}; known: {known}")
        if self.load.request.json_ is not None and not self.stubs:
            raise _bad("load.request.json", "needs `stubs` (the folder of your stubs)")
        if self.steady_state.warmup_s >= self.load.duration_s:
            raise _bad("steady_state.warmup_s", "as long as the whole load")
        for i, fault in enumerate(self.faults):
            where = f"faults.{i}"
            service = fault.service or self.load.service
            if service not in self.services:
                raise _bad(f"{where}.service", f"no service {service!r}")
            if fault.at_s >= self.load.duration_s:
                raise _bad(f"{where}.at_s", f"after the load ends ({self.load.duration_s}s)")
            if i and fault.at_s < self.faults[i - 1].at_s:
                raise _bad(f"{where}.at_s", "before the fault above it; list them in order")
            site = fault.site
            if site is not None and site not in self.services[service].sites:
                raise _bad(f"{where}.site", f"{service} has no site {site!r}")
            if fault.target != "busiest" and not fault.target.startswith(f"{service}-"):
                raise _bad(
                    f"{where}.target",
                    f"{fault.target!r} is not an instance of {service} "
                    f"(instances are named {service}-SITE-INDEX, or say busiest)",
                )
        return self

    def service_of(self, fault: Fault) -> str:
        return fault.service or self.load.service

    def caller_site(self) -> str:
        return self.load.site or next(iter(self.services[self.load.service].sites))


def _error(exc: ValidationError) -> ScenarioError:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    reason = first["msg"]
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif first["type"] == "missing":
        reason = "required"
    elif reason.startswith("Value error, "):
        reason = reason.removeprefix("Value error, ")
        if reason.startswith(_SEP):
            head, _, reason = reason[1:].partition(_SEP)
            key = ".".join(p for p in (key, head) if p)
    return ScenarioError(key, reason)


def parse_scenario(data: Any) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("", "a scenario file is a YAML mapping")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise _error(exc) from None


def load_scenario(path: str | Path) -> Scenario:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError("", f"{path} is not valid YAML: {exc}") from None
    return parse_scenario(data)
