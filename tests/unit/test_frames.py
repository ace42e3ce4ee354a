"""Pre-built WebSocket frames are what RFC 6455 says a server sends."""

import struct

import pytest

from fastim.interfaces.ws.frames import text_frame


@pytest.mark.parametrize("size,header", [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
                                         (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f" + struct.pack("!Q", 65536))])
def test_length_encodings(size, header):
    payload = b"x" * size
    assert text_frame(payload) == header + payload
