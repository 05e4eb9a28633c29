"""CSDS (Client Status Discovery Service) for our own ADS server: what was sent to whom.

Does I/O only as a grpc.aio servicer; `client_configs` is pure over the streams'
recorded state. `grpcio-csds` answers for a gRPC *client's* view; this answers for
the server's view of every connected client, in the same message shapes, so
`grpcdebug` and similar tools can read it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import any_pb2, json_format, timestamp_pb2

from sidecar.xds.stream import StreamState


def client_configs(
    streams: Iterable[StreamState], *, contents: bool = True
) -> list[csds_pb2.ClientConfig]:
    """One ClientConfig per stream: every resource sent, with ACK/NACK status."""
    out = []
    for stream in streams:
        config = csds_pb2.ClientConfig(
            node=json_format.ParseDict(stream.node, base_pb2.Node(), ignore_unknown_fields=True)
        )
        for type_url, state in stream.types.items():
            if state.nacked is not None:
                client_status = dump_pb2.NACKED
            elif state.acked_version == state.sent_version and state.sent_nonce:
                client_status = dump_pb2.ACKED
            else:
                client_status = dump_pb2.REQUESTED
            for name, value in state.sent.items():
                item = config.generic_xds_configs.add(
                    type_url=type_url,
                    name=name,
                    version_info=state.sent_version,
                    client_status=client_status,
                    config_status=(csds_pb2.ERROR if state.nacked is not None else csds_pb2.SYNCED),
                )
                item.last_updated.CopyFrom(_timestamp(state.sent_at))
                if contents:
                    item.xds_config.CopyFrom(any_pb2.Any(type_url=type_url, value=value))
                if state.nacked is not None:
                    item.error_state.details = state.nacked.message
                    item.error_state.version_info = state.nacked.version
                    item.error_state.last_update_attempt.CopyFrom(_timestamp(state.nacked.at))
        out.append(config)
    return out


def _timestamp(at: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(at * 1e9))
    return ts


class ClientStatus(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, clients: Callable[[], Iterable[StreamState]]) -> None:
        self._clients = clients  # the ADS server's streams now

    def _answer(self, req: csds_pb2.ClientStatusRequest) -> csds_pb2.ClientStatusResponse:
        return csds_pb2.ClientStatusResponse(
            config=client_configs(self._clients(), contents=not req.exclude_resource_contents)
        )

    async def FetchClientStatus(
        self, request: csds_pb2.ClientStatusRequest, context: grpc.aio.ServicerContext
    ) -> csds_pb2.ClientStatusResponse:
        return self._answer(request)

    async def StreamClientStatus(
        self,
        request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in request_iterator:
            yield self._answer(request)
