"""Output's messages, encoded by hand: the same bytes protobuf would make, and readable by it."""

from __future__ import annotations

import pytest

from jobmgr.api import job_pb2 as pb
from jobmgr.api._mapping import OUTPUT_MESSAGE_BYTES, TRUNCATION_NOTICE, output_to_wire
from jobmgr.worker import OutputChunk, Stream

# Around each boundary of the length's varint (1, 2, 3 bytes) and of the message size.
SIZES = [1, 127, 128, 16383, 16384, OUTPUT_MESSAGE_BYTES - 1, OUTPUT_MESSAGE_BYTES,
         OUTPUT_MESSAGE_BYTES + 1, 3 * OUTPUT_MESSAGE_BYTES + 7]  # fmt: skip


@pytest.mark.parametrize("stream", list(Stream))
@pytest.mark.parametrize("size", SIZES)
def test_encoded_messages_equal_what_protobuf_serialises(stream: Stream, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)
    got = list(output_to_wire(OutputChunk(stream, data)))
    pieces = [data[i : i + OUTPUT_MESSAGE_BYTES] for i in range(0, size, OUTPUT_MESSAGE_BYTES)]
    assert got == [
        pb.OutputResponse(output=piece, stream=int(stream)).SerializeToString()  # type: ignore[arg-type]
        for piece in pieces
    ]
    parsed = [pb.OutputResponse.FromString(message) for message in got]
    assert b"".join(message.output for message in parsed) == data
    assert {message.stream for message in parsed} == {int(stream)}


def test_truncation_notice_is_an_empty_message_with_the_flag() -> None:
    notice = pb.OutputResponse.FromString(TRUNCATION_NOTICE)
    assert notice.truncated and not notice.output
