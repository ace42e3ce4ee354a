"""The SDK's pure parts: frame parsing of a hostile node, (epoch, seq) ordering across reconnects, backoff bounds."""

from __future__ import annotations

import json
import random

import pytest

from fastim.client import parsing
from fastim.client.backoff import Backoff, BackoffPolicy
from fastim.client.client import is_jwt, ws_base_of
from fastim.client.cursor import Cursor
from fastim.client.errors import BadRequest, FinalClose, LoginEnded, NotAllowed, PolicyViolation, final_close
from fastim.client.events import GroupEntry, Joined, Left, Message, Presence, Recall


def msg(seq, epoch="e1", user="u1", info=None, group="g"):
    return Message(group, user, info or f"m{seq}", 1000 + seq, f"{epoch}-{seq}", seq)


def wire(message: Message) -> dict:
    return {"groupId": message.group_id, "userId": message.user_id, "info": message.info, "ts": message.ts,
            "id": message.id, "seq": message.seq}


# -- parsing ---------------------------------------------------------------------------------

def test_a_message_frame_is_typed():
    frame = parsing.chat_frame('{"groupId":"1","userId":3,"info":"hi","ts":1648368380132,"id":"ab-42","seq":42}')
    assert frame == Message("1", "3", "hi", 1648368380132, "ab-42", 42)
    assert frame.epoch == "ab"


def test_fast_im_messages_without_id_and_seq_are_taken():
    assert parsing.chat_frame('{"groupId":"1","userId":"3","info":"hi","ts":5}') == Message("1", "3", "hi", 5)


def test_recall_ack_error_presence_and_opening_frames():
    assert parsing.chat_frame('{"event":"recall","groupId":"1","userId":"7","ts":5,"id":"e-42","seq":44,"epoch":"e"}') \
        == Recall("1", "7", 5, "e-42", 44, "e")
    assert parsing.chat_frame('{"event":"ack","id":"e-3","seq":3,"ts":9}') == parsing.Ack("e-3", 3, 9)
    assert parsing.chat_frame('{"code":413,"msg":"too large"}') == parsing.ErrorFrame(413, "too large")
    assert parsing.chat_frame('{"event":"join","groupId":"1","userId":"9"}') == Joined("1", "9")
    assert parsing.chat_frame('{"event":"leave","groupId":"1","userId":"9"}') == Left("1", "9")
    assert parsing.chat_frame('{"event":"presence","groupId":"1","online":300}') == Presence("1", 300)
    opening = parsing.chat_frame(json.dumps(
        {"list": [wire(msg(1)), {"event": "recall", "groupId": "g", "userId": "u1", "ts": 1, "id": "e1-1", "seq": 2,
                                 "epoch": "e1"}],
         "total": 1, "seq": 2, "epoch": "e1", "recovered": True}))
    assert opening == parsing.Opening((msg(1), Recall("g", "u1", 1, "e1-1", 2, "e1")), 1, 2, "e1", True)
    assert parsing.chat_frame("440") == parsing.LoginRequired()


def test_unknown_events_are_passed_over():
    assert parsing.chat_frame('{"event":"refreshed","exp":5}') == parsing.Refreshed()  # an answer, see Chat
    assert parsing.chat_frame('{"event":"something-newer","x":1}') is None


@pytest.mark.parametrize("text", [
    "not json",
    "[1,2]",
    "null",
    '"440"',
    '{"groupId":"1","userId":"3","info":5,"ts":1}',  # info not a string
    '{"groupId":"1","userId":"3","info":"x","ts":true}',  # a bool is not a ts
    '{"groupId":"1","userId":"3","info":"x","ts":-1}',
    '{"groupId":"1","userId":"3","info":"x","ts":1e300}',
    '{"groupId":"1","userId":"3","info":"x","ts":NaN}',
    '{"groupId":"1","userId":"3","info":"x","ts":1,"seq":0}',
    '{"groupId":"1","userId":"3","info":"x","ts":1,"seq":"5"}',
    '{"groupId":"","userId":"3","info":"x","ts":1}',
    '{"groupId":["1"],"userId":"3","info":"x","ts":1}',
    '{"groupId":"' + "g" * 129 + '","userId":"3","info":"x","ts":1}',
    '{"groupId":"1","userId":"3","info":"x","ts":1,"id":"' + "i" * 65 + '"}',
    '{"event":"ack","id":"e-1","seq":"1","ts":1}',
    '{"event":"ack","seq":1,"ts":1}',
    '{"code":"413","msg":"x"}',
    '{"code":413,"msg":null}',
    '{"list":"no","total":0,"seq":0,"epoch":"e"}',
    '{"list":[],"total":0,"seq":0,"epoch":"has space"}',
    '{"list":[],"total":0,"seq":0,"epoch":"e","recovered":"yes"}',
    '{"list":[{"groupId":"1"}],"total":0,"seq":0,"epoch":"e"}',
    '{"event":"presence","groupId":"1","online":-1}',
    '{"event":"recall","groupId":"1","userId":"7","ts":5,"epoch":"bad epoch"}',
    "[" * 100_000,  # deeper than the JSON parser recurses
])
def test_malformed_frames_are_refused_whole(text):
    with pytest.raises(parsing.Malformed):
        parsing.chat_frame(text)


