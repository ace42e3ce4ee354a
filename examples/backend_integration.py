"""Your application's backend and fastim: mint a JWT, publish through the server API, read presence.

Run a node with the server API and JWTs on, then this script:

    FASTIM_API_KEY=an-api-key-of-16-chars-or-more \
    FASTIM_AUTH_JWT_SECRET=a-jwt-secret-of-at-least-32-bytes-long fastim serve
    python examples/backend_integration.py http://127.0.0.1:9000

It needs PyJWT and websockets (both installed with fastim's test extras).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request

import jwt
import websockets

API_KEY = os.environ.get("FASTIM_API_KEY", "an-api-key-of-16-chars-or-more")
JWT_SECRET = os.environ.get("FASTIM_AUTH_JWT_SECRET", "a-jwt-secret-of-at-least-32-bytes-long")


def mint(user_id: str, groups: list[str], lives_s: int = 3600) -> str:
    """What your login endpoint hands the browser: a JWT for the chat server."""
    return jwt.encode({"sub": user_id, "exp": int(time.time()) + lives_s, "groups": groups}, JWT_SECRET, "HS256")


def server_api(base_url: str, path: str, body: dict | None = None) -> dict:
    """One call of the server API; the envelope's data, or an exception with its msg."""
    request = urllib.request.Request(
        base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"apikey {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        envelope = json.load(response)
    if envelope["code"] != 200:
        raise RuntimeError(envelope["msg"])
    return envelope["data"]


async def main(base_url: str) -> None:
    token = mint("alice", groups=["lobby"])
    ws_url = base_url.replace("http", "ws", 1) + f"/group/chat/lobby/alice/{token}"
    async with websockets.connect(ws_url) as chat:  # a client, as a browser would connect
        print("alice opened lobby:", json.loads(await chat.recv())["total"], "messages")
        sent = server_api(base_url, "/api/publish", {"groupId": "lobby", "userId": "system", "info": "welcome!"})
        print("published seq", sent["seq"], "id", sent["id"])
        print("alice got:", json.loads(await chat.recv())["info"])
        for _ in range(50):  # presence is written within a fraction of a second of a socket opening
            online = server_api(base_url, "/api/presence/lobby")["users"]
            if online:
                break
            await asyncio.sleep(0.1)
        print("online in lobby:", online)
        print("lobby:", server_api(base_url, "/api/groups/lobby"))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9000"))
