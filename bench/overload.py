"""TODO (issue 7, "Measure"): the overload run. Not implemented; `--overload` exits 2.

Design, so it can be built once `services.echo` (delay knob) and the inbound
admission of `sidecar run` exist:

1. Backend: `python -m services.echo --port N`; every request carries
   `EchoRequest.delay_ms` (bench.grpcwire.echo_request(delay_ms=...)), so the app's
   capacity is set by its concurrency and the delay rather than by CPU, and is stable
   on a shared 2-core machine. Measure capacity C first: h2load at saturation,
   straight to the app, with the same delay.
2. Paths: h2load -> sidecar (inbound, `admission: {max_concurrency, queue_size,
   codel_target_ms, codel_interval_ms}`) -> app, and the same with admission off
   (no `max_concurrency`, no CoDel) for "without shedding"; HAProxy with `maxconn`
   on the server line as the comparison that queues but does not drop by delay.
3. Offered load 1x, 2x and 4x C, fixed rate: h2load `--rps` per client with enough
   clients and `-m` that the offered rate is not capped by in-flight limits; every
   request with a deadline (`grpc-timeout` header, e.g. 500m) so expired work is
   visible. h2load cannot tell a success from a drop (both are HTTP 200), so the
   counts come from the sidecar's `sidecar_dropped_requests_total{reason}` (admin
   /metrics, read before and after) and from the DATA byte count: successes carry
   the echo, drops carry none.
4. Report per path and load: goodput (successes/s), p50/p99 of successes only
   (h2load's --log-file has no gRPC status, so a small grpcio client at the same rate
   is the likely tool for per-call status and latency), drop ratio, CPU per drop.
   Targets: goodput at 4x >= 90% of 1x; success p99 < 2x unloaded p99 + CoDel target.
"""
