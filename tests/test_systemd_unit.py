"""The systemd unit shipped with the package says what the server relies on under systemd."""

from __future__ import annotations

import configparser
import importlib.resources

from jobmgr.worker.cgroups import _placement


def _unit() -> configparser.ConfigParser:
    text = (importlib.resources.files("jobmgr") / "systemd" / "jobmgr-server.service").read_text()
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    return unit


def test_the_unit_delegates_its_cgroup_and_starts_the_server_in_its_supervisor_child() -> None:
    service = _unit()["Service"]
    assert service["Delegate"] == "yes"
    # The name the worker looks for to know the unit's cgroup is its own to manage.
    assert service["DelegateSubgroup"] == _placement.SUPERVISOR


def test_a_crash_of_the_server_leaves_the_launcher_and_jobs_to_be_re_adopted() -> None:
    service = _unit()["Service"]
    assert service["KillMode"] == "process"
    assert service["Restart"] == "on-failure"
    assert "jobmgr-server" in service["ExecStart"]
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"
