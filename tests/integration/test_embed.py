"""fastim embedded in a host Tornado application (examples/embed_tornado.py): everything under /im, the host's own users."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid

import pytest
import tornado.httpserver
import tornado.web
from openapi_spec_validator import validate
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.netutil import bind_sockets
from tornado.websocket import websocket_connect

from fastim.embed import mount
from fastim.testing import Client, FastimError, SocketClosed, make_settings
from tests.e2e.conftest import browser  # noqa: F401 - the fixture, for the test page under the prefix
from tests.interfaces.ws_client import Client as RawSocket
from tests.processes import REPO_ROOT, ServeProcess, free_port, http_status
from tests.raw_ws import Peer, handshake

EXAMPLE = REPO_ROOT / "examples" / "embed_tornado.py"
PREFIX = "/im"
ALICE, BOB = ("alice", "wonderland"), ("bob", "builder")  # the example's own users
# The example's interpreter imports Tornado and fastim in about a second.
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 12.0


def start_example(workdir) -> ServeProcess:
    """The example on a free port, serving once its /im/healthz answers 200."""
    port = free_port()
    host = ServeProcess(workdir, name="embed", script=EXAMPLE, port=port, args=["--port", str(port)])
    host.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if host.process.poll() is not None:
            raise AssertionError(f"the example exited with {host.process.returncode}:\n{host.stderr_tail}")
        try:
            if http_status(f"{host.base_url}{PREFIX}/healthz", timeout=1.0) == 200:
                return host
        except OSError:
            pass
        if time.monotonic() > deadline:
            host.stop()
            raise AssertionError(f"the example did not serve within {START_TIMEOUT_S:g} s:\n{host.stderr_tail}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    process = start_example(tmp_path_factory.mktemp("embed"))
    try:
        yield process
    finally:
        process.stop()


def get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_the_host_serves_its_own_page_and_fastim_under_the_prefix(host):
    assert get(host.base_url + "/") == (200, b"legacy app")
    status, body = get(f"{host.base_url}{PREFIX}/healthz")
    assert (status, json.loads(body)["code"]) == (200, 200)
    assert get(f"{host.base_url}{PREFIX}/readyz")[0] == 200
    status, body = get(f"{host.base_url}{PREFIX}/metrics")
    assert status == 200 and b"fastim_open_sockets" in body
    # The test page finds the API and the sockets relative to its own URL (new URL("..", location)).
    status, page = get(f"{host.base_url}{PREFIX}/test/websocket")
    assert status == 200 and b'src="static/main.js"' in page
    assert get(f"{host.base_url}{PREFIX}/test/static/api.js")[0] == 200


def test_fastim_urls_without_the_prefix_are_not_found(host):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/test/websocket"):
        assert get(host.base_url + path)[0] == 404, path
    request = urllib.request.Request(host.base_url + "/user/login", data=b"userId=alice&password=wonderland")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5)
    assert refused.value.code == 404
    refused.value.close()
    status, body = get(f"{host.base_url}{PREFIX}/no/such/path")  # fastim's own 404 under its prefix
    assert (status, json.loads(body)) == (404, {"code": 404, "msg": "no such path", "data": None})


def test_the_openapi_document_names_the_prefixed_paths(host):
    status, body = get(f"{host.base_url}{PREFIX}/openapi.json")
    assert status == 200
    document = json.loads(body)
    validate(document)
    assert {f"{PREFIX}/user/login", f"{PREFIX}/group/listMessage", f"{PREFIX}/openapi.json"} <= set(document["paths"])
    assert all(path.startswith(PREFIX + "/") for path in document["paths"])
    assert "parameters" not in document["paths"][f"{PREFIX}/user/login"]["post"]  # open under the prefix too
    protected = document["paths"][f"{PREFIX}/group/listMessage"]["post"]["parameters"]
    assert {parameter["name"] for parameter in protected} == {"userId", "token"}


@pytest.mark.gen_test(timeout=20)
async def test_logins_under_the_prefix_are_checked_against_the_hosts_users(host):
    client = Client(host.base_url + PREFIX)
    session = await client.login(*ALICE)
    assert len(session.token) == 32
    for user_id, password in (("alice", "not-her-password"), ("mallory", "wonderland")):
        with pytest.raises(FastimError) as refused:
            await client.login(user_id, password)
        assert refused.value.code == 100
    # Protected calls need the token the host's user got.
    assert (await client.post("/user/listGroup"))["code"] == 440
    assert (await session.post("/user/listGroup"))["code"] == 200


@pytest.mark.gen_test(timeout=20)
async def test_a_message_reaches_the_other_member_and_the_history_under_the_prefix(host):
    client = Client(host.base_url + PREFIX)
    alice, bob = await client.login(*ALICE), await client.login(*BOB)
    group = f"room-{uuid.uuid4().hex[:8]}"
    group_list = await RawSocket.connect(host.base_url, f"{PREFIX}/group/list/bob/{bob.token}")
    try:
        assert await group_list.json() == []  # bob is in no group yet
        async with alice.chat(group) as alice_room, bob.chat(group) as bob_room:
            assert alice_room.opening["list"] == []
            await alice_room.send("hello from alice")
            message = await bob_room.receive()
            assert (message["groupId"], message["userId"], message["info"]) == (group, "alice", "hello from alice")
            assert (await alice_room.receive())["info"] == "hello from alice"  # the sender's echo
        history = await bob.post("/group/listMessage", groupId=group, startPage=0, endPage=-1)
        assert [json.loads(item)["info"] for item in history["data"]] == ["hello from alice"]
        pushed = await group_list.json(timeout=10)  # bob's list, pushed once his group changed
        assert [(entry["groupId"], entry["newMessage"]["info"]) for entry in pushed] == [(group, "hello from alice")]
    finally:
        group_list.close()
    # The sockets' tokens are kept out of the host's log, prefix or not.
    deadline = time.monotonic() + 5
    while f"{PREFIX}/group/chat/{group}/alice/***" not in host.stderr:
        assert time.monotonic() < deadline, host.stderr_tail
        await asyncio.sleep(0.05)
    assert alice.token not in host.stderr and bob.token not in host.stderr


@pytest.mark.gen_test(timeout=20)
async def test_chat_sockets_under_the_prefix_need_a_token_of_the_hosts_users(host):
    with pytest.raises(SocketClosed) as closed:
        await Client(host.base_url + PREFIX).chat("room-1", "alice", "0" * 32)  # "440", then the close
    assert closed.value.code == 4440


@pytest.mark.gen_test(timeout=30)
async def test_sigterm_closes_the_sockets_with_1001_and_exits_0(tmp_path):
    host = start_example(tmp_path)
    try:
        session = await Client(host.base_url + PREFIX).login(*ALICE)
        room = await session.chat("room-stop")
        host.process.send_signal(signal.SIGTERM)
        with pytest.raises(SocketClosed) as closed:
            await room.receive(timeout=5)
        assert closed.value.code == 1001
        status = await asyncio.to_thread(host.process.wait, STOP_TIMEOUT_S)
        assert status == 0, host.stderr_tail
        assert "fastim stopped" in host.stderr and "INFO legacy: stopped" in host.stderr
    finally:
        host.stop()


# --- in process: the API around the example ---------------------------------------------------


class Home(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("legacy app")


@pytest.mark.gen_test(timeout=20)
async def test_accept_puts_the_hosts_connections_under_fastims_limits():
    im = mount(PREFIX, settings=make_settings(server__max_connections_per_ip=1))
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Home), *im.rules]))
    sockets = bind_sockets(0, address="127.0.0.1")
    port = sockets[0].getsockname()[1]
    http = AsyncHTTPClient()
    await im.start()
    try:
        im.accept(server, sockets)
        assert (await http.fetch(f"http://127.0.0.1:{port}/")).body == b"legacy app"
        _, holder = await asyncio.open_connection("127.0.0.1", port)  # an idle connection holds the one slot
        refused = await http.fetch(f"http://127.0.0.1:{port}/", raise_error=False)
        assert refused.code == 503 and b"too many connections from your address" in refused.body
        holder.close()
        for _ in range(100):  # the slot comes back once the node sees the close
            if (await http.fetch(f"http://127.0.0.1:{port}/", raise_error=False)).code == 200:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the slot never came back")
    finally:
        await im.stop()
        await server.close_all_connections()
    with pytest.raises(OSError):  # stop() stopped accepting: the port is closed
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.gen_test(timeout=20)
async def test_the_acceptor_answers_handshakes_under_the_prefix_and_leaves_the_hosts_urls_to_it():
    im = mount(PREFIX, settings=make_settings())
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Home), *im.rules]))
    sockets = bind_sockets(0, address="127.0.0.1")
    port = sockets[0].getsockname()[1]
    await im.start()
    try:
        im.accept(server, sockets)
        peer = Peer(socket.create_connection(("127.0.0.1", port)))
        await peer.send(handshake(f"{PREFIX}/group/chat/g1/u1/t"))
        answer = await peer.read_until(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 101") and b"TornadoServer" not in answer  # the acceptor's own 101
        assert json.loads(await peer.text())["list"] == []
        peer.sock.close()
        peer = Peer(socket.create_connection(("127.0.0.1", port)))
        await peer.send(handshake("/group/chat/g1/u1/t"))  # fast-im's URL is not fastim's here: the host's 404
        assert (await peer.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 404")
        peer.sock.close()
        assert (await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/")).body == b"legacy app"
    finally:
        await im.stop()
        await server.close_all_connections()


@pytest.mark.gen_test(timeout=20)
async def test_fastim_mounted_at_the_root_answers_fast_ims_own_urls():
    im = mount("", settings=make_settings())
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Home), *im.rules]))
    sockets = bind_sockets(0, address="127.0.0.1")
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    await im.start()
    try:
        client = Client(base)
        session = await client.login("u1", "any")  # the default authenticator accepts any password
        async with session.chat("g1") as room:
            await room.send("hi")
            assert (await room.receive())["info"] == "hi"
        assert (await AsyncHTTPClient().fetch(base + "/")).body == b"legacy app"
    finally:
        server.stop()
        await im.stop()
        await server.close_all_connections()


@pytest.mark.redis
@pytest.mark.gen_test(timeout=20)
async def test_two_host_applications_on_one_redis_are_one_chat(fresh_redis):
    """Each embedded fastim is a node: a message sent through one host reaches a socket of the other."""
    hosts = []
    try:
        for _ in range(2):
            im = mount(PREFIX, settings=make_settings(storage__backend="redis", storage__redis_url=fresh_redis.url))
            server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Home), *im.rules]))
            sockets = bind_sockets(0, address="127.0.0.1")
            await im.start()
            server.add_sockets(sockets)
            hosts.append((im, server, f"http://127.0.0.1:{sockets[0].getsockname()[1]}{PREFIX}"))
        alice = await Client(hosts[0][2]).login("alice", "any")
        bob = await Client(hosts[1][2]).login("bob", "any")  # the token lives in the shared Redis
        async with alice.chat("shared") as alice_room, bob.chat("shared") as bob_room:
            await alice_room.send("across hosts")
            assert (await bob_room.receive())["info"] == "across hosts"
    finally:
        for im, server, _ in hosts:
            server.stop()
            await im.stop()
            await server.close_all_connections()


@pytest.mark.gen_test(timeout=30)
async def test_a_host_serving_tls_itself_serves_the_api_but_refuses_websockets(tmp_path):
    """fastim's sockets read frames from the raw socket: over TLS they would break, so they are refused (501)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a certificate with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusted = ssl.create_default_context(cafile=str(cert))
    im = mount(PREFIX, settings=make_settings())
    server = tornado.httpserver.HTTPServer(tornado.web.Application(im.rules), ssl_options=served)
    sockets = bind_sockets(0, address="127.0.0.1")
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    await im.start()
    try:
        health = await AsyncHTTPClient().fetch(f"https://127.0.0.1:{port}{PREFIX}/healthz", ssl_options=trusted)
        assert health.code == 200
        request = HTTPRequest(f"wss://127.0.0.1:{port}{PREFIX}/group/chat/g1/u1/t", ssl_options=trusted)
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(request)
        assert refused.value.code == 501
    finally:
        server.stop()
        await im.stop()
        await server.close_all_connections()


