"""The benchmark harness: what a request costs on each path (direct, HAProxy, sidecar).

Run as `python -m bench` from the repository root (or `make bench`). It starts every
backend and proxy itself on loopback ports, drives them with `h2load`, and writes
bench/out/results.md and results.json. See bench/README.md for what each column means.
"""
