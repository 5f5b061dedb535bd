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
    starts = range(0, size, OUTPUT_MESSAGE_BYTES)
    assert got == [
        pb.OutputResponse(
            output=data[i : i + OUTPUT_MESSAGE_BYTES],
            stream=int(stream),  # type: ignore[arg-type]
            offset=i,
        ).SerializeToString()
        for i in starts
    ]
    parsed = [pb.OutputResponse.FromString(message) for message in got]
    assert b"".join(message.output for message in parsed) == data
    assert {message.stream for message in parsed} == {int(stream)}


def test_truncation_notice_is_an_empty_message_with_the_flag() -> None:
    notice = pb.OutputResponse.FromString(TRUNCATION_NOTICE)
    assert notice.truncated and not notice.output


@pytest.mark.parametrize("offset", [0, 1, 300, 2**40])
def test_each_message_says_the_offset_of_its_first_byte(offset: int) -> None:
    data = b"x" * (2 * OUTPUT_MESSAGE_BYTES + 5)
    got = list(output_to_wire(OutputChunk(Stream.STDERR, data, offset)))
    expected = [
        pb.OutputResponse(
            output=data[i : i + OUTPUT_MESSAGE_BYTES], stream=pb.STREAM_STDERR, offset=offset + i
        ).SerializeToString()
        for i in range(0, len(data), OUTPUT_MESSAGE_BYTES)
    ]
    assert got == expected


@pytest.mark.parametrize("offset", [0, 9])
def test_an_empty_chunk_is_a_message_with_its_offset_alone(offset: int) -> None:
    got = list(output_to_wire(OutputChunk(Stream.STDOUT, b"", offset)))
    assert got == [pb.OutputResponse(offset=offset).SerializeToString()]
