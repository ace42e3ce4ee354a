"""Property-based fuzzing of the chat socket on a real node: arbitrary frames never crash it."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.processes import ServeProcess, http_status

MAX_BYTES = 512
EXAMPLES = 200
ANSWER_TIMEOUT_S = 5.0

edge_texts = st.sampled_from(
    ["", " ", "\x00", "\ufeff", "\uffff", "\U0001f600" * 200, "é" * (MAX_BYTES // 2), "é" * (MAX_BYTES // 2 + 1),
     "a" * MAX_BYTES, "a" * (MAX_BYTES + 1), '{"groupId":"x","userId":"y","info":"z","ts":1}', "440", "\r\n\t"]
)
frames = st.one_of(
    st.text(max_size=700).map(lambda text: ("text", text)),
    edge_texts.map(lambda text: ("text", text)),
    st.binary(max_size=700).map(lambda data: ("binary", data)),
    st.binary(max_size=64).map(lambda data: ("raw-text", data)),  # bytes sent as a text frame: maybe bad UTF-8
)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    environ = {
        "FASTIM_IM_MAX_MESSAGE_BYTES": str(MAX_BYTES),
        "FASTIM_IM_RATE_LIMIT": "100000",
        "FASTIM_IM_RATE_BURST": "100000",
        "FASTIM_IM_LIST_NUM": "0",
    }
    process = ServeProcess(tmp_path_factory.mktemp("fuzz-frames"), name="frames", environ=environ).start()
    try:
        yield process.wait_until_serving()
    finally:
        assert process.stop() == 0
        assert "Traceback" not in process.stderr, process.stderr_tail


class Socket:
    """One chat socket, reopened whenever a frame made the server close it."""

    def __init__(self, node) -> None:
        self.node = node
        self.connection = None

    def get(self):
        if self.connection is None:
            self.connection = connect(f"{self.node.ws_url}/group/chat/fuzz/u/any", open_timeout=5).__enter__()
            assert json.loads(self.connection.recv(timeout=ANSWER_TIMEOUT_S))["list"] == []  # list_num = 0
        return self.connection

    def drop(self):
        if self.connection is not None:
            self.connection.close()
        self.connection = None


@pytest.fixture(scope="module")
def socket(node):
    socket = Socket(node)
    yield socket
    socket.drop()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames)
def test_every_frame_gets_its_message_back_or_an_error_frame_or_a_clean_close(node, socket, frame):
    kind, data = frame
    connection = socket.get()
    try:
        if kind == "binary":
            connection.send(data, text=False)
        elif kind == "raw-text":
            connection.send(data, text=True)
        else:
            connection.send(data)
        answer = json.loads(connection.recv(timeout=ANSWER_TIMEOUT_S))
    except ConnectionClosed as closed:
        # Only a text frame that is not UTF-8 may cost the connection (RFC 6455: 1007).
        assert kind == "raw-text", closed
        socket.drop()
        return
    if kind == "text" and data and len(data.encode("utf-8")) <= MAX_BYTES:
        assert answer["info"] == data and answer["userId"] == "u"
    elif kind == "binary":
        assert answer["code"] == 415
    elif kind == "text":
        assert answer["code"] == (400 if not data else 413)
    else:
        assert "info" in answer or answer["code"] in (400, 413)
    assert http_status(f"{node.base_url}/healthz") == 200
