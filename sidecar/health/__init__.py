"""Health of the local app, as the inbound sidecar sees and reports it."""
