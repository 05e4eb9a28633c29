"""The blocking in-process client (`sidecar.client.connect_sync`): generated sync stubs
work unchanged against `services.echo` for all four RPC kinds, the caller's `timeout=` is
the deadline, errors are `grpc.RpcError`s carrying their status and trailers, and retries
move off a dead endpoint found through SRV discovery (BIND)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import sidecar.client
import sidecar.config
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.component.client.test_inprocess_discovery import config
from tests.dns_servers import BindServer, Srv, free_port
from tests.integration.procs import echo_process

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def echo_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One `services.echo` process (name `live`) for the module's tests."""
    with echo_process(tmp_path_factory.mktemp("echo"), "live") as (_proc, port):
        yield port


@pytest.fixture
def channel(echo_port: int) -> Iterator[sidecar.client.SyncChannel]:
    cfg = {"upstreams": {"echo": {"endpoints": [f"127.0.0.1:{echo_port}"]}}}
    with sidecar.client.connect_sync("echo", cfg) as channel:
        yield channel


def Req(**knobs: Any) -> Any:
    return echo_pb2.EchoRequest(**knobs)


def test_is_a_grpc_channel(channel: sidecar.client.SyncChannel) -> None:
    """The object is a `grpc.Channel`; closing it stops its event-loop thread, and a call
    on a closed channel raises ValueError as grpcio's does."""
    assert isinstance(channel, grpc.Channel)
    stub = echo_pb2_grpc.EchoStub(channel)
    channel.close()
    assert not channel._thread.is_alive()
    channel.close()  # twice is fine
    with pytest.raises(ValueError, match="closed channel"):
        stub.Unary(Req(), timeout=1)


def test_unary(channel: sidecar.client.SyncChannel) -> None:
    """A unary call answers; `with_call` gives the call's status and trailers too."""
    stub = echo_pb2_grpc.EchoStub(channel)
    reply = stub.Unary(Req(payload=b"hi"), timeout=5)
    assert (reply.payload, reply.served_by) == (b"hi", "live")
    reply, call = stub.Unary.with_call(
        Req(payload=b"m", echo_metadata=True), timeout=5, metadata=(("x-k", "v"),)
    )
    assert reply.payload == b"m"
    assert call.code() is grpc.StatusCode.OK
    assert dict(call.trailing_metadata())["echo-x-k"] == "v"


def test_unary_future(channel: sidecar.client.SyncChannel) -> None:
    """`future()` calls run concurrently and each resolves to its own response; a done
    callback may block on the result (it runs off the client's event loop)."""
    stub = echo_pb2_grpc.EchoStub(channel)
    futures = [stub.Unary.future(Req(payload=bytes([i]), delay_ms=50), timeout=5) for i in range(5)]
    assert [f.result(timeout=5).payload for f in futures] == [bytes([i]) for i in range(5)]
    assert all(f.done() and f.exception() is None for f in futures)
    seen: queue.Queue[bytes] = queue.Queue()
    done = stub.Unary.future(Req(payload=b"cb"), timeout=5)
    done.result(timeout=5)
    done.add_done_callback(lambda f: seen.put(f.result().payload))  # already done: still runs
    assert seen.get(timeout=5) == b"cb"


def test_server_stream(channel: sidecar.client.SyncChannel) -> None:
    """A server stream iterates its messages in order, then ends with status OK."""
    call = echo_pb2_grpc.EchoStub(channel).ServerStream(Req(payload=b"s", count=4), timeout=5)
    assert [m.sequence for m in call] == [0, 1, 2, 3]
    assert call.code() is grpc.StatusCode.OK


def test_client_stream(channel: sidecar.client.SyncChannel) -> None:
    """A client stream from a generator: the backend counts every request message."""
    stub = echo_pb2_grpc.EchoStub(channel)
    reply = stub.ClientStream((Req(payload=bytes([i])) for i in range(5)), timeout=5)
    assert (reply.received, reply.payload) == (5, bytes([4]))


def test_bidi_with_a_blocking_request_iterator(channel: sidecar.client.SyncChannel) -> None:
    """Bidi ping-pong: the request iterator blocks until the previous reply is read, which
    works only because the client pulls it off its event loop, as grpcio does."""
    replies: queue.Queue[int] = queue.Queue()

    def requests() -> Iterator[Any]:
        for i in range(4):
            yield Req(payload=bytes([i]))
            assert replies.get(timeout=5) == i

    call = echo_pb2_grpc.EchoStub(channel).Bidi(requests(), timeout=10)
    for reply in call:
        replies.put(reply.payload[0])
    assert call.code() is grpc.StatusCode.OK
    assert replies.empty()


