"""sidecar/stubs.py, the one stub generator: packages with .pyi types, and a protoc
failure named, on small protos in a temp dir (the project's own are checked through
the wheel build, tests/integration/test_installed_wheel.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from sidecar import stubs

PROTO = """syntax = "proto3";
package shop.cart.v1;
import "google/protobuf/timestamp.proto";
message Item { string sku = 1; google.protobuf.Timestamp added = 2; }
service Cart { rpc Add(Item) returns (Item); }
"""


def test_generates_importable_typed_packages(tmp_path: Path) -> None:
    """Every folder a package, py.typed at the top, .pyi beside each module, and the
    well-known types found without an include of our own."""
    (tmp_path / "proto/shop/cart/v1").mkdir(parents=True)
    (tmp_path / "proto/shop/cart/v1/cart.proto").write_text(PROTO)
    assert stubs.packages(tmp_path / "proto") == ["shop"]
    tops = stubs.generate(tmp_path / "proto", tmp_path / "out")
    assert tops == [tmp_path / "out/shop"]
    made = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")}
    base = "shop/cart/v1/cart_pb2"
    assert {f"{base}.py", f"{base}.pyi", f"{base}_grpc.py", f"{base}_grpc.pyi"} <= made
    assert {"shop/py.typed", "shop/__init__.py", "shop/cart/v1/__init__.py"} <= made
    sys.path.insert(0, str(tmp_path / "out"))
    try:
        module = importlib.import_module("shop.cart.v1.cart_pb2_grpc")
        assert hasattr(module, "CartStub")
    finally:
        sys.path.remove(str(tmp_path / "out"))
        for name in [n for n in sys.modules if n == "shop" or n.startswith("shop.")]:
            del sys.modules[name]


def test_a_bad_proto_is_an_error_naming_protoc(tmp_path: Path) -> None:
    (tmp_path / "proto/bad").mkdir(parents=True)
    (tmp_path / "proto/bad/bad.proto").write_text('syntax = "proto3";\nmessage {\n')
    with pytest.raises(RuntimeError, match="protoc failed"):
        stubs.generate(tmp_path / "proto", tmp_path / "out")
    assert stubs.main([str(tmp_path / "proto"), str(tmp_path / "out")]) == 1


def test_no_protos_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no \.proto files"):
        stubs.generate(tmp_path, tmp_path / "out")
