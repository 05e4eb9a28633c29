"""What grpc's doc/interop-test-descriptions.md says each case's client must see, as
assertions over a client's report (report.py). One judge for every client that reports
observations (grpcio, in-process, grpc-js); grpc-go's client judges itself. Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.interop.report import SPECIAL_MESSAGE

OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED = 0, 1, 2, 4, 12
ECHO_INITIAL = {"x-grpc-test-echo-initial": "test_initial_metadata_value"}
ECHO_TRAILING = {"x-grpc-test-echo-trailing-bin": "ababab"}
SIZES = [31415, 9, 2653, 58979]

Call = dict[str, Any]


def ok(call: Call) -> None:
    assert (call["code"], call["details"]) in ((OK, ""), (OK, "OK")), call
    assert "x-sidecar-error" not in call["trailing"], call


def empty_unary(calls: list[Call]) -> None:
    # call was successful; response is non-null (and serialised to zero bytes)
    (call,) = calls
    ok(call)
    assert (call["responses"], call["empty"]) == (1, True), call


def large_unary(calls: list[Call]) -> None:
    (call,) = calls
    ok(call)
    assert (call["bodies"], call["zeros"]) == ([314159], True), call


def client_streaming(calls: list[Call]) -> None:
    (call,) = calls
    ok(call)
    assert call["aggregated"] == 27182 + 8 + 1828 + 45904 == 74922, call


def server_streaming(calls: list[Call]) -> None:
    # exactly four responses, sized in order
    (call,) = calls
    ok(call)
    assert (call["responses"], call["bodies"], call["zeros"]) == (4, SIZES, True), call


def ping_pong(calls: list[Call]) -> None:
    server_streaming(calls)


def empty_stream(calls: list[Call]) -> None:
    (call,) = calls
    ok(call)
    assert call["responses"] == 0, call


def timeout_on_sleeping_server(calls: list[Call]) -> None:
    # the client's own deadline or a sidecar's (it forwards the remaining budget) may end it
    (call,) = calls
    assert call["code"] == DEADLINE_EXCEEDED, call


def cancel_after_begin(calls: list[Call]) -> None:
    (call,) = calls
    assert (call["code"], call["responses"]) == (CANCELLED, 0), call


def cancel_after_first_response(calls: list[Call]) -> None:
    (call,) = calls
    assert (call["code"], call["bodies"]) == (CANCELLED, [31415]), call


def custom_metadata(calls: list[Call]) -> None:
    # the unary call, then the full-duplex one: both echo the keys, values exact
    unary, duplex = calls
    for call in (unary, duplex):
        ok(call)
        assert call["bodies"] == [314159], call
        assert call["initial"] == ECHO_INITIAL, call
        assert call["trailing"] == ECHO_TRAILING, call


def status_code_and_message(calls: list[Call]) -> None:
    unary, duplex = calls
    for call in (unary, duplex):
        assert (call["code"], call["details"]) == (UNKNOWN, "test status message"), call
        assert "x-sidecar-error" not in call["trailing"], call


def special_status_message(calls: list[Call]) -> None:
    # whitespace, \r\n and non-ASCII characters come back exactly (percent-encoded on the wire)
    (call,) = calls
    assert (call["code"], call["details"]) == (UNKNOWN, SPECIAL_MESSAGE), call


def unimplemented_method(calls: list[Call]) -> None:
    (call,) = calls
    assert call["code"] == UNIMPLEMENTED, call


def unimplemented_service(calls: list[Call]) -> None:
    # UNIMPLEMENTED from whoever answers it: the spec allows either the server (its method
    # table has no such service) or a proxy in between. Through the sidecars here the
    # server answers: the upstream lists grpc.testing.UnimplementedService, so the call
    # is forwarded (tests/interop/lab.py), not refused with x-sidecar-error: no_route.
    (call,) = calls
    assert call["code"] == UNIMPLEMENTED, call
    assert "x-sidecar-error" not in call["trailing"], call


CASES: dict[str, Callable[[list[Call]], None]] = {
    "empty_unary": empty_unary,
    "large_unary": large_unary,
    "client_streaming": client_streaming,
    "server_streaming": server_streaming,
    "ping_pong": ping_pong,
    "empty_stream": empty_stream,
    "timeout_on_sleeping_server": timeout_on_sleeping_server,
    "cancel_after_begin": cancel_after_begin,
    "cancel_after_first_response": cancel_after_first_response,
    "custom_metadata": custom_metadata,
    "status_code_and_message": status_code_and_message,
    "special_status_message": special_status_message,
    "unimplemented_method": unimplemented_method,
    "unimplemented_service": unimplemented_service,
}
