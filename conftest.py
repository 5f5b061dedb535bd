"""Fixtures for the acceptance suite live in steps/fixtures_*.py; this file wires them in."""

pytest_plugins = [
    "steps.fixtures_worker",
    "steps.fixtures_pki",
    "steps.fixtures_server",
]
