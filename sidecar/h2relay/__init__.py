"""The data plane: an HTTP/2 frame relay on asyncio.

Files, in the order a call meets them: plane.py (the listener and its callers'
connections), connection.py
(sans-IO HTTP/2), hpack_codec.py (HPACK with block caching), request.py (what a header
block says: route, deadline, forwarded headers), call.py (the call's story, its steps in
order with why each sits there), and the objects it is made of: deadline.py (its budget
and per-try timeout), replay.py (the request bytes kept for a replay), attempt.py (one
upstream stream, which says what happened to it), local_reply.py (what the sidecar
answers a caller itself), stepper.py (admission without a Task), pool.py (the
connections to endpoints); below them
grpcwire.py (grpc-timeout, statuses, message limits) and timers.py (the deadline
wheel); listeners.py (the sidecar's two listeners, Health/Check and Health/Watch).
Modules depend downward only: call.py imports attempt/deadline/replay/local_reply and
plane/pool, never the reverse (plane.py makes calls through the factory it is given and
knows them by a protocol; `make lint` checks for import circles). Policies plug in through sidecar/policy.py; per-call metrics go
through sidecar/loop_metrics.py (lock-free). grpc_client.py is a gRPC call
made as a client, a second kind of `pool.UpstreamStream` on the same client connections
(`UpstreamConnection`): the active health checks send theirs on the pool's, the in-process client
(sidecar/client) all of its calls on an in-memory connection (memory.py) to a `Plane`
of its own.

All but listeners.py are compiled to C at install time when a compiler is there
(sidecar/native.py).
"""
