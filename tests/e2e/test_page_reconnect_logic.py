"""The page's reconnect and stream logic (link.js, stream.js), run in Chromium against a fake WebSocket.

The backoff schedule, the close codes that end retrying, and the seq order of what is shown are checked
here without waiting on timers; test_page_resume.py restarts a real node under the page.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import browser_required

if browser_required():
    import playwright.sync_api  # noqa: F401 - missing in CI is a failure, not a skip
else:
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

from tests.e2e.person import Person  # noqa: E402 - needs playwright, checked just above

pytestmark = pytest.mark.e2e

# A WebSocket that never connects: each one closes at once with the code the test chose; setTimeout
# only records the delay asked for, and the test fires the pending retry itself.
FAKE_SOCKETS = """
async ({ closeCodes }) => {
  const { Link } = await import("./static/link.js");
  const opened = [];
  const delays = [];
  let pending = null;
  const states = [];
  const realSetTimeout = window.setTimeout;
  class FakeSocket extends EventTarget {
    constructor(url) {
      super();
      this.url = url;
      opened.push(url);
      const code = closeCodes[Math.min(opened.length - 1, closeCodes.length - 1)];
      queueMicrotask(() => this.dispatchEvent(Object.assign(new Event("close"), { code, reason: "" })));
    }
    close() {}
  }
  const RealSocket = window.WebSocket;
  window.WebSocket = FakeSocket;
  window.setTimeout = (fn, ms) => { delays.push(ms); pending = fn; return 0; };
  try {
    let n = 0;
    const link = new Link(() => `ws://x/${n++}`, { onFrame: () => {}, onState: (state) => states.push(state) });
    for (let i = 0; i < 12; i++) {
      await new Promise((resolve) => queueMicrotask(resolve));
      if (!pending) break;
      const fire = pending;
      pending = null;
      fire();
    }
    await new Promise((resolve) => queueMicrotask(resolve));
    return { opened, delays, states, stopped: link.stopped };
  } finally {
    window.WebSocket = RealSocket;
    window.setTimeout = realSetTimeout;
  }
}
"""


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    from tests.processes import ServeProcess

    with ServeProcess(tmp_path_factory.mktemp("page-logic"), name="page-logic") as node:
        person = Person(browser, node.base_url, "1")
        try:
            person.open_page()
            yield person.page
        finally:
            person.close()


def test_lost_sockets_retry_from_a_quarter_second_doubling_to_five_with_jitter(page):
    result = page.evaluate(FAKE_SOCKETS, {"closeCodes": [1006]})
    caps = [250, 500, 1000, 2000, 4000] + [5000] * 8  # one delay per loss: the first and the 12 retries
    assert len(result["delays"]) == len(caps), result
    for delay, cap in zip(result["delays"], caps):
        assert cap / 2 <= delay <= cap, (delay, cap)
    assert result["states"][:3] == ["connecting", "retrying", "reconnecting"]
    assert result["stopped"] is False


@pytest.mark.parametrize("code", [1001, 1011, 1013])
def test_going_away_and_server_errors_are_retried(page, code):
    result = page.evaluate(FAKE_SOCKETS, {"closeCodes": [code, code, 4440]})
    assert result["states"] == ["connecting", "retrying", "reconnecting", "retrying", "reconnecting", "refused"]
    assert result["opened"] == ["ws://x/0", "ws://x/1", "ws://x/2"]  # the address is asked anew each time


@pytest.mark.parametrize("code", [4400, 4403, 4440])
def test_refusals_are_final(page, code):
    result = page.evaluate(FAKE_SOCKETS, {"closeCodes": [code]})
    assert result == {"opened": ["ws://x/0"], "delays": [], "states": ["connecting", "refused"], "stopped": True}


def test_a_socket_the_user_closed_is_not_reopened(page):
    reopened = page.evaluate("""async () => {
      const { Link } = await import("./static/link.js");
      const states = [];
      const link = new Link("ws://127.0.0.1:9/", { onFrame: () => {}, onState: (state) => states.push(state) });
      link.close();
      await new Promise((resolve) => setTimeout(resolve, 600)); // past the first retry's longest delay
      return states;
    }""")
    assert reopened == ["connecting"]


def test_stream_positions_and_epochs(page):
    result = page.evaluate("""async () => {
      const { StreamPosition, epochOf } = await import("./static/stream.js");
      const position = new StreamPosition();
      const trail = [];
      position.passed({ seq: 1, id: "e-1" });               // before the opening frame: nothing to move
      trail.push(position.at);
      position.opened(0, "");                                // a group with no messages yet
      position.passed({ seq: 1, id: "ab-c_9-1" });          // its first message names the epoch
      trail.push(position.at);
      position.passed({ event: "recall", seq: 2, id: "ab-c_9-1", epoch: "ab-c_9" });
      position.passed({ seq: 2, id: "ab-c_9-2" });          // a repeat moves nothing
      trail.push(position.at);
      position.passed({ seq: 1, id: "new-1" });              // the stream restarted under a new epoch
      trail.push(position.at);
      position.passed({ userId: "1", info: "fast-im", ts: 5 }); // fast-im's messages carry no seq
      trail.push(position.at);
      return { trail, bad: [epochOf({ id: "x-2", seq: 3 }), epochOf({ id: "-3", seq: 3 }), epochOf({ id: 7, seq: 7 })] };
    }""")
    assert result["trail"] == [
        None,
        {"since": 1, "epoch": "ab-c_9"},
        {"since": 2, "epoch": "ab-c_9"},
        {"since": 1, "epoch": "new"},
        {"since": 1, "epoch": "new"},
    ]
    assert result["bad"] == [None, None, None]


def test_messages_are_shown_in_seq_order_whatever_order_they_arrive_in(page):
    order = page.evaluate("""async () => {
      const { placeInOrder, streamData } = await import("./static/stream.js");
      const box = document.createElement("ol");
      const put = (message) => {
        const li = document.createElement("li");
        Object.assign(li.dataset, streamData(message));
        li.textContent = message.info;
        placeInOrder(box, li);
      };
      for (const seq of [1, 4, 2, 5, 3]) put({ seq, id: `e-${seq}`, info: `e${seq}` });
      put({ info: "no seq" });                  // stays where it arrived
      put({ seq: 1, id: "f-1", info: "f1" });   // a new epoch follows the old one
      put({ seq: 6, id: "e-6", info: "e6" });   // only its own epoch's seqs move it: after f1, at the end
      return [...box.children].map((li) => li.textContent);
    }""")
    assert order == ["e1", "e2", "e3", "e4", "e5", "no seq", "f1", "e6"]