def test_error_status(channel: sidecar.client.SyncChannel) -> None:
    """An app's failure raises a `grpc.RpcError` that is also a `grpc.Call`, with the app's
    code and details and no `x-sidecar-error`; a failing stream raises it while iterating."""
    stub = echo_pb2_grpc.EchoStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Unary(Req(status_code=5, status_message="gone"), timeout=5)
    assert isinstance(err.value, grpc.Call)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "gone")
    assert "x-sidecar-error" not in dict(err.value.trailing_metadata())
    call = stub.ServerStream(Req(count=3, status_code=9, fail_after=2), timeout=5)
    got = []
    with pytest.raises(grpc.RpcError) as err:
        for m in call:
            got.append(m.sequence)
    assert got == [0, 1]
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_deadline(channel: sidecar.client.SyncChannel) -> None:
    """`timeout=` bounds the call: a 3 s answer with a 0.3 s timeout fails
    DEADLINE_EXCEEDED, well before the backend would have answered."""
    stub = echo_pb2_grpc.EchoStub(channel)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.Unary(Req(delay_ms=3000), timeout=0.3)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.5
    with pytest.raises(grpc.RpcError) as err:
        list(stub.ServerStream(Req(count=10, delay_ms=1000), timeout=0.3))
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_cancel_a_stream(channel: sidecar.client.SyncChannel) -> None:
    """`cancel()` on a streamed call ends its iteration with CANCELLED."""
    call = echo_pb2_grpc.EchoStub(channel).ServerStream(Req(count=100, delay_ms=20), timeout=10)
    assert next(call).sequence == 0
    assert call.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert err.value.code() is grpc.StatusCode.CANCELLED


def test_many_threads(channel: sidecar.client.SyncChannel) -> None:
    """Calls from several threads at once share the channel; every one answers."""
    stub = echo_pb2_grpc.EchoStub(channel)
    results: list[bytes] = []

    def worker(n: int) -> None:
        for i in range(10):
            results.append(stub.Unary(Req(payload=bytes([n, i])), timeout=5).payload)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == sorted(bytes([n, i]) for n in range(4) for i in range(10))


def test_interceptors(channel: sidecar.client.SyncChannel) -> None:
    """`grpc.intercept_channel` wraps it as any grpc.Channel (it relies on `with_call`)."""

    class AddHeader(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            metadata = (*(details.metadata or ()), ("x-intercepted", "yes"))
            return continuation(details._replace(metadata=metadata), request)

    intercepted = grpc.intercept_channel(channel, AddHeader())
    stub = echo_pb2_grpc.EchoStub(intercepted)
    _reply, call = stub.Unary.with_call(Req(echo_metadata=True), timeout=5)
    assert dict(call.trailing_metadata())["echo-x-intercepted"] == "yes"


def test_retry_off_a_dead_endpoint(bind: BindServer, echo_port: int) -> None:
    """Endpoints from SRV records, one on a closed port: every call succeeds on the live one
    (connect failures are retried on the other endpoint, as in the async client)."""
    live = Srv(10, 10, echo_port, "live.hosts.example.net.")
    dead = Srv(10, 10, free_port(), "dead.hosts.example.net.")
    bind.set_srv("_echo._grpc.a.example.net.", [live, dead], ttl=1)
    with sidecar.client.connect_sync("echo", config(bind)) as channel:
        assert len(channel.upstream.cluster.hosts) == 2
        stub = echo_pb2_grpc.EchoStub(channel)
        served = [stub.Unary(Req(payload=b"x"), timeout=2).served_by for _ in range(20)]
    assert served == ["live"] * 20


def test_bad_upstream_is_refused() -> None:
    """An upstream missing from the config is refused at connect, naming the key, and
    leaves no thread behind."""
    before = threading.active_count()
    with pytest.raises(sidecar.config.ConfigError, match=r"upstreams\.nope"):
        sidecar.client.connect_sync("nope", {"upstreams": {"echo": {}}})
    assert threading.active_count() == before
