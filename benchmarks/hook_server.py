"""``python -m benchmarks.hook_server PORT``: the application's publish hook at its cheapest, answering ``{}``.

It reads each request's body (as an application must) and accepts it, on
uvloop, so that what the benchmark measures is the node's side of the call.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import tornado.httpserver
import tornado.web
import uvloop


class Accept(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(b"{}")

    def compute_etag(self) -> None:
        return None


async def serve(port: int) -> None:
    app = tornado.web.Application([(r"/review", Accept)], log_function=lambda handler: None)
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, address="127.0.0.1")
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    print("serving", flush=True)
    await stopped.wait()
    server.stop()


def main() -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
