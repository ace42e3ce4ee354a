"""Every row of SPEC §4 against a real Tornado server, on the memory backend and on real Redis."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from tornado.httpclient import AsyncHTTPClient

from fastim.domain.codec import encode_message
from tests.interfaces.http_client import Api

LOGIN_REQUIRED = {"code": 440, "msg": "请登录后访问", "data": None}
OK = {"code": 200, "msg": "操作成功", "data": None}


@pytest.fixture
def api(container, http_client, base_url):
    return Api(http_client, base_url)


async def post_messages(container, clock, group, user, count, start=0):
    sent = []
    for i in range(start, start + count):
        sent.append(await container.messages().post(group, user, f"m{i}"))
        clock.advance(0.001)
    return sent


# --- /user/login -----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_login_returns_a_32_hex_token_in_msg(api):
    status, body = await api.post("/user/login", {"userId": "1", "password": "123456"})
    assert status == 200
    assert body["code"] == 200 and body["data"] == "user_info"
    assert re.fullmatch(r"[0-9a-f]{32}", body["msg"])


@pytest.mark.gen_test
async def test_login_accepts_multipart_form_data(api):
    status, body = await api.post("/user/login", {"userId": "1", "password": "x"}, multipart=True)
    assert status == 200 and body["code"] == 200


@pytest.mark.gen_test
async def test_a_new_login_replaces_the_previous_token(api):
    first = await api.login("1")
    second = await api.login("1")
    assert first != second
    _, body = await api.post("/user/listGroup", headers={"userId": "1", "token": first})
    assert body == LOGIN_REQUIRED


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "fields,named",
    [({"password": "x"}, "userId"), ({"userId": "1"}, "password"), ({"userId": "", "password": "x"}, "userId")],
)
async def test_login_with_a_missing_field_is_a_400_naming_it(api, fields, named):
    status, body = await api.post("/user/login", fields)
    assert status == 400 and body["code"] == 400 and named in body["msg"] and body["data"] is None


@pytest.mark.gen_test(timeout=60)
async def test_a_burst_of_1000_concurrent_logins_all_succeed_with_distinct_tokens(container, http_server, base_url):
    client = AsyncHTTPClient(force_instance=True, max_clients=100)
    try:
        responses = await asyncio.gather(
            *[
                client.fetch(
                    base_url + "/user/login", method="POST", body=f"userId={i}&password=pw", raise_error=False
                )
                for i in range(1000)
            ]
        )
    finally:
        client.close()
    bodies = [json.loads(response.body) for response in responses]
    assert all(response.code == 200 for response in responses)
    assert all(body["code"] == 200 for body in bodies)
    assert len({body["msg"] for body in bodies}) == 1000


# --- the authentication gate ---------------------------------------------------------------


PROTECTED = ["/user/joinGroup", "/user/listGroup", "/group/listMessage", "/group/listOldMessage", "/group/delMessage"]


@pytest.mark.gen_test
@pytest.mark.parametrize("path", PROTECTED)
async def test_protected_paths_without_headers_answer_exactly_440(api, path):
    status, body = await api.post(path, {"groupId": "1"})
    assert status == 200 and body == LOGIN_REQUIRED


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "headers",
    [
        {"userId": "1"},
        {"token": "0" * 32},
        {"userId": "1", "token": "0" * 32},
        {"userId": "2", "token": "<token of 1>"},
        {"userId": "", "token": ""},
    ],
)
async def test_wrong_or_partial_credentials_answer_440(api, headers):
    token = await api.login("1")
    await api.login("2")
    headers = {name: value.replace("<token of 1>", token) for name, value in headers.items()}
    _, body = await api.post("/user/listGroup", headers=headers)
    assert body == LOGIN_REQUIRED


@pytest.mark.gen_test
async def test_a_valid_token_passes_and_its_ttl_is_renewed(api, container, backend_name):
    await api.login("1")
    if backend_name == "redis":
        raw = container.redis_client()
        await raw.expire("login:1", 5)
        _, body = await api.post("/user/listGroup", user="1")
        assert body["code"] == 200
        assert await raw.ttl("login:1") > 86000
    else:
        clock = container.clock()
        for _ in range(3):  # three quarters of a day apart, alive only because each check renews
            clock.advance(0.75 * 86400)
            _, body = await api.post("/user/listGroup", user="1")
            assert body["code"] == 200
        clock.advance(86401)
        _, body = await api.post("/user/listGroup", user="1")
        assert body == LOGIN_REQUIRED


@pytest.mark.gen_test
async def test_open_paths_need_no_login(api):
    for path in ("/healthz", "/readyz", "/openapi.json"):
        response = await api.call(path, method="GET")
        assert response.code == 200, path


# --- /user/joinGroup and /user/listGroup -----------------------------------------------------


@pytest.mark.gen_test
async def test_join_group_is_idempotent_and_list_group_gives_string_ids(api):
    await api.login("1")
    for group in ("3", "2", "3", "1"):
        status, body = await api.post("/user/joinGroup", {"groupId": group}, user="1")
        assert status == 200 and body == OK
    _, body = await api.post("/user/listGroup", user="1")
    assert body["code"] == 200 and body["msg"] == "操作成功"
    assert sorted(body["data"]) == ["1", "2", "3"]


@pytest.mark.gen_test
async def test_list_group_of_a_user_without_groups_is_empty(api):
    await api.login("9")
    _, body = await api.post("/user/listGroup", user="9")
    assert body == {"code": 200, "msg": "操作成功", "data": []}


@pytest.mark.gen_test
async def test_join_group_without_group_id_is_a_400(api):
    await api.login("1")
    status, body = await api.post("/user/joinGroup", {}, user="1")
    assert status == 400 and body["code"] == 400 and "groupId" in body["msg"]


# --- /group/listMessage (range) ---------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("start,end,expected", [(0, 5, range(0, 6)), (0, -1, range(0, 8)), (-3, -1, range(5, 8)), (6, 2, [])])
async def test_list_message_gives_the_inclusive_index_range_as_json_strings(api, container, clock, start, end, expected):
    sent = await post_messages(container, clock, "1", "1", 8)
    await api.login("1")
    status, body = await api.post("/group/listMessage", {"groupId": "1", "startPage": start, "endPage": end}, user="1")
    assert status == 200 and body["code"] == 200 and body["msg"] == "操作成功"
    assert body["data"] == [encode_message(sent[i]) for i in expected]
    assert all(isinstance(item, str) for item in body["data"])


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "fields,named",
    [
        ({"startPage": "0", "endPage": "5"}, "groupId"),
        ({"groupId": "1", "endPage": "5"}, "startPage"),
        ({"groupId": "1", "startPage": "a", "endPage": "5"}, "startPage"),
        ({"groupId": "1", "startPage": "0", "endPage": "1.5"}, "endPage"),
        ({"groupId": "1", "startPage": "0", "endPage": "9" * 40}, "endPage"),
    ],
)
async def test_list_message_with_a_bad_field_is_a_400_naming_it(api, fields, named):
    await api.login("1")
    status, body = await api.post("/group/listMessage", fields, user="1")
    assert status == 400 and body["code"] == 400 and named in body["msg"]


@pytest.mark.gen_test
async def test_list_message_with_ts_and_count_is_the_history_form(api, container, clock):
    sent = await post_messages(container, clock, "1", "1", 10)
    await api.login("1")
    anchor = sent[6]
    fields = {"userId": "1", "groupId": "1", "ts": anchor.ts, "count": 4}
    _, body = await api.post("/group/listMessage", fields, user="1")
    assert body["data"] == [encode_message(m) for m in sent[2:6]]


# --- /group/listOldMessage ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_list_old_message_returns_exactly_count_oldest_first(api, container, clock):
    sent = await post_messages(container, clock, "1", "1", 10)
    await api.login("1")
    fields = {"userId": "1", "groupId": "1", "ts": sent[7].ts, "count": 4}
    status, body = await api.post("/group/listOldMessage", fields, user="1")
    assert status == 200 and body["code"] == 200
    assert body["data"] == [encode_message(m) for m in sent[3:7]]


@pytest.mark.gen_test
async def test_list_old_message_before_the_first_message_is_empty(api, container, clock):
    sent = await post_messages(container, clock, "1", "1", 5)
    await api.login("1")
    fields = {"userId": "1", "groupId": "1", "ts": sent[0].ts, "count": 4}
    _, body = await api.post("/group/listOldMessage", fields, user="1")
    assert body == {"code": 200, "msg": "操作成功", "data": []}


@pytest.mark.gen_test
async def test_list_old_message_of_an_unknown_anchor_is_null(api, container, clock):
    sent = await post_messages(container, clock, "1", "1", 5)
    await api.login("1")
    for fields in (
        {"userId": "1", "groupId": "1", "ts": sent[2].ts + 999_999, "count": 4},
        {"userId": "2", "groupId": "1", "ts": sent[2].ts, "count": 4},
        {"userId": "1", "groupId": "nope", "ts": sent[2].ts, "count": 4},
    ):
        _, body = await api.post("/group/listOldMessage", fields, user="1")
        assert body == {"code": 200, "msg": "操作成功", "data": None}


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "fields,named",
    [
        ({"groupId": "1", "ts": "1", "count": "4"}, "userId"),
        ({"userId": "1", "groupId": "1", "count": "4"}, "ts"),
        ({"userId": "1", "groupId": "1", "ts": "x", "count": "4"}, "ts"),
        ({"userId": "1", "groupId": "1", "ts": "1"}, "count"),
        ({"userId": "1", "groupId": "1", "ts": "1", "count": "-1"}, "count"),
    ],
)
async def test_list_old_message_with_a_bad_field_is_a_400_naming_it(api, fields, named):
    await api.login("1")
    status, body = await api.post("/group/listOldMessage", fields, user="1")
    assert status == 400 and body["code"] == 400 and named in body["msg"]


# --- /group/delMessage ----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_recall_of_own_message_exactly_at_the_window_edge_succeeds(api, container, clock):
    [sent] = await post_messages(container, clock, "1", "1", 1)
    await api.login("1")
    clock.advance(120 - 0.001)  # post_messages already moved 1 ms: now exactly 120 s after ts
    assert clock.now_ms() - sent.ts == 120_000
    _, body = await api.post("/group/delMessage", {"groupId": "1", "ts": sent.ts}, user="1")
    assert body == {"code": 200, "msg": "撤回消息成功", "data": None}
    assert (await container.messages().latest("1")).total == 0


@pytest.mark.gen_test
async def test_recall_one_millisecond_after_the_window_is_refused(api, container, clock):
    [sent] = await post_messages(container, clock, "1", "1", 1)
    await api.login("1")
    clock.advance(120)
    _, body = await api.post("/group/delMessage", {"groupId": "1", "ts": sent.ts}, user="1")
    assert body == {"code": 100, "msg": "无法撤回消息", "data": None}
    assert (await container.messages().latest("1")).total == 1


@pytest.mark.gen_test
async def test_recall_of_another_users_message_is_refused_and_the_message_kept(api, container, clock):
    [sent] = await post_messages(container, clock, "1", "author", 1)
    await api.login("intruder")
    _, body = await api.post("/group/delMessage", {"groupId": "1", "ts": sent.ts}, user="intruder")
    assert body == {"code": 100, "msg": "消息不存在", "data": None}
    assert (await container.messages().latest("1")).messages == [sent]


@pytest.mark.gen_test
async def test_recall_of_a_message_that_does_not_exist(api, clock):
    await api.login("1")
    _, body = await api.post("/group/delMessage", {"groupId": "1", "ts": clock.now_ms()}, user="1")
    assert body == {"code": 100, "msg": "消息不存在", "data": None}


@pytest.mark.gen_test
async def test_recall_without_ts_is_a_400(api):
    await api.login("1")
    status, body = await api.post("/group/delMessage", {"groupId": "1"}, user="1")
    assert status == 400 and "ts" in body["msg"]


# --- envelopes for everything else --------------------------------------------------------------------


@pytest.mark.gen_test
async def test_unknown_paths_answer_a_404_envelope(api):
    response = await api.call("/no/such/path", {"a": "b"})
    assert response.code == 404
    assert json.loads(response.body) == {"code": 404, "msg": "no such path", "data": None}


@pytest.mark.gen_test
async def test_a_wrong_method_answers_a_405_envelope(api):
    response = await api.call("/user/login", method="GET")
    body = json.loads(response.body)
    assert response.code == 405 and body["code"] == 405


@pytest.mark.gen_test
async def test_invalid_utf8_in_a_form_is_a_400_envelope(api):
    response = await api.call("/user/login", raw_body=b"userId=%FF%FE&password=x")
    assert response.code == 400 and json.loads(response.body)["code"] == 400


@pytest.mark.gen_test
async def test_readyz_and_healthz_answer_envelopes(api):
    for path, msg in (("/healthz", "ok"), ("/readyz", "ready")):
        response = await api.call(path, method="GET")
        assert json.loads(response.body) == {"code": 200, "msg": msg, "data": None}


# --- CORS -------------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_cross_origin_calls_are_allowed_by_default(api):
    response = await api.call("/user/login", {"userId": "1", "password": "x"}, {"Origin": "http://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.gen_test
async def test_a_preflight_is_answered_without_login(api):
    response = await api.call(
        "/group/listMessage",
        method="OPTIONS",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "userId, token"},
    )
    assert response.code == 204
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "userid" in allowed and "token" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
