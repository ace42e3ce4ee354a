"""The wire format of SPEC §3."""

import pytest

from fastim.domain.codec import InvalidPayload, decode_event, decode_message, decode_notice, encode_event, encode_message
from fastim.domain.model import Message, Recall


def test_a_message_encodes_exactly_as_fast_im_stores_it():
    message = Message(group_id="1", user_id="3", info="hello", ts=1648368380132)
    assert encode_message(message) == '{"groupId":"1","userId":"3","info":"hello","ts":1648368380132}'


def test_non_ascii_text_is_kept_as_utf8_not_escaped():
    assert encode_message(Message("1", "3", "你好", 1)) == '{"groupId":"1","userId":"3","info":"你好","ts":1}'


def test_encode_then_decode_is_identity():
    message = Message("g", "u", 'a "quoted" \\ line\n😀', 1648368380132)
    assert decode_message(encode_message(message)) == message


def test_numeric_ids_from_java_nodes_become_strings():
    assert decode_message('{"groupId":1,"userId":3,"info":"x","ts":5}') == Message("1", "3", "x", 5)


def test_key_order_and_bytes_do_not_matter_on_decode():
    assert decode_message(b'{"ts":5,"info":"x","userId":"3","groupId":"1"}') == Message("1", "3", "x", 5)


def test_recall_events_round_trip():
    recall = Recall("1", "3", 1648368380132)
    assert encode_event(recall) == '{"event":"recall","groupId":"1","userId":"3","ts":1648368380132}'
    assert decode_event(encode_event(recall)) == recall


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        '"440"',
        '{"groupId":"1","userId":"3","info":"x"}',
        '{"groupId":"1","userId":"3","info":"x","ts":"5"}',
        '{"groupId":"1","userId":"3","info":"x","ts":true}',
        '{"groupId":"1","userId":"3","info":"x","ts":1.5}',
        '{"groupId":"1","userId":"3","info":"x","ts":-1}',
        '{"groupId":"1","userId":"3","info":"x","ts":1000000000000000000000000000000}',
        '{"groupId":"","userId":"3","info":"x","ts":1}',
        '{"groupId":"1","userId":null,"info":"x","ts":1}',
        '{"groupId":"1","userId":"3","info":7,"ts":1}',
        '{"event":"explode","groupId":"1","userId":"3","ts":1}',
        b"\xff\xfe",
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_invalid_payloads_are_refused(payload):
    with pytest.raises(InvalidPayload):
        decode_event(payload)


def test_a_notice_nested_too_deep_for_the_parser_is_refused_not_raised():
    with pytest.raises(InvalidPayload):
        decode_notice('{"a":' * 100_000 + "1" + "}" * 100_000)
