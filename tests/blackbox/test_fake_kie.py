"""tests/fakes/fake_kie.py (the fake Kie-style async task upstream) tested over real HTTP.

Needs no imagegate binary: the fake runs as a subprocess on a free port, a callback receiver
runs in this process (http.server on 127.0.0.1:0). Every wait has a deadline; no test depends
on how fast the machine is (state progress is checked from the fake's recorded history, and
"nothing happens" checks are backed by the fake's own counters).
"""

import http.server
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_KIE = REPO_ROOT / "tests" / "fakes" / "fake_kie.py"
KEY = "test-kie-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
T = 5.0  # every HTTP call and every wait
FINAL = ("success", "fail")
ORDER = ["waiting", "queuing", "generating", "success", "fail"]
DATA_KEYS = {"taskId", "model", "state", "param", "resultJson", "failCode", "failMsg", "costTime",
             "completeTime", "createTime"}


# ---- harness ---------------------------------------------------------------------------------

class FakeKie:
    def __init__(self, log_path: Path, timeout: float = 10.0):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(FAKE_KIE), "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=self.log, stdin=subprocess.DEVNULL)
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        line = box[0].decode() if box else ""
        m = re.fullmatch(r"fake-kie listening on 127\.0\.0\.1:(\d+)\n", line)
        if not m:
            self.close()
            raise AssertionError(f"fake-kie did not start: {line!r}\nstderr: {Path(log_path).read_text()}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self, **kw) -> dict:
        r = requests.post(f"{self.url}/_control", json=kw, timeout=T)
        assert r.status_code == 200, r.text
        return r.json()

    def reset(self):
        assert requests.post(f"{self.url}/_reset", timeout=T).status_code == 200

    def stats(self) -> dict:
        r = requests.get(f"{self.url}/_stats", timeout=T)
        assert r.status_code == 200
        return r.json()

    def create(self, payload=None, headers=AUTH, data=None, timeout=T) -> requests.Response:
        kw = {"data": data} if data is not None else {"json": payload}
        return requests.post(f"{self.url}/api/v1/jobs/createTask", headers=headers, timeout=timeout, **kw)

    def create_id(self, model="m", callback=None, **inp) -> str:
        payload = {"model": model, "input": dict({"prompt": "a cat"}, **inp)}
        if callback:
            payload["callBackUrl"] = callback
        r = self.create(payload)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["code"] == 200 and body["msg"] == "success", body
        return body["data"]["taskId"]

    def record(self, task_id, headers=AUTH) -> requests.Response:
        return requests.get(f"{self.url}/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers,
                            timeout=T)

    def poll(self, task_id, until=FINAL, timeout=T):
        """Polls recordInfo until the state is in `until`; returns (final reply, states seen)."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            r = self.record(task_id)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["code"] == 200, body
            state = body["data"]["state"]
            if not seen or seen[-1] != state:
                seen.append(state)
            if state in until:
                return body, seen
            assert time.monotonic() < deadline, f"task {task_id} still {state} after {timeout}s"
            time.sleep(0.005)

    def wait_stats(self, pred, what, timeout=T) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if pred(s):
                return s
            assert time.monotonic() < deadline, f"timed out waiting for {what}; stats={s}"
            time.sleep(0.01)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


class CallbackReceiver:
    """http.server on 127.0.0.1:0 that records every POST; answers `status`."""

    def __init__(self):
        self.calls = []
        self.status = 200
        self.cond = threading.Condition()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with recv.cond:
                    recv.calls.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body})
                    recv.cond.notify_all()
                out = b"ok"
                self.send_response(recv.status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, fmt, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait(self, n, timeout=T) -> list:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, timeout), \
                f"expected {n} callbacks, got {len(self.calls)}"
            return list(self.calls)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def png_pixels(data: bytes):
    """(width, height, set of RGB pixels) of an 8-bit RGB non-interlaced PNG, checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    pos, chunks = 8, []
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + payload) & 0xFFFFFFFF, f"bad CRC in {tag!r}"
        chunks.append((tag, payload))
        pos += 12 + n
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, ctype, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(p for t, p in chunks if t == b"IDAT"))
    stride = 1 + 3 * w
    assert len(raw) == stride * h
    pixels = set()
    for y in range(h):
        row = raw[y * stride:(y + 1) * stride]
        assert row[0] == 0, "only filter type 0 expected"
        pixels.update(row[i:i + 3] for i in range(1, stride, 3))
    return w, h, pixels


