"""Pre-built WebSocket frames are what RFC 6455 says a server sends."""

import struct

import pytest

from fastim.interfaces.ws.frames import text_frame


@pytest.mark.parametrize("size,header", [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
                                         (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f" + struct.pack("!Q", 65536))])
def test_length_encodings(size, header):
    payload = b"x" * size
    assert text_frame(payload) == header + payload


def test_the_stream_counters_the_socket_fast_path_reads_exist():
    """Socket.write_frames reads two IOStream counters directly; a Tornado upgrade must keep them."""
    import socket

    from tornado.iostream import IOStream

    left, right = socket.socketpair()
    try:
        stream = IOStream(left)
        assert stream._total_write_index == stream._total_write_done_index == 0
        assert stream.writing() is False
    finally:
        right.close()
        left.close()
