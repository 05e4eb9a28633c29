"""Example services of the demo mesh, the test echo backend and the load generator."""