def assert_ordered(states):
    idx = [ORDER.index(s) for s in states]
    assert idx == sorted(idx) and len(set(idx)) == len(idx), f"states out of order: {states}"


def read_response(sock_file):
    """(status, headers, body) of one HTTP/1.1 response read from a socket's makefile('rb')."""
    status_line = sock_file.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while True:
        line = sock_file.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = sock_file.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def raw_create(body: bytes, extra: str = "") -> bytes:
    return (f"POST /api/v1/jobs/createTask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.fixture(scope="module")
def fake_kie_proc(tmp_path_factory):
    log = tmp_path_factory.mktemp("fake_kie") / "stderr.log"
    fake = FakeKie(log)
    try:
        yield fake
    finally:
        fake.close()
    # the fake writes nothing after its listening line; anything here is an unhandled exception
    assert log.read_text(errors="replace") == "", f"fake-kie wrote to stderr:\n{log.read_text(errors='replace')}"


@pytest.fixture
def kie(fake_kie_proc):
    """The module's fake, reset before and after each test, and checked to be still alive."""
    fake_kie_proc.reset()
    yield fake_kie_proc
    assert fake_kie_proc.proc.poll() is None, "fake-kie died"
    fake_kie_proc.reset()


@pytest.fixture
def receiver():
    r = CallbackReceiver()
    try:
        yield r
    finally:
        r.close()


# ---- protocol --------------------------------------------------------------------------------

def test_defaults_and_stats_shape(kie):
    s = kie.stats()
    assert s["settings"] == {"mode": "ok", "delay_ms": 200, "delay_max_ms": 0, "fail_first_n_creates": 0, "api_key": KEY}
    for k in ("creates", "record_polls", "callbacks_sent", "callbacks_failed", "file_downloads"):
        assert s[k] == 0, k
    assert s["tasks"] == {}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_auth_required(kie, headers):
    r = kie.create({"model": "m", "input": {}}, headers=headers)
    assert r.status_code == 401 and r.json() == {"code": 401, "msg": "unauthorized"}
    task_id = kie.create_id()
    r = kie.record(task_id, headers=headers)
    assert r.status_code == 401 and r.json() == {"code": 401, "msg": "unauthorized"}
    s = kie.stats()
    assert s["creates"] == 1 and s["record_polls"] == 0 and s["unauthorized"] == 2
    assert list(s["tasks"]) == [task_id]


def test_create_poll_success_shape(kie):
    kie.control(delay_ms=30)
    payload = {"model": "google/nano-banana", "input": {"prompt": "a red fox", "aspect_ratio": "16:9"}}
    r = kie.create(payload)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"code", "msg", "data"} and body["code"] == 200 and body["msg"] == "success"
    assert set(body["data"]) == {"taskId"}
    task_id = body["data"]["taskId"]
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)

    final, seen = kie.poll(task_id)
    assert_ordered(seen)
    assert set(final) == {"code", "msg", "data"} and (final["code"], final["msg"]) == (200, "success")
    d = final["data"]
    assert set(d) == DATA_KEYS
    assert d["taskId"] == task_id and d["model"] == payload["model"] and d["state"] == "success"
    assert isinstance(d["param"], str) and json.loads(d["param"]) == payload
    assert isinstance(d["resultJson"], str)
    urls = json.loads(d["resultJson"])["resultUrls"]
    assert urls == [f"{kie.url}/files/{task_id}/0.png"]
    assert d["failCode"] == "" and d["failMsg"] == ""
    assert isinstance(d["createTime"], int) and abs(d["createTime"] - time.time() * 1000) < 60_000
    assert isinstance(d["completeTime"], int) and d["completeTime"] >= d["createTime"] + 25  # 30 ms, give or take ms rounding
    assert d["costTime"] == d["completeTime"] - d["createTime"]
    # final replies never change
    assert kie.record(task_id).json() == final

    t = kie.stats()["tasks"][task_id]
    assert (t["state"], t["model"], t["input"], t["callBackUrl"]) == ("success", payload["model"], payload["input"], None)


