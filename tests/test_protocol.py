"""The contract between the worker and its launcher: every message survives the wire, a
frame that is not a message is refused as such, and logs written in the record format on disk
today stay readable."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobmgr.worker import (
    DEFAULT_LIMITS,
    CapacityError,
    CommandNotFound,
    InvalidSpec,
    JobState,
    LaunchError,
    Limits,
    Mount,
    NotExecutable,
    Worker,
    WorkerError,
)
from jobmgr.worker._frames import FRAME, RECORD_STREAM, TRAILER
from jobmgr.worker._records import read_record, record_frame, write_result
from jobmgr.worker._shim import (
    PROTOCOL_VERSION,
    READY,
    SOCKET_NAME,
    STAGE_ERRORS,
    AdoptReply,
    AdoptRequest,
    FrameDecoder,
    HelloReply,
    HelloRequest,
    InitExited,
    InitFailed,
    InitPid,
    InitReady,
    InitStarted,
    JobExited,
    JobHandles,
    JobRecord,
    JobResult,
    LauncherBusy,
    OutputAdvanced,
    OutputTruncated,
    PingReply,
    PingRequest,
    ProtocolError,
    ReplyFrame,
    Request,
    RequestFailed,
    RunningJob,
    ShutdownReply,
    ShutdownRequest,
    SlotSettings,
    StartReply,
    StartRequest,
    StartStage,
    StopReply,
    StopRequest,
    decode_from_launcher,
    decode_request,
    encode_event,
    encode_order,
    encode_reply,
    encode_request,
    encode_setup,
    parse_report,
)
from jobmgr.worker._shim.codec import frame
from jobmgr.worker.cgroups import detect_driver

NOT_UTF8 = os.fsdecode(b"caf\xe9 \xff\xfe")  # what a file name in Latin-1 decodes to
SLOTS = SlotSettings(1879048192, 1879113727, ("/root", "/srv/state"), DEFAULT_LIMITS)

START = StartRequest(
    argv=("sh", "-c", "echo hi", NOT_UTF8),
    owner="alice",
    limits=Limits(cpu=0.5, memory_bytes=512 << 20, pids=64),
    env={"PATH": "/usr/bin:/bin", "NAME": NOT_UTF8},
    cwd="/tmp",
    uid=65534,
    gid=65534,
    timeout=2.5,
    grace=5.0,
    output_cap=1 << 30,
    request_id="4b1c7f1e-retry-me",
    deadline=812345.5,
)
RESULT = JobResult(
    state=JobState.EXITED,
    exit_code=3,
    signal=None,
    oom_killed=False,
    ended_at=1764640001.75,
    cpu_seconds=0.01,
    peak_memory_bytes=765952,
    output_size=2079,
    output_truncated=True,
    reason="",
)
ADOPTED = START.record("a", 1.5, cgroup_parent="p")
REQUESTS: list[Request[Any]] = [
    START,
    StopRequest("5f0e0c55", 0.0),
    HelloRequest(PROTOCOL_VERSION),
    HelloRequest(PROTOCOL_VERSION, SLOTS),
    HelloRequest(PROTOCOL_VERSION, SLOTS, handles=False),
    dataclasses.replace(START, root=True, mounts=(Mount("/srv/a", "/a", True),), rootfs="/r"),
    ShutdownRequest(5.0),
    PingRequest(),
    AdoptRequest(JobHandles("a", ("stdout", "init"), ADOPTED, 4150, 2.5, 5, 0)),
]
REPLIES: list[tuple[Any, type[Any]]] = [
    (StartReply("5f0e0c55", 1764640000.25), StartReply),
    (StopReply(), StopReply),
    (StopReply(already_ended=True), StopReply),
    (HelloReply(PROTOCOL_VERSION, (RunningJob("a", 2079), RunningJob("b", 0))), HelloReply),
    (
        HelloReply(PROTOCOL_VERSION, (RunningJob("a", 9, ADOPTED),), "p"),
        HelloReply,
    ),
    (ShutdownReply(), ShutdownReply),
    (PingReply(), PingReply),
    (AdoptReply(4150), AdoptReply),
    (RequestFailed("command not found: 'nope'", StartStage.EXEC), StartReply),
    (RequestFailed("no job with id 'x'"), StopReply),
]
EVENTS = [
    OutputAdvanced("a", 1 << 40),
    OutputTruncated("a", "the output cap of 1024 bytes was reached"),
    JobExited("a", RESULT),
    JobHandles("a", ("stdout", "stderr", "report", "init"), START.record("a", 1.5), 9, None, 5, 0),
    LauncherBusy(),
]


def one_frame(data: bytes) -> dict[str, Any]:
    (fields,) = FrameDecoder().feed(data)
    return fields


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_arrives_as_it_was_sent(request_: Request[Any]) -> None:
    assert decode_request(one_frame(encode_request(7, request_))) == (7, request_)


@pytest.mark.parametrize("reply,reply_type", REPLIES, ids=lambda r: type(r).__name__)
def test_every_reply_arrives_as_it_was_sent(reply: Any, reply_type: type[Any]) -> None:
    received = decode_from_launcher(one_frame(encode_reply(9, reply)))
    assert isinstance(received, ReplyFrame) and received.req == 9
    assert received.open(reply_type) == reply


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_arrives_as_it_was_sent(event: Any) -> None:
    assert decode_from_launcher(one_frame(encode_event(event))) == event


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    stream = b"".join(encode_request(i, r) for i, r in enumerate(REQUESTS))
    decoder = FrameDecoder()
    received = [
        decode_request(f) for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])
    ]
    assert received == list(enumerate(REQUESTS))


def test_strings_from_bytes_that_are_not_utf8_cross_unchanged_and_reach_the_init_as_bytes() -> None:
    _, start = decode_request(one_frame(encode_request(1, START)))
    assert isinstance(start, StartRequest)
    assert start.argv[3] == NOT_UTF8 and start.env["NAME"] == NOT_UTF8
    order = encode_order(start, 1879048200, (), SLOTS)
    assert b"\0caf\xe9 \xff\xfe\0" in order and b"\0NAME=caf\xe9 \xff\xfe\0" in order


def test_the_order_is_what_the_init_parses() -> None:
    assert encode_order(START, 1879048200, ["/var/lib/db.sock"], SLOTS) == (
        b"user\x0065534\x0065534\x000\x000\x00/tmp\x00"
        b"4\x00sh\x00-c\x00echo hi\x00caf\xe9 \xff\xfe\x00"
        b"2\x00PATH=/usr/bin:/bin\x00NAME=caf\xe9 \xff\xfe\x00"
        b"0\x001\x00/var/lib/db.sock\x00\x00"
    )
    own = dataclasses.replace(
        START,
        uid=None,
        gid=None,
        cwd=None,
        limits=Limits(disk_bytes=64 << 20),
        mounts=(Mount("/srv/data", "/data"), Mount("/srv/out", "/out", writable=True)),
        rootfs="/srv/roots/debian",
    )
    assert encode_order(own, 1879048200, [], SLOTS) == (
        b"user\x001879048200\x001879048200\x0067108864\x000\x00\x00"
        b"4\x00sh\x00-c\x00echo hi\x00caf\xe9 \xff\xfe\x00"
        b"2\x00PATH=/usr/bin:/bin\x00NAME=caf\xe9 \xff\xfe\x00"
        b"2\x00/srv/data\x00/data\x00ro\x00/srv/out\x00/out\x00rw\x00"
        b"0\x00/srv/roots/debian\x00"
    )
    root = dataclasses.replace(own, root=True, mounts=(), rootfs=None)
    allowing = dataclasses.replace(SLOTS, user_namespaces=True)
    assert encode_order(root, 1879048200, [], allowing).startswith(
        b"root\x001879048200\x001879048200\x0067108864\x001\x00"
    )


def test_the_setup_is_what_the_init_parses() -> None:
    body = b"7\x007\x00268435456\x000\x000\x002\x00/root\x00/srv/state\x00"
    assert encode_setup(7, 7, SLOTS) == f"{len(body)}\n".encode() + body
    allowing = dataclasses.replace(SLOTS, user_namespaces=True)
    body = b"7\x007\x00268435456\x000\x001\x002\x00/root\x00/srv/state\x00"
    assert encode_setup(7, 7, allowing) == f"{len(body)}\n".encode() + body


@pytest.mark.parametrize(
    "fields,complaint",
    [
        ({"req": 1}, "unknown request None"),
        ({"op": "launch", "req": 1}, "unknown request 'launch'"),
        ({"op": "stop", "req": 1, "id": "a"}, "grace is missing"),
        ({"op": "stop", "req": 1, "id": 5, "grace": 1.0}, "id: expected str"),
        ({"op": "stop", "req": 1, "id": "a", "grace": True}, "grace: expected float"),
        ({"op": "stop", "req": 1, "id": "a", "grace": "5"}, "grace: expected float"),
        ({"op": "hello", "req": 1, "version": 2.5}, "version: expected int"),
        ({"op": "start", "req": 1, "argv": "ls"}, "argv: expected list"),
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong_and_its_id(
    fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ProtocolError, match=complaint) as refused:
        decode_request(fields)
    assert refused.value.req == 1


def test_a_start_with_limits_out_of_range_or_the_wrong_shape_is_refused() -> None:
    good = one_frame(encode_request(1, START))
    for limits, complaint in [
        ({"cpu": -1}, "limit cpu"),
        ({"memory_bytes": 1.5}, "memory_bytes: expected int"),
        ([1, 2], "limits: expected an object"),
    ]:
        with pytest.raises(ProtocolError, match=complaint):
            decode_request({**good, "limits": limits})
    with pytest.raises(ProtocolError, match=r"env\['N'\]: expected str"):
        decode_request({**good, "env": {"N": 1}})


def test_a_request_without_an_id_cannot_be_answered() -> None:
    for req in (None, "1", True):
        with pytest.raises(ProtocolError, match="without a valid id") as refused:
            decode_request({"op": "hello", "req": req, "version": PROTOCOL_VERSION})
        assert refused.value.req is None


def test_what_the_launcher_sends_is_checked_too() -> None:
    with pytest.raises(ProtocolError, match="unknown event 'gone'"):
        decode_from_launcher({"ev": "gone"})
    with pytest.raises(ProtocolError, match="size: expected int"):
        decode_from_launcher({"ev": "output", "id": "a", "size": "12"})
    with pytest.raises(ProtocolError, match="state: 'DONE' is not a JobState"):
        result = {**json.loads(encode_event(JobExited("a", RESULT))[4:])["result"]}
        decode_from_launcher({"ev": "exit", "id": "a", "result": {**result, "state": "DONE"}})
    with pytest.raises(ProtocolError, match="without a valid id or outcome"):
        decode_from_launcher({"ev": "reply", "req": 1})
    reply = decode_from_launcher({"ev": "reply", "req": 1, "ok": True, "id": "a"})
    assert isinstance(reply, ReplyFrame)
    with pytest.raises(ProtocolError, match="started_at is missing"):
        reply.open(StartReply)


def test_frames_that_are_not_json_objects_or_too_big_are_refused() -> None:
    for body in (b"{", b"[1]", b"\xff"):
        with pytest.raises(ProtocolError):
            FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
    with pytest.raises(ProtocolError, match="exceeds"):
        FrameDecoder().feed((1 << 30).to_bytes(4, "big"))


def test_a_field_a_peer_does_not_send_takes_its_default_and_unknown_ones_are_ignored() -> None:
    reply = decode_from_launcher({"ev": "reply", "req": 1, "ok": True, "later": [1]})
    assert isinstance(reply, ReplyFrame)
    assert reply.open(StopReply) == StopReply(already_ended=False)
    failed = decode_from_launcher({"ev": "reply", "req": 2, "ok": False, "error": "no"})
    assert isinstance(failed, ReplyFrame)
    assert failed.open(StopReply) == RequestFailed("no", None)


def test_each_start_stage_has_one_error_class() -> None:
    assert set(STAGE_ERRORS) == set(StartStage)
    expected = {
        StartStage.USER: LaunchError,
        StartStage.CWD: LaunchError,
        StartStage.NOT_FOUND: CommandNotFound,
        StartStage.EXEC: NotExecutable,
        StartStage.SETUP: WorkerError,
        StartStage.LIMITS: InvalidSpec,
        StartStage.SPACE: CapacityError,
        StartStage.DESCRIPTORS: CapacityError,
    }
    for stage, error_class in expected.items():
        error = RequestFailed("why", stage).start_error()
        assert type(error) is error_class
    assert str(RequestFailed("why", StartStage.EXEC).start_error()) == "why"
    assert str(RequestFailed("why").start_error()) == "starting the job failed: why"


def test_the_inits_report_lines_are_read_into_their_types() -> None:
    assert parse_report(b"error notfound command not found: 'x'") == InitFailed(
        StartStage.NOT_FOUND, "command not found: 'x'"
    )
    assert parse_report(b"pid 4242 joined") == InitPid(4242)
    assert parse_report(b"pid 4242 cloned") == InitPid(4242, cloned=True)
    assert parse_report(b"ready") == InitReady()
    assert parse_report(b"started") == InitStarted()
    assert parse_report(b"exit 256") == InitExited(256)
    assert parse_report(b"error exec command not found: 'nope'") == InitFailed(
        StartStage.EXEC, "command not found: 'nope'"
    )
    assert parse_report(b"error cwd cannot change to working directory '/x': No such") == (
        InitFailed(StartStage.CWD, "cannot change to working directory '/x': No such")
    )
    for line in (b"pid", b"pid x", b"pid 4242", b"pid 4242 forked", b"exit", b"hello"):
        with pytest.raises(ProtocolError):
            parse_report(line)


# ---- the record frame on disk -------------------------------------------------------------

# Exactly what the launcher writes at the head of a job's log when it starts, and the result
# it puts there in place when the job ends; a state directory outlives upgrades.
RECORD_ON_DISK = (
    b'{"job": {"argv": ["sh", "-c", "echo hi"], "owner": "alice", "limits": {"cpu": 0.5, '
    b'"memory_bytes": 536870912, "io_read_bps": 10485760, "io_write_bps": null, "pids": 1024}, '
    b'"env": {"PATH": "/usr/bin:/bin", "NAME": "caf\\udce9"}, "cwd": null, '
    b'"id": "5f0e0c55-3f0a-4d8e-9d3b-6c1e2f7a9b10", "started_at": 1764640000.25}, '
    b'"result": null}'
)
RESULT_ON_DISK = (
    b'{"state": "EXITED", "exit_code": 3, "signal": null, "oom_killed": false, '
    b'"ended_at": 1764640001.75, "cpu_seconds": 0.01, "peak_memory_bytes": 765952, '
    b'"output_size": 2079, "output_truncated": false, "reason": ""}'
)
RECORD = JobRecord(
    id="5f0e0c55-3f0a-4d8e-9d3b-6c1e2f7a9b10",
    argv=("sh", "-c", "echo hi"),
    owner="alice",
    limits=Limits(cpu=0.5, memory_bytes=536870912, io_read_bps=10485760, pids=1024),
    env={"PATH": "/usr/bin:/bin", "NAME": os.fsdecode(b"caf\xe9")},
    cwd=None,
    started_at=1764640000.25,
)


def record_frame_of(body: bytes) -> bytes:
    body = body + b" " * 2048
    return FRAME.pack(RECORD_STREAM, len(body)) + body + TRAILER.pack(len(body))


def test_a_record_frame_in_the_format_on_disk_is_read(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_bytes(record_frame_of(RECORD_ON_DISK))
    assert read_record(log) == (RECORD, None)
    ended = RECORD_ON_DISK.replace(b'"result": null', b'"result": ' + RESULT_ON_DISK)
    log.write_bytes(record_frame_of(ended))
    assert read_record(log) == (RECORD, dataclasses.replace(RESULT, output_truncated=False))


def test_the_record_frame_written_today_has_the_format_on_disk(tmp_path: Path) -> None:
    # Today's record adds the job's host uid, its disk limit, its cgroup parent and its
    # request id to the format above.
    today = json.loads(RECORD_ON_DISK)
    today["job"] |= {"uid": 1879048200, "cgroup_parent": "", "request_id": ""}
    today["job"]["limits"]["disk_bytes"] = None
    log = tmp_path / "job.log"
    record = dataclasses.replace(RECORD, uid=1879048200)
    log.write_bytes(record_frame(record))
    body = json.loads(log.read_bytes()[FRAME.size : -TRAILER.size])
    assert body == today
    size = len(record_frame(record))
    write_result(log, record, dataclasses.replace(RESULT, output_truncated=False), size)
    body = json.loads(log.read_bytes()[FRAME.size : -TRAILER.size])
    assert body == {**today, "result": json.loads(RESULT_ON_DISK)}


# ---- the version check --------------------------------------------------------------------


Answer = Callable[[int], bytes]


@pytest.fixture
def fake_launcher(tmp_path: Path) -> Iterator[tuple[Path, list[Answer]]]:
    """A state dir whose launcher.sock answers the first request as the test says."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(state / SOCKET_NAME))
    listener.listen(1)
    answers: list[Answer] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            decoder = FrameDecoder()
            while not (frames := decoder.feed(conn.recv(65536))):
                pass
            req, _ = decode_request(frames[0])
            conn.sendall(answers[0](req))
            conn.recv(1)  # until the worker hangs up

    server = threading.Thread(target=serve)
    server.start()
    yield state, answers
    listener.close()
    server.join(timeout=10)


