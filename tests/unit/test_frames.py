"""Pre-built WebSocket frames are what RFC 6455 says a server sends."""

import struct

import pytest

from fastim.interfaces.ws.frames import close_frame, text_frame


@pytest.mark.parametrize("size,header", [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
                                         (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f" + struct.pack("!Q", 65536))])
def test_length_encodings(size, header):
    payload = b"x" * size
    assert text_frame(payload) == header + payload


def test_a_close_frame_carries_the_code_and_a_reason_cut_on_a_character_boundary():
    frame = close_frame(1008, "é" * 100)
    assert frame[0] == 0x88 and frame[1] == len(frame) - 2 <= 125
    assert struct.unpack("!H", frame[2:4])[0] == 1008
    assert frame[4:].decode("utf-8") == "é" * 61  # 122 of the 123 bytes: a character is never split


def test_a_close_frame_without_a_code_is_empty():
    assert close_frame(None, "ignored") == b"\x88\x00"