def test_states_progress_in_order(kie):
    kie.control(delay_ms=90)
    task_id = kie.create_id()
    first = kie.record(task_id).json()["data"]
    assert first["state"] in ORDER[:4]
    assert first["completeTime"] is None and first["costTime"] == 0 and first["resultJson"] == ""
    _, seen = kie.poll(task_id)
    assert_ordered(seen)
    assert seen[-1] == "success"
    history = kie.stats()["tasks"][task_id]["history"]
    assert [h[0] for h in history] == ["waiting", "queuing", "generating", "success"]
    ms = [h[1] for h in history]
    assert ms == sorted(ms) and ms[-1] >= 85  # 90 ms, give or take ms rounding
    assert ms[1] >= 25 and ms[2] - ms[1] >= 25  # one third of delay_ms each


def test_long_delay_starts_waiting(kie):
    kie.control(delay_ms=60_000)
    task_id = kie.create_id()
    d = kie.record(task_id).json()["data"]
    assert d["state"] == "waiting" and d["completeTime"] is None and d["resultJson"] == ""
    # /_reset cancels the pending task: it is gone
    kie.reset()
    assert kie.record(task_id).json() == {"code": 404, "msg": "task not found"}


def test_default_delay_is_200ms(kie):
    task_id = kie.create_id()
    final, _ = kie.poll(task_id)
    assert final["data"]["costTime"] >= 195  # 200 ms, give or take ms rounding
    assert kie.stats()["tasks"][task_id]["delay_ms"] == 200


def test_unknown_and_missing_task_id(kie):
    r = kie.record("doesnotexist")
    assert r.status_code == 200 and r.json() == {"code": 404, "msg": "task not found"}
    r = requests.get(f"{kie.url}/api/v1/jobs/recordInfo", headers=AUTH, timeout=T)
    assert r.status_code == 200 and r.json()["code"] == 400
    assert kie.stats()["record_polls"] == 2


@pytest.mark.parametrize("data,needle", [
    (b"{not json", "invalid JSON"),
    (b"", "invalid JSON"),
    (b"\xff\xfe", "invalid JSON"),
    (b"[1,2]", "object"),
    (b'{"input": {}}', "model"),
    (b'{"model": "", "input": {}}', "model"),
    (b'{"model": 5, "input": {}}', "model"),
    (b'{"model": "m"}', "input"),
    (b'{"model": "m", "input": "x"}', "input"),
    (b'{"model": "m", "input": {}, "callBackUrl": 7}', "callBackUrl"),
    (b'{"model": "m", "input": {"n": 0}}', "input.n"),
    (b'{"model": "m", "input": {"n": "2"}}', "input.n"),
])
def test_create_validation_is_in_body(kie, data, needle):
    r = kie.create(data=data)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"code", "msg"} and body["code"] == 400 and needle in body["msg"], body
    s = kie.stats()
    assert s["creates"] == 1 and s["tasks"] == {}


def test_unknown_route_and_method(kie):
    assert requests.get(f"{kie.url}/api/v1/nope", headers=AUTH, timeout=T).status_code == 404
    assert requests.get(f"{kie.url}/api/v1/jobs/createTask", headers=AUTH, timeout=T).status_code == 405
    assert requests.post(f"{kie.url}/api/v1/jobs/recordInfo", headers=AUTH, timeout=T).status_code == 405


# ---- result files ----------------------------------------------------------------------------

def test_result_files_are_pngs_per_image(kie):
    kie.control(delay_ms=15)
    a = kie.create_id(n=3)
    b = kie.create_id()
    urls_a = json.loads(kie.poll(a)[0]["data"]["resultJson"])["resultUrls"]
    urls_b = json.loads(kie.poll(b)[0]["data"]["resultJson"])["resultUrls"]
    assert urls_a == [f"{kie.url}/files/{a}/{i}.png" for i in range(3)]
    assert len(urls_b) == 1
    colours = []
    for url in urls_a + urls_b:
        r = requests.get(url, timeout=T)  # no auth needed, like a CDN
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
        assert int(r.headers["Content-Length"]) == len(r.content)
        w, h, pixels = png_pixels(r.content)
        assert (w, h) == (64, 64) and len(pixels) == 1
        colours.append(pixels.pop())
    assert len(set(colours)) == 4, "every task/index gets its own colour"
    assert requests.get(urls_b[0], timeout=T).content == requests.get(urls_b[0], timeout=T).content

    for url in (f"{kie.url}/files/{a}/3.png", f"{kie.url}/files/unknown/0.png", f"{kie.url}/files/{a}/x.png"):
        assert requests.get(url, timeout=T).status_code == 404, url
    s = kie.stats()
    assert s["file_downloads"] == 6 and s["file_404s"] == 3


