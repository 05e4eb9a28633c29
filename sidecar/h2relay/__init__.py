"""The data plane: an HTTP/2 frame relay on asyncio.

Files, in the order a call meets them: relay.py (sockets, pool, listener), connection.py
(sans-IO HTTP/2), hpack_codec.py (HPACK with block caching), request.py (what a header
block says: route, deadline, forwarded headers), call.py (the call's steps), attempts.py (its attempts and retries), deadlines.py (its
timer: deadline, per-try timeout), forwarding.py (its frames both ways), answers.py
(what the sidecar answers a caller itself), grpcwire.py (grpc-timeout, statuses, message
limits), timers.py (the deadline wheel), stepper.py (admission without a Task), listeners.py
(the sidecar's two listeners, Health/Check and Health/Watch). Policies plug in through
sidecar/policy.py; per-call metrics go through sidecar/cells.py (lock-free). The
in-process client's unary attempts ride the same client connections (`Pool`, `Upstream`):
sidecar/client/wire.py is a second kind of `relay.Stream`.

All but listeners.py are compiled to C at install time when a compiler is there
(sidecar/native.py).
"""