def test_group_list_pushes():
    pushed = parsing.group_list(json.dumps([
        {"groupId": "1", "newMessage": wire(msg(3, group="1")), "total": 3, "online": 2},
        {"groupId": "2", "newMessage": None, "total": 0},
    ]))
    assert pushed.groups == (GroupEntry("1", msg(3, group="1"), 3, 2), GroupEntry("2", None, 0, None))
    assert parsing.group_list("440") is None
    for text in ('{"groupId":"1"}', '[{"groupId":"1","newMessage":{"info":1},"total":0}]', '[5]'):
        with pytest.raises(parsing.Malformed):
            parsing.group_list(text)


def test_envelopes():
    assert parsing.envelope(b'{"code":200,"msg":"tok","data":"user_info"}')[:3] == (200, "tok", "user_info")
    for body in (b"<html>", b"[]", b'{"code":"200"}', b'{"code":200,"msg":5}', b"\xff"):
        with pytest.raises(parsing.Malformed):
            parsing.envelope(body)


# -- ordering and deduplication --------------------------------------------------------------

def test_each_event_passes_once_and_in_order():
    cursor = Cursor()
    assert [cursor.admit(e) for e in (msg(1), msg(2), msg(2), msg(1), msg(3))] == [True, True, False, False, True]
    assert (cursor.epoch, cursor.seq) == ("e1", 3)
    assert cursor.resume_query() == {"since": "3", "epoch": "e1"}


def test_a_resume_that_did_not_recover_lets_only_the_unseen_through():
    cursor = Cursor()
    cursor.begin("e1", 2)
    assert [e.seq for e in (msg(1), msg(2)) if cursor.admit(e)] == [1, 2]
    cursor.settle("e1", 2)
    # reconnect: the node lists its newest page, 2..5, of the same epoch
    cursor.begin("e1", 5)
    assert [e.seq for e in (msg(2), msg(3), msg(4), msg(5)) if cursor.admit(e)] == [3, 4, 5]
    cursor.settle("e1", 5)
    assert not cursor.admit(msg(5)) and cursor.admit(msg(6))


def test_a_new_epoch_restarts_the_numbering_and_the_old_ones_stragglers_are_dropped():
    cursor = Cursor("e1", 40)
    cursor.begin("e2", 2)
    assert [e.id for e in (msg(1, "e2"), msg(2, "e2")) if cursor.admit(e)] == ["e2-1", "e2-2"]
    cursor.settle("e2", 2)
    assert not cursor.admit(msg(41, "e1"))  # a late event of the ended stream
    assert cursor.admit(msg(3, "e2"))
    # a restart seen live, on an open connection
    assert cursor.admit(msg(1, "e3")) and cursor.resume_query() == {"since": "1", "epoch": "e3"}
    assert not cursor.admit(msg(4, "e2"))


def test_a_stream_numbered_lower_than_seen_counts_as_restarted():
    cursor = Cursor("e1", 10)
    cursor.begin("e1", 3)  # the storage went back (a failover lost writes)
    assert [e.seq for e in (msg(2), msg(3)) if cursor.admit(e)] == [2, 3]
    cursor.settle("e1", 3)
    assert cursor.admit(msg(4))


def test_events_without_seq_always_pass_and_do_not_move_the_cursor():
    cursor = Cursor("e1", 5)
    fast_im = Message("g", "u", "x", 1)
    assert cursor.admit(fast_im) and cursor.admit(fast_im)
    assert cursor.seq == 5


