"""The admin surface locked: mutating endpoints only on loopback unless `admin.token` is
set, then only with `Authorization: Bearer`; a non-loopback admin without a token is
refused by the config check; `/config_dump` masks the token and the TSIG secret."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from sidecar.admin.server import AdminServer, refusal
from sidecar.config import ConfigError, parse_config, redacted

TOKEN = "0123456789abcdef-token"


@pytest.mark.parametrize(
    ("method", "remote", "auth", "token", "status"),
    [
        ("GET", "10.1.2.3", None, None, None),  # reading is never locked
        ("POST", "127.0.0.1", None, None, None),
        ("POST", "::1", None, None, None),
        ("POST", None, None, None, None),  # a unix socket
        ("POST", "10.1.2.3", None, None, 403),
        ("DELETE", "10.1.2.3", None, None, 403),
        ("POST", "127.0.0.1", None, TOKEN, 401),  # with a token, loopback needs it too
        ("POST", "10.1.2.3", "Bearer wrong", TOKEN, 401),
        ("POST", "10.1.2.3", f"Bearer {TOKEN}", TOKEN, None),
        ("GET", "10.1.2.3", None, TOKEN, None),
    ],
)
def test_refusal(
    method: str, remote: str | None, auth: str | None, token: str | None, status: int | None
) -> None:
    found = refusal(method, remote, auth, token)
    assert (found[0] if found else None) == status


def test_non_loopback_admin_needs_a_token() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"admin": {"listen": "0.0.0.0:9901"}})
    assert err.value.key == "admin.listen" and "admin.token" in err.value.reason
    parse_config({"admin": {"listen": "0.0.0.0:9901", "token": TOKEN}})
    parse_config({"admin": {"listen": "[::1]:9901"}})
    with pytest.raises(ConfigError) as err:
        parse_config({"admin": {"listen": "0.0.0.0:9901", "token": "short"}})
    assert err.value.key == "admin.token"


def test_config_dump_masks_secrets() -> None:
    config = parse_config(
        {
            "service": "s",
            "inbound": {},
            "admin": {"token": TOKEN},
            "registration": {"tsig": {"name": "k", "secret": "c2VjcmV0"}},
        }
    )
    dump = str(redacted(config))
    assert TOKEN not in dump and "c2VjcmV0" not in dump


async def _admin(listen: str, token: str | None) -> tuple[AdminServer, list[int]]:
    drained: list[int] = []

    async def drain() -> None:
        drained.append(1)

    server = AdminServer(
        listen,
        ready=lambda: [],
        clusters=lambda: {},
        config_dump=lambda: {},
        drain=drain,
        registry=CollectorRegistry(),
        token=token,
    )
    await server.start()
    return server, drained


async def _post(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers) as resp:
        return resp.status


async def test_token_needed_for_drain() -> None:
    server, drained = await _admin("127.0.0.1:0", TOKEN)
    url = f"http://127.0.0.1:{server.port}/drain"
    try:
        assert await _post(url) == 401
        assert await _post(url, Authorization="Bearer nope") == 401
        assert drained == []
        assert await _post(url, Authorization=f"Bearer {TOKEN}") == 200
        assert drained == [1]
        live = f"http://127.0.0.1:{server.port}/live"
        async with aiohttp.ClientSession() as session, session.get(live) as resp:
            assert resp.status == 200
    finally:
        await server.close()


def _own_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
            address: Any = probe.getsockname()[0]
        except OSError:
            return None
    return None if str(address).startswith("127.") else str(address)


async def test_loopback_only_without_a_token() -> None:
    server, drained = await _admin("0.0.0.0:0", None)
    try:
        assert await _post(f"http://127.0.0.1:{server.port}/drain") == 200
        own = _own_address()
        if own is None:
            pytest.skip("no non-loopback address on this machine")
        assert await _post(f"http://{own}:{server.port}/drain") == 403
        assert drained == [1]
    finally:
        await server.close()