def test_files_404_before_success(kie):
    kie.control(delay_ms=60_000)
    task_id = kie.create_id()
    assert requests.get(f"{kie.url}/files/{task_id}/0.png", timeout=T).status_code == 404


def test_mode_result_404(kie):
    kie.control(delay_ms=15, mode="result_404")
    task_id = kie.create_id(n=2)
    d = kie.poll(task_id)[0]["data"]
    assert d["state"] == "success"
    urls = json.loads(d["resultJson"])["resultUrls"]
    assert len(urls) == 2
    for url in urls:
        assert requests.get(url, timeout=T).status_code == 404
    s = kie.stats()
    assert s["file_downloads"] == 0 and s["file_404s"] == 2


# ---- modes -----------------------------------------------------------------------------------

def test_mode_fail(kie):
    kie.control(delay_ms=15, mode="fail")
    task_id = kie.create_id()
    final, seen = kie.poll(task_id)
    assert_ordered(seen)
    d = final["data"]
    assert (final["code"], d["state"], d["failCode"], d["failMsg"], d["resultJson"]) == \
        (200, "fail", "500", "internal error", "")
    assert isinstance(d["completeTime"], int) and d["costTime"] == d["completeTime"] - d["createTime"]
    assert requests.get(f"{kie.url}/files/{task_id}/0.png", timeout=T).status_code == 404


def test_mode_never_finish(kie, receiver):
    kie.control(delay_ms=30, mode="never_finish")
    task_id = kie.create_id(callback=receiver.url + "/cb")
    kie.poll(task_id, until=("generating",))
    # the runner is done once generating is reached; nothing else is scheduled for this task
    time.sleep(0.15)  # > delay_ms: an "ok" task would have finished by now
    d = kie.record(task_id).json()["data"]
    assert d["state"] == "generating" and d["completeTime"] is None and d["resultJson"] == ""
    s = kie.stats()
    assert [h[0] for h in s["tasks"][task_id]["history"]] == ["waiting", "queuing", "generating"]
    assert s["callbacks_sent"] == s["callbacks_failed"] == s["callbacks_suppressed"] == 0
    assert receiver.calls == []


def test_mode_create_500_and_429(kie):
    kie.control(mode="create_500")
    r = kie.create({"model": "m", "input": {}})
    assert r.status_code == 500 and r.json() == {"code": 500, "msg": "internal server error"}
    kie.control(mode="create_429")
    r = kie.create({"model": "m", "input": {}})
    assert r.status_code == 429 and r.json() == {"code": 429, "msg": "rate limited"}
    assert r.headers["Retry-After"] == "1"
    # invalid bodies get the same answer: the fault comes first
    assert kie.create(data=b"{bad").status_code == 429
    s = kie.stats()
    assert s["creates"] == 3 and s["tasks"] == {}
    # polling is unaffected
    assert kie.record("x").json() == {"code": 404, "msg": "task not found"}


def test_mode_create_hang(kie):
    kie.control(mode="create_hang")
    with pytest.raises(requests.exceptions.ReadTimeout):
        kie.create({"model": "m", "input": {}}, timeout=0.3)
    # a raw connection stays unanswered until /_reset, which drops it
    with socket.create_connection(("127.0.0.1", kie.port), timeout=T) as s:
        s.sendall(raw_create(b'{"model":"m","input":{}}'))
        kie.wait_stats(lambda st: st["creates"] == 2, "the second create to arrive")
        s.settimeout(0.1)
        with pytest.raises(socket.timeout):
            s.recv(1)
        assert kie.stats()["tasks"] == {}
        kie.reset()
        s.settimeout(T)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
    assert kie.create_id()  # back to normal after the reset


def test_mode_garbage(kie):
    kie.control(delay_ms=0)
    task_id = kie.create_id()
    kie.control(mode="garbage")
    assert kie.create_id()  # createTask is unaffected
    r = kie.record(task_id)
    assert r.status_code == 200 and r.content
    with pytest.raises(ValueError):
        json.loads(r.content)
    assert kie.stats()["record_polls"] == 1
    kie.control(mode="ok")
    assert kie.record(task_id).json()["data"]["taskId"] == task_id


