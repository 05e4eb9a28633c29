"""Example services and test backends that run beside sidecars."""
