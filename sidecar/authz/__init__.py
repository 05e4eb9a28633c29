"""Inbound authorization by caller identity (sidecar/authz/rules.py)."""

from sidecar.authz.rules import Authorizer, Decision, MethodPattern

__all__ = ["Authorizer", "Decision", "MethodPattern"]