def test_fail_first_n_creates(kie):
    kie.control(delay_ms=0)
    assert kie.control(fail_first_n_creates=2)["fail_first_n_creates"] == 2
    for _ in range(2):
        r = kie.create({"model": "m", "input": {}})
        assert r.status_code == 503 and r.json() == {"code": 503, "msg": "service unavailable"}
    assert kie.stats()["fail_first_n_creates_left"] == 0
    ids = [kie.create_id() for _ in range(2)]
    s = kie.stats()
    assert s["creates"] == 4 and sorted(s["tasks"]) == sorted(ids)
    # other knobs merged later do not re-arm it
    kie.control(delay_ms=1)
    assert kie.create_id()
    # and it fires before any create_* mode
    kie.control(fail_first_n_creates=1, mode="create_429")
    assert kie.create({"model": "m", "input": {}}).status_code == 503
    assert kie.create({"model": "m", "input": {}}).status_code == 429


# ---- callbacks -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,state", [("ok", "success"), ("fail", "fail")])
def test_callback_equals_final_record(kie, receiver, mode, state):
    kie.control(delay_ms=15, mode=mode)
    task_id = kie.create_id(callback=receiver.url + "/hooks/kie?job=42")
    final, _ = kie.poll(task_id)
    assert final["data"]["state"] == state
    (call,) = receiver.wait(1)
    assert call["path"] == "/hooks/kie?job=42"
    assert call["headers"]["content-type"] == "application/json"
    assert json.loads(call["body"]) == final
    s = kie.wait_stats(lambda st: st["callbacks_sent"] == 1, "the callback to be counted")
    assert s["callbacks_failed"] == 0
    assert s["tasks"][task_id]["callBackUrl"] == receiver.url + "/hooks/kie?job=42"
    assert s["tasks"][task_id]["callbacks"] == [200]
    assert s["callback_log"] == [{"taskId": task_id, "url": receiver.url + "/hooks/kie?job=42", "state": state,
                                  "status": 200, "error": None}]


def test_duplicate_callbacks(kie, receiver):
    kie.control(delay_ms=15, mode="duplicate_callbacks")
    task_id = kie.create_id(callback=receiver.url + "/cb")
    final, _ = kie.poll(task_id)
    calls = receiver.wait(2)
    assert len(calls) == 2 and calls[0]["body"] == calls[1]["body"]
    assert json.loads(calls[0]["body"]) == final
    s = kie.wait_stats(lambda st: st["callbacks_sent"] == 2, "two callbacks to be counted")
    assert s["callbacks_failed"] == 0 and s["tasks"][task_id]["callbacks"] == [200, 200]
    time.sleep(0.05)
    assert len(receiver.calls) == 2


def test_no_callback(kie, receiver):
    kie.control(delay_ms=15, mode="no_callback")
    task_id = kie.create_id(callback=receiver.url + "/cb")
    assert kie.poll(task_id)[0]["data"]["state"] == "success"
    # counted when the task finishes, in the same step as the state change
    s = kie.wait_stats(lambda st: st["callbacks_suppressed"] == 1, "the suppressed callback")
    assert s["callbacks_sent"] == s["callbacks_failed"] == 0
    time.sleep(0.05)
    assert receiver.calls == []


def test_no_callback_url_no_callback(kie, receiver):
    kie.control(delay_ms=0)
    task_id = kie.create_id()
    kie.poll(task_id)
    s = kie.stats()
    assert s["callbacks_sent"] == s["callbacks_failed"] == s["callbacks_suppressed"] == 0
    assert s["tasks"][task_id]["callBackUrl"] is None


def test_callback_failures_are_counted_not_fatal(kie, receiver):
    kie.control(delay_ms=0)
    receiver.status = 500
    a = kie.create_id(callback=receiver.url + "/cb")
    # a bound socket that never listens: connection refused, deterministically
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    try:
        b = kie.create_id(callback=f"http://127.0.0.1:{dead.getsockname()[1]}/cb")
        c = kie.create_id(callback="https://127.0.0.1:1/cb")
        for t in (a, b, c):
            assert kie.poll(t)[0]["data"]["state"] == "success"
        s = kie.wait_stats(lambda st: st["callbacks_failed"] == 3, "three failed callbacks")
    finally:
        dead.close()
    assert s["callbacks_sent"] == 0
    assert s["tasks"][a]["callbacks"] == [500]
    assert s["tasks"][b]["callbacks"] == [None] and s["tasks"][c]["callbacks"] == [None]
    errors = {e["taskId"]: e["error"] for e in s["callback_log"]}
    assert errors[a] == "HTTP 500" and errors[b] and errors[c]
    assert len(receiver.wait(1)) == 1


