"""The two listeners: grpc.aio servers whose one generic handler feeds the pipeline.

Does I/O (binds sockets). grpcio asks the handler once per call for the method's
handler; the answer (route + RPC kind + raw-bytes callables) is cached per method, so a
call's only per-call work is the pipeline itself. Methods the sidecar answers itself
(the inbound health service) come first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

from sidecar.proxy.kinds import MethodKinds
from sidecar.proxy.pipeline import Pipeline, Route

_CACHE_LIMIT = 10_000  # method paths come from callers: bound the cache


class ProxyHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(
        self,
        pipeline: Pipeline,
        kinds: MethodKinds,
        resolve: Callable[[str], Route | None],
        local: Mapping[str, grpc.RpcMethodHandler] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._kinds = kinds
        self._resolve = resolve
        self._local = dict(local or {})
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    def clear(self) -> None:
        """Forget cached routes (call after routes change)."""
        self._cache.clear()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        found = self._cache.get(method) or self._local.get(method)
        if found is not None:
            return found
        handler = _handler(self._pipeline, self._resolve(method), method, self._kinds.kind(method))
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[method] = handler
        return handler


def _handler(pipeline: Pipeline, route: Route | None, method: str, kind: str) -> Any:
    call = pipeline.call

    if kind == "unary":

        async def unary(request: bytes, context: Any) -> bytes | None:
            return await call(route, method, kind, request, context)

        return grpc.unary_unary_rpc_method_handler(unary)
    if kind == "server_stream":

        async def server_stream(request: bytes, context: Any) -> None:
            await call(route, method, kind, request, context)

        return grpc.unary_stream_rpc_method_handler(server_stream)
    if kind == "client_stream":

        async def client_stream(requests: Any, context: Any) -> bytes | None:
            return await call(route, method, kind, requests, context)

        return grpc.stream_unary_rpc_method_handler(client_stream)

    async def bidi(requests: Any, context: Any) -> None:
        await call(route, method, kind, requests, context)

    return grpc.stream_stream_rpc_method_handler(bidi)


def make_server(
    handler: grpc.GenericRpcHandler, listen: str, max_message_bytes: int
) -> tuple[grpc.aio.Server, int]:
    """A server on `listen` (port 0 picks one); returns it with the bound port.

    SO_REUSEPORT is off so that a port already in use is an error, not a silent share."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port
