"""Generated requests for the bad-input and security features: hypothesis strategies for
every request, and a runner that collects every violation instead of stopping at the first.

Generated commands never name a real program: one that resolves on the host (the jobs see
the host's filesystem) is replaced by ``true``, so no generated input runs anything else.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from jobmgr.api import job_pb2

JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INT64 = (-(2**63), 2**63 - 1)
SPECIALS = "\0\n\r\t $`'\"\\;|&*?~{}[]()<>!#%^=é中😀\u202e\ufeff\uffff"

garbage_text = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(SPECIALS + "ab-/."), max_size=40),
    st.integers(1000, 300_000).map(lambda n: "x" * n),
)
uuid_text = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u).upper() + "}"),
    st.uuids().map(lambda u: f"urn:uuid:{u}"),
    st.uuids().map(lambda u: f" {u}\n"),
    st.uuids().map(lambda u: f"{u}\0"),
    st.uuids().map(lambda u: str(u)[:-1]),
    garbage_text,
    st.just("x" * (1 << 20)),
)
cpu_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 0.005, 0.01, 0.5, 2.0, 1e6, 1e300, -1.0, math.nan]),
)
int_values = st.one_of(
    st.integers(*INT64),
    st.sampled_from([0, -1, 1, 2, 4095, 1 << 20, 1 << 31, 1 << 40, INT64[1], INT64[0]]),
)
durations = st.builds(
    Duration,
    seconds=st.one_of(st.integers(*INT64), st.integers(-5, 100_000)),
    nanos=st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-999_999_999, 999_999_999)),
)


@st.composite
def limits(draw: Any) -> job_pb2.Limits:
    message = job_pb2.Limits()
    if draw(st.booleans()):
        message.cpu = draw(cpu_values)
    for name in ("memory_bytes", "io_read_bps", "io_write_bps", "pids"):
        if draw(st.booleans()):
            setattr(message, name, draw(int_values))
    return message


def safe_command(cmd: str) -> str:
    """``cmd``, unless it would run a real program: then ``true``."""
    if "\0" in cmd or not cmd:
        return cmd
    if shutil.which(cmd, path=JOB_PATH) or os.path.exists(os.path.join("/", cmd)):
        return "true"
    return cmd


@st.composite
def start_requests(draw: Any) -> job_pb2.StartRequest:
    """StartRequests of every shape; the optional settings only where the proto has them."""
    request = job_pb2.StartRequest(
        cmd=safe_command(draw(st.one_of(garbage_text, st.just("true")))),
        args=draw(st.lists(garbage_text, max_size=6)),
    )
    if draw(st.booleans()):
        request.limits.CopyFrom(draw(limits()))
    fields = job_pb2.StartRequest.DESCRIPTOR.fields_by_name
    if "env" in fields and draw(st.booleans()):
        request.env.update(draw(st.dictionaries(garbage_text, garbage_text, max_size=3)))
    if "cwd" in fields and draw(st.booleans()):
        request.cwd = draw(st.one_of(garbage_text, st.just("/"), st.just("/nonexistent-h5")))
    if "timeout" in fields and draw(st.booleans()):
        request.timeout.CopyFrom(draw(durations))
    if "run_as" in fields and draw(st.booleans()):
        request.run_as = draw(st.one_of(garbage_text, st.sampled_from(["nobody", "0", "-1"])))
    return request


def obviously_invalid(request: job_pb2.StartRequest) -> str:
    """Why a StartRequest can only be INVALID_ARGUMENT, or "" if it might be fine."""
    if not request.cmd:
        return "empty command"
    if any("\0" in text for text in (request.cmd, *request.args)):
        return "NUL byte in argv"
    if request.HasField("limits"):
        given = request.limits
        for name in ("memory_bytes", "io_read_bps", "io_write_bps", "pids"):
            if given.HasField(name) and getattr(given, name) < 0:
                return f"negative {name}"
        if given.HasField("cpu") and (not math.isfinite(given.cpu) or given.cpu < 0):
            return f"cpu {given.cpu}"
    return ""


# ---- running properties -----------------------------------------------------------------------


@dataclass
class PropertyRun:
    """Every input tried, the status codes it drew, and every violation seen."""

    name: str
    tried: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def saw(self, code: grpc.StatusCode) -> None:
        self.codes[code.name] += 1

    def summary(self) -> str:
        codes = ", ".join(f"{code} {n}" for code, n in sorted(self.codes.items()))
        return f"{self.name}: {self.tried} inputs ({codes})"

    def failures(self, limit: int = 12) -> str:
        kinds: dict[str, str] = {}
        for violation in self.violations:
            kinds.setdefault(violation.split(":", 1)[0], violation)
        shown = "\n".join(f"  {v[:400]}" for v in list(kinds.values())[:limit])
        broke = f"{len(self.violations)} of {self.tried} inputs broke the rules"
        return f"{broke}; one of each kind:\n{shown}"


def run_property(
    run: PropertyRun, strategy: st.SearchStrategy[Any], check: Callable[[Any], str], examples: int
) -> PropertyRun:
    """Feed ``examples`` generated values to ``check``, which returns a violation or "" (and
    may count the codes it saw in ``run.codes``)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(value: Any) -> None:
        run.tried += 1
        violation = check(value)
        if violation:
            run.violations.append(violation)

    one()
    return run
