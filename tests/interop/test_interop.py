"""gRPC's interop cases (grpc's doc/interop-test-descriptions.md, those that need no TLS
or credentials) across clients, servers and paths:

- `direct`: client → server, the control: a failure here is the interop code's, not the
  sidecar's;
- `pair`: client → outbound sidecar → inbound sidecar → server (real processes);
- `inprocess`: the in-process client (`sidecar.client.connect`) → inbound sidecar → server;
- `inprocess_direct`: the in-process client → server (an upstream that runs no sidecar).

Clients: grpcio, @grpc/grpc-js and grpc-go's own interop client; servers: grpcio,
grpc-js and grpc-go's own interop server. One client process runs every case of one
(path, client, server) cell; each test checks one case of it against spec.py (grpc-go's
client checks itself: its exit status is the verdict)."""

from __future__ import annotations

import pytest

from tests.integration.procs import Sidecar, http, wait_until
from tests.interop.lab import Lab, Missing
from tests.interop.spec import CASES

pytestmark = pytest.mark.timeout(120)

CLIENTS = ["grpcio", "grpcjs", "grpcgo"]
SERVERS = ["grpcio", "grpcjs", "grpcgo"]
CELLS = [
    *(
        (path, client, server)
        for path in ("direct", "pair")
        for client in CLIENTS
        for server in SERVERS
    ),
    *(
        (path, "inprocess", server)
        for path in ("inprocess", "inprocess_direct")
        for server in SERVERS
    ),
]
PARAMS = [(*cell, case) for cell in CELLS for case in CASES]

# A race between two gRPC stacks with no sidecar in between, seen on the control path:
# grpc-go's server ends a call whose deadline ran out with RST_STREAM(CANCEL) and no
# status, and grpcio's client, when it reads that reset before it has handled its own
# 1 ms timer (a few percent of runs on a busy 2-core machine), reports CANCELLED. Only
# that exact outcome is let off (as an xfail naming it); anything else still fails.
# Through the sidecars the client gets the sidecar's DEADLINE_EXCEEDED instead
# (sidecar/h2relay/call.py, on_up_reset), and so does the in-process client, which
# runs the same call.
KNOWN_RACES = {
    ("direct", "grpcio", "grpcgo", "timeout_on_sleeping_server"): (
        1,  # CANCELLED
        "Received RST_STREAM with error code 8",
        "grpc-go's server reset the stream (CANCEL) at its deadline before grpcio's "
        "client handled its own 1 ms timer",
    ),
}


def _id(param: tuple[str, str, str, str]) -> str:
    path, client, server, case = param
    who = "client" if client == "inprocess" else f"{client}-client"
    return f"{path}-{who}-{server}-server-{case}"


@pytest.mark.parametrize("cell", PARAMS, ids=[_id(p) for p in PARAMS])
def test_interop(lab: Lab, cell: tuple[str, str, str, str]) -> None:
    """The case passes on this path, with this client and server, as the spec asks."""
    path, client, server, case = cell
    try:
        got = lab.result(path, client, server, case)
    except Missing as err:
        pytest.fail(str(err), pytrace=False)
    if client == "grpcgo":
        assert got["passed"], got["log"]
        return
    assert got["error"] is None, got["error"]
    race = KNOWN_RACES.get(cell)
    calls = got["calls"]
    if race is not None and [(c["code"], race[1] in c["details"]) for c in calls] == [
        (race[0], True)
    ]:
        pytest.xfail(race[2])
    CASES[case](calls)


def test_no_call_left_in_flight(lab: Lab) -> None:
    """After the cells above (cancels and expired deadlines among them), every sidecar
    they used has no call in flight: each ended call released its stream and its slot."""
    for server, (outbound, inbound) in lab.pairs.items():
        for sidecar in (outbound, inbound):
            wait_until(lambda s=sidecar: not _in_flight(s), timeout=5, what=f"{server} idle")


def _in_flight(sidecar: Sidecar) -> list[str]:
    status, body = http("GET", sidecar.url("/metrics"))
    assert status == 200, status
    gauges = ("sidecar_requests_in_flight{", "sidecar_admission_in_flight ")
    return [
        line
        for line in body.decode().splitlines()
        if line.startswith(gauges) and float(line.rpartition(" ")[2]) != 0
    ]
