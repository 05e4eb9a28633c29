"""Chaos scenarios against a user's own services: `sidecar chaos run SCENARIO.yaml`.

A scenario file (spec.py) names a topology (the user's app commands, instances per site,
their sidecars, the embedded DNS registry), a bounded load, a steady-state hypothesis,
faults at times and what must hold during each. The runner (runner.py) starts it all
(topology.py, procs.py), drives the load (load.py), injects the faults, measures
(measure.py, pure), writes summary.json, timeline.jsonl, a PNG and JUnit XML
(report.py), and takes down everything it started, also on Ctrl-C and on failure.
"""
