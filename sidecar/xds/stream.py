"""One ADS stream's state-of-the-world protocol state: what to send, ACK and NACK.

Pure: no I/O, no asyncio; `now` is passed in. The server feeds it every
DiscoveryRequest and every catalogue change and writes whatever responses it returns.

Rules (xDS protocol, "state of the world" variant over ADS):

1. Each type URL is independent: its own subscription, nonce, version sent and
   version acknowledged.
2. A request whose `response_nonce` is not the last nonce we sent for its type is
   stale (it answers a response the client has not seen the successor of); it is
   ignored entirely, as the protocol says.
3. A request answering our last nonce is an ACK if it has no `error_detail`, else a
   NACK. A NACK is logged and remembered; we do not resend the same content (the
   client would only reject it again) but send the next change as usual.
4. LDS and CDS subscribe by name or by wildcard (no names, or `*`); RDS and EDS by
   name only. A response carries every subscribed resource that exists; for LDS and
   CDS an absent name therefore means "does not exist".
5. We respond to the first request of a type, to a changed subscription, and
   whenever the subscribed content differs from what this client was last sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from sidecar.xds.resources import TYPE_URLS, WILDCARD_TYPES

log = logging.getLogger(__name__)

# type URL → resource name → serialized resource
Catalogue = Mapping[str, Mapping[str, bytes]]
MAX_NACKS_KEPT = 10


@dataclass(frozen=True, slots=True)
class Nack:
    version: str
    nonce: str
    message: str
    code: int
    at: float


@dataclass
class TypeState:
    """Per type URL on one stream."""

    subscribed: frozenset[str] | None = None  # None: wildcard
    sent: dict[str, bytes] = field(default_factory=dict)
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float = 0.0
    acked_version: str = ""
    nacked: Nack | None = None  # the NACK of the latest response, if it was NACKed
    nacks: list[Nack] = field(default_factory=list)  # the last few, oldest first


class StreamState:
    """The server side of one AggregatedDiscoveryService stream."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.node: dict[str, Any] = {}
        self.node_id = ""
        self.types: dict[str, TypeState] = {}
        self._nonce = 0

    def on_request(
        self,
        req: discovery_pb2.DiscoveryRequest,
        catalogue: Catalogue,
        versions: Mapping[str, str],
        now: float,
    ) -> list[discovery_pb2.DiscoveryResponse]:
        if req.HasField("node") and not self.node_id:
            self.node_id = req.node.id
            self.node = json_format.MessageToDict(req.node)
        type_url = req.type_url
        if type_url not in TYPE_URLS:
            log.info("xds %s: ignoring request for unsupported type %s", self.peer, type_url)
            return []
        state = self.types.get(type_url)
        first = state is None
        if state is None:
            state = self.types[type_url] = TypeState()
        elif req.response_nonce != state.sent_nonce:
            return []  # stale: rule 2
        if req.response_nonce:
            if req.HasField("error_detail"):
                nack = Nack(
                    version=state.sent_version,
                    nonce=req.response_nonce,
                    message=req.error_detail.message,
                    code=req.error_detail.code,
                    at=now,
                )
                state.nacked = nack
                state.nacks = [*state.nacks, nack][-MAX_NACKS_KEPT:]
                log.warning(
                    "xds %s (%s) NACKed %s version %s: %s",
                    self.peer,
                    self.node_id,
                    type_url.rsplit(".", 1)[-1],
                    nack.version,
                    nack.message,
                )
            else:
                state.acked_version = req.version_info
                state.nacked = None
        names = frozenset(req.resource_names)
        wildcard = type_url in WILDCARD_TYPES and (not names or "*" in names)
        subscription = None if wildcard else names - {"*"}
        changed = subscription != state.subscribed
        state.subscribed = subscription
        if first or changed or self._wanted(type_url, catalogue) != state.sent:
            if not first and not changed and state.nacked is not None:
                return []  # rule 3: never resend what was just rejected
            return [self._respond(type_url, catalogue, versions, now)]
        return []

    def on_catalogue(
        self, catalogue: Catalogue, versions: Mapping[str, str], now: float
    ) -> list[discovery_pb2.DiscoveryResponse]:
        """Responses for every subscribed type whose content changed for this client."""
        out = []
        for type_url in TYPE_URLS:  # LDS, RDS, CDS, EDS: the make-before-break order
            state = self.types.get(type_url)
            if state is not None and self._wanted(type_url, catalogue) != state.sent:
                out.append(self._respond(type_url, catalogue, versions, now))
        return out

    def _wanted(self, type_url: str, catalogue: Catalogue) -> dict[str, bytes]:
        available = catalogue.get(type_url, {})
        subscribed = self.types[type_url].subscribed
        if subscribed is None:
            return dict(available)
        return {n: available[n] for n in sorted(subscribed) if n in available}

    def _respond(
        self, type_url: str, catalogue: Catalogue, versions: Mapping[str, str], now: float
    ) -> discovery_pb2.DiscoveryResponse:
        state = self.types[type_url]
        wanted = self._wanted(type_url, catalogue)
        self._nonce += 1
        state.sent = wanted
        state.sent_version = versions.get(type_url, "0")
        state.sent_nonce = str(self._nonce)
        state.sent_at = now
        return discovery_pb2.DiscoveryResponse(
            type_url=type_url,
            version_info=state.sent_version,
            nonce=state.sent_nonce,
            resources=[any_pb2.Any(type_url=type_url, value=v) for v in wanted.values()],
        )

    def dump(self) -> dict[str, Any]:
        """What this client subscribed to, was sent, ACKed and NACKed."""
        return {
            "peer": self.peer,
            "node_id": self.node_id,
            "node": self.node,
            "types": {
                type_url: {
                    "subscribed": None if s.subscribed is None else sorted(s.subscribed),
                    "sent_version": s.sent_version,
                    "sent_nonce": s.sent_nonce,
                    "sent_at": s.sent_at,
                    "sent_names": sorted(s.sent),
                    "acked_version": s.acked_version,
                    "nacked": None if s.nacked is None else _nack_dict(s.nacked),
                    "nacks": [_nack_dict(n) for n in s.nacks],
                }
                for type_url, s in self.types.items()
            },
        }


def _nack_dict(nack: Nack) -> dict[str, Any]:
    return {
        "version": nack.version,
        "nonce": nack.nonce,
        "message": nack.message,
        "code": nack.code,
        "at": nack.at,
    }