@pytest.mark.parametrize("prefix", ["im", "/im/", "/", "/i m", "/im?x"])
def test_a_malformed_prefix_is_refused(prefix):
    with pytest.raises(ValueError):
        mount(prefix, settings=make_settings())


@pytest.mark.gen_test(timeout=20)
async def test_start_and_stop_are_each_called_once_and_stop_is_idempotent():
    im = mount(PREFIX, settings=make_settings())
    await im.stop()  # before start: nothing to do
    await im.start()
    with pytest.raises(RuntimeError):
        await im.start()
    await im.stop()
    await im.stop()


# --- the test page under the prefix, in a real browser (last: the browser lives until the module ends) ---


@pytest.mark.e2e
def test_the_test_page_works_under_the_prefix(host, browser):
    from tests.e2e.person import Person  # needs playwright, which the browser fixture checked

    alice, bob = Person(browser, host.base_url + PREFIX, "alice"), Person(browser, host.base_url + PREFIX, "bob")
    try:
        for person, password in ((alice, ALICE[1]), (bob, BOB[1])):
            person.open_page()
            person.log_in(password)
            person.join("page-room")
        alice.say("hello from the page")
        bob.expect_message("hello from the page", "alice")
        alice.expect_message("hello from the page", "alice")
        for person in (alice, bob):
            assert person.errors == [] and person.dialogs == [] and person.csp_violations() == []
    finally:
        alice.close()
        bob.close()