def test_an_empty_epoch_then_a_first_message():
    cursor = Cursor()
    cursor.begin("", 0)
    cursor.settle("", 0)
    assert cursor.resume_query() == {"since": "0"}
    assert cursor.admit(msg(1, "fresh")) and cursor.epoch == "fresh"


# -- backoff ---------------------------------------------------------------------------------

def test_backoff_is_full_jitter_under_a_doubling_ceiling_with_a_cap():
    backoff = Backoff(BackoffPolicy(base=0.1, cap=10.0), random.Random(7))
    delays = [backoff.next() for _ in range(200)]
    ceilings = [min(10.0, 0.1 * 2 ** i) for i in range(200)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings))
    assert max(delays[10:]) > 5.0  # capped at 10 s, not stuck low
    assert backoff.ceiling(1) == 0.1 and backoff.ceiling(2) == 0.2 and backoff.ceiling(10_000) == 10.0
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next() <= 0.1


def test_backoff_spreads_its_draws():
    backoff = Backoff(BackoffPolicy(base=8.0, cap=8.0), random.Random(1))
    draws = [backoff.next() for _ in range(100)]
    assert min(draws) < 2.0 and max(draws) > 6.0


@pytest.mark.parametrize("policy", [dict(base=0), dict(base=2, cap=1), dict(factor=0.5)])
def test_backoff_policy_is_checked(policy):
    with pytest.raises(ValueError):
        BackoffPolicy(**policy)


# -- close codes and addresses ---------------------------------------------------------------

@pytest.mark.parametrize("code, kind", [(4440, LoginEnded), (4403, NotAllowed), (4400, BadRequest),
                                        (1008, PolicyViolation), (4999, FinalClose)])
def test_final_close_codes(code, kind):
    error = final_close(code, "why")
    assert type(error) is kind and error.code == code and error.reason == "why"


@pytest.mark.parametrize("code", [1000, 1001, 1006, 1011, 1012, 1013, 1009])
def test_close_codes_worth_a_reconnect(code):
    assert final_close(code, "") is None


def test_websocket_addresses_are_derived_from_the_base_url():
    assert ws_base_of("http://127.0.0.1:9000") == "ws://127.0.0.1:9000"
    assert ws_base_of("https://chat.example.com/im/") == "wss://chat.example.com/im"
    for bad in ("ftp://x", "127.0.0.1:9000", "http://"):
        with pytest.raises(ValueError):
            ws_base_of(bad)


def test_jwts_are_told_from_login_tokens():
    assert is_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig")
    assert not is_jwt("0123456789abcdef0123456789abcdef")


# -- what the terminal client shows ----------------------------------------------------------

def test_chat_lines_show_time_user_and_what_happened():
    from fastim.client.terminal import chat_line, clock

    ts = 1648368380132
    line = chat_line(Message("g", "bob", "hi", ts))
    assert line == f"{clock(ts)} <bob> hi" and len(line.split(" ")[0]) == 8 and line[2] == ":" and line[5] == ":"
    assert chat_line(Recall("g", "bob", ts, "e-1", 2, "e")) == f"{clock(ts)} * bob recalled a message"
    assert chat_line(Joined("g", "carol")).endswith(" * carol joined")
    assert chat_line(Left("g", "carol")).endswith(" * carol left")
    assert chat_line(Presence("g", 300)).endswith(" * 300 online")


def test_tail_prints_the_nodes_own_json_forms():
    from fastim.client.events import NotRecovered, Opened
    from fastim.client.terminal import event_object

    assert event_object(msg(2)) == wire(msg(2))
    assert event_object(Message("g", "u", "x", 5)) == {"groupId": "g", "userId": "u", "info": "x", "ts": 5}
    assert event_object(Recall("g", "u", 5, "e-1", 2, "e")) == {
        "event": "recall", "groupId": "g", "userId": "u", "ts": 5, "id": "e-1", "seq": 2, "epoch": "e"}
    assert event_object(Joined("g", "u")) == {"event": "join", "groupId": "g", "userId": "u"}
    assert event_object(NotRecovered("g", 4, "e", "f"))["event"] == "not_recovered"
    assert event_object(Opened("g", (), 0, 0, "e", None, False)) is None
