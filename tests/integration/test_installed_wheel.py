"""The package as a user installs it: the session's wheel (conftest.py `built`, made from a
clean copy of the repository, so the build itself must generate the stubs) installed
into a fresh virtualenv outside the repository, run with no PYTHONPATH from another
folder: the demo, the example services, every `sidecar` verb and the stubs with their
types. Also the sdist: it carries what the build needs, and a wheel built from it has
the stubs; and `make proto` runs the generator the build runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tomllib
import uuid
import zipfile
from pathlib import Path

import pytest

from sidecar import __version__
from tests.integration.conftest import Built
from tests.integration.packaging import ROOT, clean_copy, outside_env, run
from tests.integration.services.test_demo_direct import survivors
from tests.integration.test_dockerfile_build import PURE

# the first test to ask for the venv builds the wheel (~50 s compiling) and installs it
pytestmark = pytest.mark.timeout(720)


def in_venv(venv: Path, *cmd: str, cwd: Path) -> str:
    return run([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd, timeout=120, env=outside_env())


def test_demo_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """`sidecar demo` from the venv alone: exit 0, both sites served, no orphans."""
    demo_id = uuid.uuid4().hex
    summary = tmp_path / "summary.json"
    cmd = [str(installed / "bin" / "sidecar"), "demo", "--duration", "10", "--no-dashboard",
           "--demo-id", demo_id, "--summary-out", str(summary)]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=tmp_path, env=outside_env(), capture_output=True, text=True, timeout=240
    )
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary_text = done.stdout.partition("summary per phase and site")[2]
    assert "lon3" in summary_text and "sto3" in summary_text, done.stdout[-3000:]
    result = json.loads(summary.read_text())
    assert result["mode"] == "sidecars"
    steady = {r["site"]: r for r in result["phases"] if r["phase"] == "steady"}
    for site in ("lon3", "sto3"):
        assert steady[site]["count"] > 0 and steady[site]["ok"] > 0, steady
        # the walk reached every layer; sto3's view calls its peers in-process (the example
        # stubs through sidecar.client), lon3's through its sidecar
        walk = result["walk"][site]
        for service in ("accesspoint", "playlistview", "playlist"):
            assert walk.get(service, 0) > 0, (site, walk)
    assert result["inprocess"] == ["playlistview-sto3-0"]
    assert survivors(demo_id) == []


def test_every_entry_point_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """The example services, each `sidecar` verb, and the stubs (with .pyi and py.typed)
    come from the venv, compiled modules included unless built pure."""
    assert "--port" in in_venv(installed, "python", "-m", "services.echo", "--help", cwd=tmp_path)
    for verb in ("run", "check", "resolve", "registry", "xds", "demo"):
        assert verb in in_venv(installed, "sidecar", "--help", cwd=tmp_path)
    assert "--listen" in in_venv(installed, "sidecar", "xds", "--help", cwd=tmp_path)
    assert "--zone" in in_venv(installed, "sidecar", "registry", "--help", cwd=tmp_path)
    assert "--duration" in in_venv(installed, "sidecar", "demo", "--help", cwd=tmp_path)
    version = in_venv(installed, "sidecar", "--version", cwd=tmp_path)
    assert version.strip() == f"sidecar {__version__}"
    where = in_venv(
        installed,
        "python",
        "-c",
        "import json, sidecar, services, meshtest.echo.v1.echo_pb2_grpc, "
        "music.playlist.v1.playlist_pb2 as m; from sidecar import native; "
        "print(json.dumps([m.__file__, sidecar.__file__, services.__file__, native.compiled()]))",
        cwd=tmp_path,
    )
    *files, compiled = json.loads(where)
    assert all(Path(f).is_relative_to(installed) for f in files), where
    stub = Path(files[0])
    assert stub.with_suffix(".pyi").is_file()
    assert "class GetPlaylistRequest" in stub.with_suffix(".pyi").read_text()
    assert (stub.parents[2] / "py.typed").is_file()  # music/py.typed
    assert compiled == (not PURE), "the installed modules are not the ones built"


def test_the_sdist_builds_a_wheel_with_stubs(built: Built, tmp_path: Path) -> None:
    """The sdist of a clean copy holds the Dockerfile's whole build context (so it builds
    the same wheel), proto/ included and nothing generated; a wheel built from it
    carries the stubs."""
    clean = clean_copy(tmp_path / "clone")
    dist = tmp_path / "dist"
    pure = {**outside_env(), "SIDECAR_PURE_PYTHON": "1"}  # the sdist's content is the same
    backend = f"from setuptools import build_meta as b; print(b.build_sdist({str(dist)!r}))"
    name = run([sys.executable, "-c", backend], clean, env=pure).split()[-1]
    with tarfile.open(dist / name) as tar:
        top = name.removesuffix(".tar.gz")
        files = {m.name.removeprefix(top + "/") for m in tar.getmembers() if m.isfile()}
    assert built.context_files <= files, sorted(built.context_files - files)
    assert {"proto/music/playlist/v1/playlist.proto", "sidecar/stubs.py"} <= files
    assert not [f for f in files if f.startswith(("music/", "meshtest/")) or f.endswith(".so")]
    assert "sidecar/_native.json" not in files
    # from the sdist, with the build requirements of this venv (the session's wheel was
    # built in an isolated build environment) and pure: the stubs are the point here
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    run([*pip, "-w", str(wheels), str(dist / name)], tmp_path, env=pure)
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {"music/playlist/v1/playlist_pb2.pyi", "meshtest/echo/v1/echo_pb2_grpc.py"} <= names


def test_make_proto_runs_the_generator_the_build_runs(built: Built, tmp_path: Path) -> None:
    """`make proto` (sidecar/stubs.py into the tree) makes exactly the files the build puts
    in the wheel, and the build requires the stub tools the dev extras pin."""
    assert "\t$(BIN)/python sidecar/stubs.py\n" in (ROOT / "Makefile").read_text()
    run([sys.executable, str(ROOT / "sidecar/stubs.py"), str(ROOT / "proto"), str(tmp_path)], ROOT)
    made = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    with zipfile.ZipFile(built.wheel) as zf:
        packed = {n for n in zf.namelist() if n.startswith(("music/", "meshtest/"))}
    assert made == packed, sorted(made ^ packed)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requires = project["build-system"]["requires"]
    for tool in ("grpcio-tools", "mypy-protobuf"):
        spec = next(
            d for d in project["project"]["optional-dependencies"]["dev"] if d.startswith(tool)
        )
        assert spec in requires, f"the build requires {tool} unlike the dev extras ({spec})"


CART_PROTO = """syntax = "proto3";
package shop.v1;
message AddRequest { string item = 1; int32 count = 2; }
message AddReply { int32 total = 1; string served_by = 2; }
service Cart { rpc Add(AddRequest) returns (AddReply); }
"""

CART_APP = """import argparse, asyncio, grpc
from shop.v1 import cart_pb2, cart_pb2_grpc

