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


def test_a_bad_proto_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    """protoc's message comes back as `file:line: message` (a RuntimeError)."""
    (tmp_path / "proto/bad").mkdir(parents=True)
    (tmp_path / "proto/bad/bad.proto").write_text('syntax = "proto3";\nmessage {\n')
    with pytest.raises(RuntimeError, match=r"bad\.proto:2: "):
        stubs.generate(tmp_path / "proto", tmp_path / "out")
    assert stubs.main([str(tmp_path / "proto"), str(tmp_path / "out")]) == 1


def test_protoc_messages_drop_the_column() -> None:
    err = 'a/b.proto:12:7: Expected ";".\n\nc.proto: File not found.\n'
    assert stubs.protoc_messages(err) == ['a/b.proto:12: Expected ";".', "c.proto: File not found."]


def _cart(root: Path, extra: str = "") -> Path:
    path = root / "shop/cart/v1/cart.proto"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PROTO + extra)
    return path


def test_only_changed_protos_are_regenerated(tmp_path: Path) -> None:
    """A second run compiles nothing; a changed proto is compiled again, alone; a removed
    one loses its stubs; a new root's protos import the first root's."""
    proto, other, out = tmp_path / "proto", tmp_path / "other", tmp_path / "out"
    _cart(proto)
    (proto / "shop/cart/v1/gone.proto").write_text('syntax = "proto3";\npackage shop.cart.v1;\n')
    first = stubs.generate_changed([proto], out)
    assert first.generated == ["shop/cart/v1/cart.proto", "shop/cart/v1/gone.proto"]
    cart_py = out / "shop/cart/v1/cart_pb2.py"
    before = cart_py.stat().st_mtime_ns
    again = stubs.generate_changed([proto], out)
    assert again.generated == [] and len(again.unchanged) == 2
    assert cart_py.stat().st_mtime_ns == before
    _cart(proto, "message Extra { int32 n = 1; }\n")
    (proto / "shop/cart/v1/gone.proto").unlink()
    (other / "shop/order/v1").mkdir(parents=True)
    (other / "shop/order/v1/order.proto").write_text(
        'syntax = "proto3";\npackage shop.order.v1;\nimport "shop/cart/v1/cart.proto";\n'
        "message Order { repeated shop.cart.v1.Item items = 1; }\n"
    )
    third = stubs.generate_changed([proto, other], out)
    assert third.generated == ["shop/cart/v1/cart.proto", "shop/order/v1/order.proto"]
    assert third.removed == ["shop/cart/v1/gone.proto"]
    assert not (out / "shop/cart/v1/gone_pb2.py").exists()
    assert "_EXTRA" in cart_py.read_text()
    assert (out / "shop/order/v1/__init__.py").exists()


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sidecar stubs`: 0 and a count; 1 with `file:line: message` on stderr."""
    from sidecar.cli import main

    _cart(tmp_path / "proto")
    assert main(["stubs", str(tmp_path / "proto"), "--out", str(tmp_path / "out")]) == 0
    assert "1 generated, 0 unchanged" in capsys.readouterr().out
    (tmp_path / "proto/shop/cart/v1/cart.proto").write_text(
        'syntax = "proto3";\nmessage X { int32 a = 1 }\n'
    )
    assert main(["stubs", str(tmp_path / "proto"), "--out", str(tmp_path / "out")]) == 1
    assert "shop/cart/v1/cart.proto:2: " in capsys.readouterr().err


def test_no_protos_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no \.proto files"):
        stubs.generate(tmp_path, tmp_path / "out")


def test_loads_alone_as_setup_py_loads_it() -> None:
    """setup.py runs this file from its path, unregistered in sys.modules, in a build
    environment without the package's dependencies."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_alone", stubs.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.packages is not None