def test_a_launcher_of_another_protocol_version_is_refused_saying_so(
    fake_launcher: tuple[Path, list[Answer]],
) -> None:
    state, answers = fake_launcher
    answers.append(lambda req: encode_reply(req, HelloReply(PROTOCOL_VERSION + 1, ())))
    with pytest.raises(WorkerError, match=f"speaks protocol version {PROTOCOL_VERSION + 1}"):
        Worker(state, cgroup_parent="jobmgr-test-protocol")


def test_a_launcher_that_states_no_version_is_refused_saying_so(
    fake_launcher: tuple[Path, list[Answer]],
) -> None:
    state, answers = fake_launcher
    answers.append(lambda req: frame({"ev": "reply", "req": req, "ok": True, "running": []}))
    with pytest.raises(WorkerError, match="speaks protocol version unknown") as refused:
        Worker(state, cgroup_parent="jobmgr-test-protocol")
    assert "version is missing" in str(refused.value)


# ---- a real launcher ----------------------------------------------------------------------


def test_a_launcher_answers_malformed_requests_with_the_reason_and_carries_on(
    tmp_path: Path,
) -> None:
    state, parent = tmp_path / "state", f"jobmgr-test-protocol-{os.getpid()}"
    state.mkdir(mode=0o700)
    argv = ["--state-dir", str(state), "--cgroup-parent", parent, "--warm-slots", "1"]
    with open(tmp_path / "launcher.log", "wb") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-m", "jobmgr.worker._launcher", *argv],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd="/",
        )
    try:
        assert launcher.stdout is not None and launcher.stdout.readline() == READY
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(state / SOCKET_NAME))
            decoder = FrameDecoder()

            def answer(data: bytes) -> Any:
                conn.sendall(data)
                while not (frames := decoder.feed(conn.recv(65536))):
                    pass
                (fields,) = frames
                received = decode_from_launcher(fields)
                assert isinstance(received, ReplyFrame)
                return received

            no_grace = answer(frame({"op": "stop", "req": 5, "id": "a"}))
            assert no_grace.req == 5
            assert no_grace.open(StopReply) == RequestFailed("StopRequest: grace is missing")
            bad_limits = {**one_frame(encode_request(6, START)), "limits": {"pids": -3}}
            refused = answer(frame(bad_limits)).open(StartReply)
            assert isinstance(refused, RequestFailed) and "limit pids" in refused.error
            hello = answer(encode_request(7, HelloRequest(PROTOCOL_VERSION))).open(HelloReply)
            # Still serving, nothing started.
            assert hello == HelloReply(PROTOCOL_VERSION, (), parent)
            done = answer(encode_request(8, ShutdownRequest(0.0))).open(ShutdownReply)
            assert done == ShutdownReply()
        assert launcher.wait(timeout=30) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        detect_driver(parent).remove_parent()
    logged = (tmp_path / "launcher.log").read_text()
    assert "a malformed request: StopRequest: grace is missing" in logged
