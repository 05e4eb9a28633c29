"""Mutual TLS between sidecars: identities (identity.py), certificates and contexts
(certs.py), and the small CA for the demo and tests (ca.py)."""
