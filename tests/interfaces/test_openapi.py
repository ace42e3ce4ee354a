"""``/openapi.json`` is a valid OpenAPI 3 document that describes every HTTP route."""

from __future__ import annotations

import json

import pytest
import tornado.web
from openapi_spec_validator import validate

from fastim.app import make_app
from fastim.interfaces.http.base import ApiHandler


@pytest.fixture
def backend_name():
    return "memory"


def http_paths(app: tornado.web.Application) -> set[str]:
    paths = set()
    for rule in app.wildcard_router.rules:
        target = rule.target
        if isinstance(target, type) and issubclass(target, ApiHandler):
            paths.add(rule.matcher.regex.pattern.rstrip("$"))
    return paths


@pytest.mark.gen_test
async def test_the_document_is_valid_openapi_3_and_lists_every_route(container, http_server, http_client, base_url):
    response = await http_client.fetch(base_url + "/openapi.json")
    document = json.loads(response.body)
    validate(document)
    assert document["openapi"].startswith("3.")
    routes = http_paths(make_app(container))
    assert routes >= {"/user/login", "/group/listMessage", "/group/delMessage"}
    assert set(document["paths"]) == routes


@pytest.mark.gen_test
async def test_protected_operations_declare_the_login_headers_and_forms(container, http_server, http_client, base_url):
    document = json.loads((await http_client.fetch(base_url + "/openapi.json")).body)
    operation = document["paths"]["/group/listOldMessage"]["post"]
    assert {(p["in"], p["name"]) for p in operation["parameters"]} == {("header", "userId"), ("header", "token")}
    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert "$ref" in form or "properties" in form
    assert "multipart/form-data" in operation["requestBody"]["content"]
    login = document["paths"]["/user/login"]["post"]
    assert "parameters" not in login  # an open path needs no headers
    assert set(operation["responses"]) >= {"200", "400", "500", "503"}