def test_reset_cancels_pending_callbacks(kie, receiver):
    kie.control(delay_ms=300)
    kie.create_id(callback=receiver.url + "/cb")
    kie.reset()
    s = kie.stats()
    assert s["tasks"] == {} and s["creates"] == 0 and s["settings"]["delay_ms"] == 200
    time.sleep(0.4)
    assert receiver.calls == [] and kie.stats()["callbacks_sent"] == 0


# ---- control ---------------------------------------------------------------------------------

def test_control_merges_and_validates(kie):
    assert kie.control(delay_ms=5) == {"mode": "ok", "delay_ms": 5, "delay_max_ms": 0, "fail_first_n_creates": 0, "api_key": KEY}
    assert kie.control(mode="fail") == {"mode": "fail", "delay_ms": 5, "delay_max_ms": 0, "fail_first_n_creates": 0, "api_key": KEY}
    for bad in ({"mode": "nope"}, {"delay_ms": -1}, {"delay_ms": "5"}, {"fail_first_n_creates": True},
                {"api_key": ""}, {"whatever": 1}):
        r = requests.post(f"{kie.url}/_control", json=bad, timeout=T)
        assert r.status_code == 400 and "error" in r.json(), bad
    assert requests.post(f"{kie.url}/_control", data=b"[1]", timeout=T).status_code == 400
    assert kie.stats()["settings"] == {"mode": "fail", "delay_ms": 5, "delay_max_ms": 0, "fail_first_n_creates": 0, "api_key": KEY}
    kie.reset()
    assert kie.stats()["settings"]["mode"] == "ok"


def test_control_api_key(kie):
    kie.control(api_key="other")
    assert kie.create({"model": "m", "input": {}}).status_code == 401
    assert kie.create({"model": "m", "input": {}}, headers={"Authorization": "Bearer other"}).json()["code"] == 200
    kie.reset()
    assert kie.create({"model": "m", "input": {}}).json()["code"] == 200


# ---- HTTP ------------------------------------------------------------------------------------

def test_keep_alive_expect_and_close(kie):
    with socket.create_connection(("127.0.0.1", kie.port), timeout=T) as s:
        f = s.makefile("rb")
        s.sendall(raw_create(b'{"model":"m","input":{}}'))
        status, _, body = read_response(f)
        task_id = json.loads(body)["data"]["taskId"]
        # pipelined: two requests in one write on the same connection
        s.sendall((f"GET /api/v1/jobs/recordInfo?taskId={task_id} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {KEY}\r\n\r\n").encode() * 2)
        for _ in range(2):
            status, _, body = read_response(f)
            assert status == 200 and json.loads(body)["data"]["taskId"] == task_id
        # Expect: 100-continue gets an interim 100 before the final answer
        s.sendall(raw_create(b'{"model":"m","input":{}}', "Expect: 100-continue\r\n"))
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["code"] == 200
        # Connection: close is honoured
        s.sendall(b"GET /_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = read_response(f)
        assert status == 200 and headers["connection"] == "close"
        assert f.read() == b""
        f.close()
    s = kie.stats()
    assert s["creates"] == 2 and s["record_polls"] == 2


def test_session_reuses_one_connection(kie):
    before = kie.stats()["connections"]
    with requests.Session() as sess:
        for _ in range(5):
            r = sess.post(f"{kie.url}/api/v1/jobs/createTask", json={"model": "m", "input": {}}, headers=AUTH,
                          timeout=T)
            assert r.json()["code"] == 200
    # one connection for the session, one for each of the two /_stats calls
    assert kie.stats()["connections"] - before == 2


def test_hundreds_of_concurrent_connections(kie):
    kie.control(delay_ms=0)
    n = 300
    socks, files = [], []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", kie.port), timeout=T))
        for s in socks:
            s.sendall(raw_create(b'{"model":"m","input":{}}'))
        files = [s.makefile("rb") for s in socks]
        ids = set()
        for f in files:
            status, _, body = read_response(f)
            assert status == 200
            ids.add(json.loads(body)["data"]["taskId"])
        assert len(ids) == n
        st = kie.stats()
        assert st["creates"] == n and len(st["tasks"]) == n
        # all are still open and usable (keep-alive)
        for s, f in list(zip(socks, files))[:20]:
            s.sendall(b"GET /files/none/0.png HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(f)[0] == 404
    finally:
        for f in files:
            f.close()
        for s in socks:
            s.close()
