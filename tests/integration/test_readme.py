"""The README's curl examples work as written against a real ``fastim serve``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.processes import REPO_ROOT, ServeProcess

README = REPO_ROOT / "README.md"
README_ADDRESS = "127.0.0.1:9000"


def curl_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return [block for block in blocks if f"curl -s -X POST http://{README_ADDRESS}/" in block]


def envelopes(output: str) -> list[dict]:
    """curl -s prints bodies back to back; split them into JSON documents."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while index < len(output):
        if output[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(output, index)
        found.append(document)
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    process = ServeProcess(tmp_path_factory.mktemp("readme"), name="readme").start()
    try:
        yield process.wait_until_serving()
    finally:
        process.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_curl_example_answers_an_envelope(node):
    blocks = curl_blocks()
    assert len(blocks) >= 2, "the README lost its curl examples"
    answers = []
    for block in blocks:
        script = block.replace(README_ADDRESS, f"127.0.0.1:{node.port}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=30, cwd=REPO_ROOT
        )
        assert result.returncode == 0, result.stderr
        answers.extend(envelopes(result.stdout))
    printed = sum(block.count("curl ") - block.count("$(curl ") for block in blocks)
    assert len(answers) == printed
    assert all(set(answer) == {"code", "msg", "data"} for answer in answers)
    login = answers[0]
    assert login["code"] == 200 and re.fullmatch(r"[0-9a-f]{32}", login["msg"])
    assert {"code": 200, "msg": "操作成功", "data": ["1"]} in answers  # listGroup after joinGroup
    assert answers[-1] == {"code": 440, "msg": "请登录后访问", "data": None}
