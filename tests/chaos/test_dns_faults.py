"""Full chaos tier: the DNS server killed for 30 s under load, then back."""

from __future__ import annotations

import pytest

from tests.chaos.harness import Mesh
from tests.chaos.scenario import dns_outage

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]


async def test_dns_outage_30s(mesh: Mesh) -> None:
    """BIND killed for 30 s: no failed call, no endpoint forgotten, registration catches up."""
    await dns_outage(mesh, "dns_outage_30s", 30.0)
