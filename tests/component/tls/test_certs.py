"""Certificates from `sidecar ca`, checked and used for real TLS on loopback: mutual
authentication with SPIFFE IDs, the refusals (wrong key, wrong identity, expired, another
CA), and rotation: new handshakes get the new certificate while an open connection lives on."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.tls import ca
from sidecar.tls.certs import CertStore, TlsError, TlsFiles, check, peer_identity
from sidecar.tls.identity import SpiffeId

HOUR = datetime.timedelta(hours=1)
PLAYLIST = SpiffeId("example.net", "lon3", "playlist")
VIEW = SpiffeId("example.net", "lon3", "playlistview")


def files(folder: Path) -> TlsFiles:
    return TlsFiles(str(folder / "cert.pem"), str(folder / "key.pem"), str(folder / "ca.pem"))


@pytest.fixture
def mesh_ca(tmp_path: Path) -> Path:
    ca.init_ca(tmp_path / "ca", "example.net", datetime.timedelta(days=1))
    return tmp_path / "ca"


def leaf(
    mesh_ca: Path, who: SpiffeId, out: Path, ttl: datetime.timedelta = HOUR, **kw: object
) -> TlsFiles:
    ca.issue(mesh_ca, who.service, who.site, out, ttl, **kw)  # type: ignore[arg-type]
    return files(out)


def test_issued_files_pass_the_check(mesh_ca: Path, tmp_path: Path) -> None:
    ident = check(leaf(mesh_ca, PLAYLIST, tmp_path / "p"), PLAYLIST, time.time())
    assert ident.spiffe_id == str(PLAYLIST)
    assert 3500 < ident.not_after - time.time() <= 3600


def test_refusals_name_the_key_and_the_reason(mesh_ca: Path, tmp_path: Path) -> None:
    p = leaf(mesh_ca, PLAYLIST, tmp_path / "p")
    with pytest.raises(
        TlsError,
        match=r"tls.cert_file: the certificate names .*playlist, but this sidecar is .*playlistview",
    ):
        check(p, VIEW, time.time())
    other = leaf(mesh_ca, VIEW, tmp_path / "v")
    mixed = TlsFiles(p.cert_file, other.key_file, p.ca_file)
    with pytest.raises(TlsError, match=r"tls\.key_file: the key does not match"):
        check(mixed, PLAYLIST, time.time())
    with pytest.raises(TlsError, match=r"tls\.cert_file: the certificate is expired"):
        check(p, PLAYLIST, time.time() + 7200)
    with pytest.raises(TlsError, match=r"tls\.ca_file: cannot read"):
        check(
            TlsFiles(p.cert_file, p.key_file, str(tmp_path / "missing.pem")), PLAYLIST, time.time()
        )


class Server:
    """A TLS echo-ish server on loopback that records each caller's SPIFFE ID."""

    def __init__(self, store: CertStore) -> None:
        self.store = store
        self.callers: list[str | None] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.callers.append(peer_identity(writer.get_extra_info("ssl_object")))
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self.store.server_context()
        )
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def served(mesh_ca: Path, tmp_path: Path) -> AsyncIterator[tuple[Server, int, Path]]:
    store = CertStore(leaf(mesh_ca, PLAYLIST, tmp_path / "server"), PLAYLIST, time.time())
    server = Server(store)
    port = await server.start()
    yield server, port, tmp_path / "server"
    assert server.server is not None
    server.server.close()


async def connect(
    port: int, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)


async def test_mutual_tls_tells_each_side_who_the_other_is(
    served: tuple[Server, int, Path], mesh_ca: Path, tmp_path: Path
) -> None:
    server, port, _ = served
    client = CertStore(leaf(mesh_ca, VIEW, tmp_path / "client"), VIEW, time.time())
    reader, writer = await connect(port, client.client_context())
    sslobj = writer.get_extra_info("ssl_object")
    assert peer_identity(sslobj) == str(PLAYLIST)
    assert sslobj.selected_alpn_protocol() == "h2"
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    assert server.callers == [str(VIEW)]
    writer.close()


async def test_no_certificate_or_another_ca_is_refused(
    served: tuple[Server, int, Path], tmp_path: Path
) -> None:
    _, port, _ = served
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname, bare.verify_mode = False, ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        reader, writer = await connect(port, bare)
        writer.write(b"x")
        await asyncio.wait_for(reader.readexactly(1), 5)  # TLS 1.3: the refusal comes after
    ca.init_ca(tmp_path / "rogue", "example.net", datetime.timedelta(days=1))
    rogue = CertStore(leaf(tmp_path / "rogue", VIEW, tmp_path / "rc"), VIEW, time.time())
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        reader, writer = await connect(port, rogue.client_context())
        writer.write(b"x")
        await asyncio.wait_for(reader.readexactly(1), 5)


async def test_rotation_reaches_new_handshakes_and_spares_open_connections(
    served: tuple[Server, int, Path], mesh_ca: Path, tmp_path: Path
) -> None:
    server, port, folder = served
    client = CertStore(leaf(mesh_ca, VIEW, tmp_path / "client"), VIEW, time.time())
    reader, writer = await connect(port, client.client_context())
    old_serial = server.store.identity.serial
    assert not server.store.refresh(time.time())  # nothing changed on disk
    ca.issue(mesh_ca, "playlist", "lon3", folder, HOUR)
    assert server.store.refresh(time.time())
    assert server.store.identity.serial != old_serial
    _, writer2 = await connect(port, client.client_context())
    new_cert = writer2.get_extra_info("ssl_object").getpeercert(binary_form=False)
    assert int(new_cert["serialNumber"], 16) == server.store.identity.serial
    writer.write(b"still here")  # the connection from before the rotation
    assert await reader.readexactly(10) == b"still here"
    writer.close()
    writer2.close()


async def test_a_bad_new_certificate_is_refused_and_the_old_one_stays(
    served: tuple[Server, int, Path], mesh_ca: Path, tmp_path: Path
) -> None:
    server, port, folder = served
    serial = server.store.identity.serial
    ca.issue(mesh_ca, "search", "lon3", folder, HOUR)  # another service's certificate
    assert not server.store.refresh(time.time())
    assert server.store.last_error is not None and "search" in server.store.last_error
    assert server.store.identity.serial == serial
    client = CertStore(leaf(mesh_ca, VIEW, tmp_path / "client"), VIEW, time.time())
    _, writer = await connect(port, client.client_context())
    cert = writer.get_extra_info("ssl_object").getpeercert()
    assert int(cert["serialNumber"], 16) == serial
    writer.close()
