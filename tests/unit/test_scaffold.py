"""`sidecar init` (sidecar/scaffold.py): services read from protos, a commented config
that `sidecar check` accepts, bad flags refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sidecar.cli import main
from sidecar.config import load_config
from sidecar.scaffold import InitSpec, checked, parse_calls, proto_services

PROTO = """syntax = "proto3";
// service Commented { }
package shop.cart.v1;
/* service Blocked {
} */
message Item { string note = 1; }  // "service InString {"
service Cart { rpc Add(Item) returns (Item); }
service CartAdmin {
  rpc Reset(Item) returns (Item);
}
"""


def test_services_are_read_skipping_comments() -> None:
    assert proto_services(PROTO) == ["shop.cart.v1.Cart", "shop.cart.v1.CartAdmin"]
    assert proto_services("service Bare {}") == ["Bare"]


def test_calls_flags() -> None:
    assert parse_calls(["pay", "stock=inv.v1.Stock,inv.v1.Other"]) == {
        "pay": [],
        "stock": ["inv.v1.Stock", "inv.v1.Other"],
    }
    with pytest.raises(ValueError, match="not a service name"):
        parse_calls(["Pay_Service"])


def test_rendered_config_is_checked_and_commented() -> None:
    spec = InitSpec("cart", "lon3", "example.net", ["shop.cart.v1.Cart"], {"pay": ["p.v1.Pay"]})
    text, data = checked(spec)
    config = load_config_text(text)
    assert config.service == "cart" and config.site == "lon3"
    assert config.upstreams["pay"].grpc_services == ["p.v1.Pay"]
    assert config.upstreams["pay"].retries is not None  # `on` quoted: not YAML's `true`
    assert data["inbound"]["health"]["service"] == "shop.cart.v1.Cart"
    keys = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= len(keys) - 8  # nearly every key has its comment line


def load_config_text(text: str):  # type: ignore[no-untyped-def]
    from sidecar.config import parse_config

    return parse_config(yaml.safe_load(text))


def test_init_writes_a_file_check_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proto = tmp_path / "cart.proto"
    proto.write_text(PROTO)
    out = tmp_path / "sidecar.yaml"
    argv = ["init", "--proto", str(proto), "--service", "cart", "--site", "lon3",
            "--domain", "example.net", "--calls", "pay", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert load_config(out).upstreams["pay"].grpc_services == []
    assert main(["check", "-c", str(out)]) == 0
    assert main(argv) == 1  # exists
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--service", "Cart"], "--service Cart: not a service name"),
        (["--service", "cart", "--site", "lon 3"], "site"),
        (["--service", "cart", "--calls", "x_y"], "--calls x_y"),
    ],
)
def test_bad_flags_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    proto = tmp_path / "cart.proto"
    proto.write_text(PROTO)
    out = tmp_path / "sidecar.yaml"
    argv = ["init", "--proto", str(proto), "--site", "lon3", "--domain", "example.net",
            "--out", str(out), *flags]  # fmt: skip
    assert main(argv) == 1
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_missing_proto_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["init", "--proto", str(tmp_path / "no.proto"), "--service", "cart", "--site",
            "lon3", "--domain", "example.net", "--out", "-"]  # fmt: skip
    assert main(argv) == 1
    assert "no.proto" in capsys.readouterr().err
