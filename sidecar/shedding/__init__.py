"""Inbound request dropping: concurrency limits, CoDel queue, deadlines, priorities.

The limit algorithms (`limit.py`), CoDel (`codel.py`) and the queue discipline
(`queue.py`) are pure and take `now`; `admission.py` is the asyncio layer the
inbound listener calls.
"""

from sidecar.shedding.admission import Admission, AdmissionToken, Dropped
from sidecar.shedding.codel import CoDel
from sidecar.shedding.limit import AIMDLimit, FixedLimit, GradientLimit, Limit, make_limit
from sidecar.shedding.queue import PRIORITY_KEY, AdmissionQueue, Priority, parse_priority

__all__ = [
    "PRIORITY_KEY",
    "AIMDLimit",
    "Admission",
    "AdmissionQueue",
    "AdmissionToken",
    "CoDel",
    "Dropped",
    "FixedLimit",
    "GradientLimit",
    "Limit",
    "Priority",
    "make_limit",
    "parse_priority",
]
