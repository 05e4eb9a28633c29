"""Full tier: BIND 9 killed for 30 s under load, then back (RFC 2136 registrations
signed with TSIG), tests/chaos/scenarios/dns_outage_30s.yaml through the chaos engine."""

from __future__ import annotations

import pytest

from tests.chaos.scenario import run_scenario_file

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]


async def test_dns_outage_30s() -> None:
    """No failed call, no endpoint forgotten, registration catches up once BIND is back."""
    await run_scenario_file("dns_outage_30s")
