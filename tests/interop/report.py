"""What an interop client reports, one JSON line per case: the shape every client
(grpcio, in-process, grpc-js) prints, so that one set of assertions (spec.py) judges
them all. Pure.

    {"case": "ping_pong", "calls": [CALL, ...], "error": null | "what broke"}
    CALL = {"code": 0, "details": "", "responses": 4, "bodies": [31415, 9, 2653, 58979],
            "zeros": true, "aggregated": null, "empty": null,
            "initial": {"x-grpc-test-echo-initial": "..."}, "trailing": {...}}

Metadata keeps only the keys the cases look at (`x-grpc-test-*`) and `x-sidecar-error`
(which says the sidecar, not the server, made a status); binary (`-bin`) values are hex."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# special_status_message: whitespace, a BMP and a non-BMP character (the spec's string)
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


def kept(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata:
        if key.startswith("x-grpc-test-") or key == "x-sidecar-error":
            out[key] = value.hex() if isinstance(value, bytes) else value
    return out


def call(
    *,
    code: int,
    details: str,
    responses: int,
    bodies: list[int],
    zeros: bool,
    aggregated: int | None,
    empty: bool | None,
    initial: Iterable[tuple[str, str | bytes]],
    trailing: Iterable[tuple[str, str | bytes]],
) -> dict[str, Any]:
    return {
        "code": code,
        "details": details,
        "responses": responses,
        "bodies": bodies,
        "zeros": zeros,
        "aggregated": aggregated,
        "empty": empty,
        "initial": kept(initial),
        "trailing": kept(trailing),
    }


def result(case: str, calls: list[dict[str, Any]], error: str | None = None) -> dict[str, Any]:
    return {"case": case, "calls": calls, "error": error}