class Cart(cart_pb2_grpc.CartServicer):
    def __init__(self, name):
        self.name = name

    async def Add(self, request, context):
        await context.send_initial_metadata((("x-served-by", self.name),))
        return cart_pb2.AddReply(total=request.count, served_by=self.name)

async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    server = grpc.aio.server()
    cart_pb2_grpc.add_CartServicer_to_server(Cart(args.name), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


def _cart_scenario(name: str, expect: dict[str, object]) -> dict[str, object]:
    return {
        "name": name,
        "stubs": ["stubs"],
        "services": {
            "cart": {
                "command": "{python} app.py --port {port} --name {name}",
                "sites": {"lon3": 3},
                "sidecar": "cart.yaml",  # what `sidecar init` wrote
                "grpc_services": ["shop.v1.Cart"],
            }
        },
        "load": {
            "service": "cart",
            "method": "/shop.v1.Cart/Add",
            "request": {"json": {"item": "apple", "count": 2}},
            "rate": 50,
            "duration_s": 7,
            "deadline_ms": 1000,
        },
        "steady_state": {"success_ratio": 0.99, "warmup_s": 0.5},
        "faults": [{"at_s": 2.5, "action": "kill", "expect": expect}],
    }


def test_chaos_of_a_users_service_from_the_installed_wheel(
    installed: Path, built: Built, tmp_path: Path
) -> None:
    """A user's folder: `sidecar stubs` on their proto, an app using those stubs, `sidecar
    init` for it, `sidecar chaos run` killing one of three under load: exit 0, JUnit
    with the expectations, the PNG. The same with an impossible expectation: exit 1,
    named."""
    import yaml

    pip = [str(installed / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "-q", f"{built.wheel}[plots,stubs]"], tmp_path, timeout=400,
        env=outside_env())  # fmt: skip
    (tmp_path / "proto/shop/v1").mkdir(parents=True)
    (tmp_path / "proto/shop/v1/cart.proto").write_text(CART_PROTO)
    (tmp_path / "app.py").write_text(CART_APP)
    out = in_venv(installed, "sidecar", "stubs", "proto", "--out", "stubs", cwd=tmp_path)
    assert "1 generated" in out
    assert (tmp_path / "stubs/shop/v1/cart_pb2.pyi").is_file()
    in_venv(installed, "sidecar", "init", "--proto", "proto/shop/v1/cart.proto", "--service",
            "cart", "--site", "lon3", "--domain", "example.net", "--out", "cart.yaml",
            cwd=tmp_path)  # fmt: skip
    in_venv(installed, "sidecar", "check", "-c", "cart.yaml", cwd=tmp_path)

    good = {"success_ratio": 0.95, "recovered_within_s": 2, "traffic_moved_within_s": 2}
    (tmp_path / "kill.yaml").write_text(yaml.safe_dump(_cart_scenario("cart-kill", good)))
    cmd = [str(installed / "bin" / "sidecar"), "chaos", "run", "kill.yaml", "--junit",
           "kill.xml"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=outside_env(), capture_output=True,
                          text=True, timeout=150)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import xml.etree.ElementTree as ET

    cases = ET.parse(tmp_path / "kill.xml").getroot().findall(".//testcase")
    assert {"recovered within 2.0s", "traffic moved within 2.0s"} <= {c.get("name") for c in cases}
    assert all(c.find("failure") is None for c in cases)
    assert (tmp_path / "chaos-results/cart-kill/timeline.png").stat().st_size > 1000

    bad = {**good, "p99_ms": 0.001}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(_cart_scenario("cart-bad", bad)))
    cmd = [str(installed / "bin" / "sidecar"), "chaos", "run", "bad.yaml"]
    done = subprocess.run(cmd, cwd=tmp_path, env=outside_env(), capture_output=True,
                          text=True, timeout=150)  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAILED [0: kill cart-lon3-" in done.stdout and "p99_ms <= 0.001" in done.stdout
