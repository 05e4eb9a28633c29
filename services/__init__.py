"""The example system: Spotify's request walk as real gRPC services.

perimeter (`accesspoint`) -> view (`playlistview`) -> data (`playlist`, `metadata`,
`search`, each owning its data in SQLite), plus a load generator and the demo.
Each runs as `python -m services.<name> --port N`; see services/runtime.py for the
flags every service shares and services/knobs.py for the test knobs.
"""
