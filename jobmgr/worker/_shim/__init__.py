"""The contract between the worker (in the server) and its launcher, and the launcher and its
init: every message as a frozen dataclass, encoded and decoded only here.

  messages  the vocabulary: requests, replies, events, the job's record and result, the
            start stages and the one table from stage to error, the socket's constants
  codec     length-prefixed JSON on the socket, and the record frame's body on disk
  pid1      the order the init (_pid1.c) reads and the report lines it writes

Both ends import from here. A new message is a dataclass in ``messages`` and a name in its
table; a new field is a field (with a default, if a peer may not send it yet); a change that
a peer of the other version would misread raises PROTOCOL_VERSION, which HelloRequest checks.
"""

from .codec import (
    FrameDecoder,
    ProtocolError,
    ReplyFrame,
    decode_from_launcher,
    decode_record,
    decode_request,
    encode_event,
    encode_record,
    encode_reply,
    encode_request,
)
from .messages import (
    LOCK_NAME,
    PROTOCOL_VERSION,
    READY,
    SOCKET_NAME,
    STAGE_ERRORS,
    ConnectionLost,
    Event,
    HelloReply,
    HelloRequest,
    JobExited,
    JobRecord,
    JobResult,
    LauncherBusy,
    OutputAdvanced,
    OutputTruncated,
    Reply,
    Request,
    RequestFailed,
    RunningJob,
    ShutdownReply,
    ShutdownRequest,
    StartRefused,
    StartReply,
    StartRequest,
    StartStage,
    StopReply,
    StopRequest,
)
from .pid1 import (
    InitExited,
    InitFailed,
    InitPid,
    InitReady,
    InitReport,
    InitStarted,
    encode_order,
    parse_report,
)

__all__ = [
    "LOCK_NAME",
    "PROTOCOL_VERSION",
    "READY",
    "SOCKET_NAME",
    "STAGE_ERRORS",
    "ConnectionLost",
    "Event",
    "FrameDecoder",
    "HelloReply",
    "HelloRequest",
    "InitExited",
    "InitFailed",
    "InitPid",
    "InitReady",
    "InitReport",
    "InitStarted",
    "JobExited",
    "JobRecord",
    "JobResult",
    "LauncherBusy",
    "OutputAdvanced",
    "OutputTruncated",
    "ProtocolError",
    "Reply",
    "ReplyFrame",
    "Request",
    "RequestFailed",
    "RunningJob",
    "ShutdownReply",
    "ShutdownRequest",
    "StartRefused",
    "StartReply",
    "StartRequest",
    "StartStage",
    "StopReply",
    "StopRequest",
    "decode_from_launcher",
    "decode_record",
    "decode_request",
    "encode_event",
    "encode_order",
    "encode_record",
    "encode_reply",
    "encode_request",
    "parse_report",
]
