"""A proxyless gRPC client for the xDS tests, run in its own process.

Reads commands on stdin, one per line: `N [key=value ...]` makes N unary Echo calls
through `xds:///TARGET`, with that request metadata, and prints one JSON line
`{"served_by": count, ..., "errors": {...}}`.
The bootstrap comes from GRPC_XDS_BOOTSTRAP, as for any grpcio xDS client;
`--xds-creds` takes the channel's security from xDS (gRPC A29).
"""

from __future__ import annotations

import collections
import json
import sys

import grpc

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc


def main() -> None:
    target = sys.argv[1]
    if "--xds-creds" in sys.argv[2:]:
        # gRPC A29: the security config comes by CDS, the certificates from the
        # bootstrap's certificate providers; plaintext when the cluster has none
        from grpc.experimental import insecure_channel_credentials

        creds = grpc.xds_channel_credentials(insecure_channel_credentials())
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for line in sys.stdin:
            counts: collections.Counter[str] = collections.Counter()
            errors: collections.Counter[str] = collections.Counter()
            count, *pairs = line.split()
            metadata = tuple(tuple(p.split("=", 1)) for p in pairs)
            for _ in range(int(count)):
                try:
                    reply = stub.Unary(
                        echo_pb2.EchoRequest(payload=b"x"), timeout=2, metadata=metadata
                    )
                    counts[reply.served_by] += 1
                except grpc.RpcError as exc:
                    errors[f"{exc.code().name}: {exc.details()}"] += 1
            print(json.dumps({"served_by": dict(counts), "errors": dict(errors)}), flush=True)


if __name__ == "__main__":
    main()
