"""Fixtures for the acceptance suite live in steps/fixtures_*.py; this file wires them in."""

# Before anything imports grpc: jobmgr.api sets the TLS 1.3 floor, which grpc reads only once.
import jobmgr.api  # noqa: F401

pytest_plugins = [
    "steps.fixtures_worker",
    "steps.fixtures_pki",
    "steps.fixtures_server",
]
