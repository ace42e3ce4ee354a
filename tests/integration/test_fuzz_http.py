"""Property-based fuzzing of the HTTP API on a real node: every answer is an envelope, never a 500."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.processes import ServeProcess

PATHS = [
    "/user/login", "/user/joinGroup", "/user/listGroup", "/group/listMessage",
    "/group/listOldMessage", "/group/delMessage", "/healthz", "/readyz", "/openapi.json", "/metrics",
]
FIELDS = ["userId", "password", "groupId", "startPage", "endPage", "ts", "count"]
EXPECTED_STATUS = {200, 204, 400, 404, 405}
EXAMPLES = 150  # per test: enough to hit every path and field shape, a few seconds in CI

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "-0", "1.5", "1e3", "0x10", " 7", "NaN", "9" * 400]),
)
texts = st.text(max_size=300)
values = st.one_of(numbers, texts)
forms = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=20)), values, max_size=8)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    process = ServeProcess(tmp_path_factory.mktemp("fuzz"), name="fuzz").start()
    try:
        yield process.wait_until_serving()
    finally:
        process.stop()


def request(node, method, path, body=b"", headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def login(node, user="fuzzer"):
    status, body = request(
        node, "POST", "/user/login", urlencode({"userId": user, "password": "x"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200
    return json.loads(body)["msg"]


def assert_envelope(status, body, path):
    assert status in EXPECTED_STATUS, (status, body[:300])
    assert b"Traceback" not in body
    if path in ("/metrics",) or status == 204:
        return
    document = json.loads(body)
    if path == "/openapi.json" and status == 200:
        assert "openapi" in document
        return
    assert set(document) == {"code", "msg", "data"} and isinstance(document["code"], int)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), form=forms, authenticated=st.booleans(), multipart=st.booleans())
def test_forms_never_break_the_api(node, path, form, authenticated, multipart):
    headers = {}
    if authenticated:
        headers.update({"userId": "fuzzer", "token": login(node)})
    if multipart:
        boundary = "fuzzboundary"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in form.items() if '"' not in name and "\r" not in name and "\n" not in name
        ]
        body = ("".join(parts) + f"--{boundary}--\r\n").encode("utf-8", "surrogatepass")
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    else:
        body = urlencode(form, encoding="utf-8", errors="surrogatepass").encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    method = "GET" if path in ("/healthz", "/readyz", "/openapi.json", "/metrics") else "POST"
    status, answer = request(node, method, path, body if method == "POST" else b"", headers)
    assert_envelope(status, answer, path)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=st.one_of(st.sampled_from(PATHS), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(lambda p: "/" + p)),
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "multipart/form-data", "text/plain", "application/json"]
    ),
    user=header_text,
    token=header_text,
)
def test_raw_requests_never_break_the_api(node, method, path, body, content_type, user, token):
    headers = {"Content-Type": content_type, "userId": user, "token": token}
    status, answer = request(node, method, path, body if method in ("POST", "PUT", "PATCH") else b"", headers)
    if method == "HEAD":
        assert status in EXPECTED_STATUS
        return
    assert_envelope(status, answer, path.split("?")[0])
