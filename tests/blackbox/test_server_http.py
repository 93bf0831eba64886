"""HTTP surface of `imagegate serve`: routes, errors, limits, timeouts, keep-alive, shutdown."""

import json
import re
import resource
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import (HTTP_TIMEOUT, parse_raw_response, raw_request, recv_until_close,
                      recv_until_eof, shared_server)


@pytest.fixture(scope="module")
def _shared_srv(module_factory):
    """One shared default server for the read-only tests of this module."""
    return module_factory.server()


@pytest.fixture
def srv(_shared_srv):
    yield from shared_server(_shared_srv)


@pytest.fixture(scope="module")
def key(_shared_srv):
    return _shared_srv.bootstrap_key


def assert_error_body(resp_text, code, type_):
    body = json.loads(resp_text)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["code"] == code, err
    assert err["type"] == type_, err
    assert err["param"] is None, err
    assert isinstance(err["message"], str) and err["message"], err
    return err


# ---- basic routes -------------------------------------------------------------------------

def test_healthz(srv):
    r = srv.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["Content-Type"].startswith("application/json")


def test_readyz(srv):
    r = srv.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "store": "ok"}


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_me(srv, key, prefix):
    r = srv.get(prefix + "/v1/me", key=key)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "user_1", "email": "admin@localhost", "credits": 100}
    assert r.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_credits(srv, key, prefix):
    r = srv.get(prefix + "/v1/credits", key=key)
    assert r.status_code == 200, r.text
    assert r.json() == {"credits": 100, "reserved": 0}


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_models(srv, key, prefix):
    r = srv.get(prefix + "/v1/models", key=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    # The model and its aliases (gpt-image-2-all, -text-to-image, -image-to-image).
    ids = [m["id"] for m in body["data"]]
    assert ids == ["gpt-image-2", "gpt-image-2-all", "gpt-image-2-text-to-image",
                   "gpt-image-2-image-to-image"]
    m = body["data"][0]
    assert set(m) == {"id", "object", "created", "owned_by"}
    assert m["id"] == "gpt-image-2"
    assert m["object"] == "model"
    assert m["owned_by"] == "imagegate"
    assert isinstance(m["created"], int) and m["created"] > 0
    # models.retrieve: one entry, aliases too; an unknown id is 404 model_not_found.
    one = srv.get(prefix + "/v1/models/gpt-image-2-all", key=key)
    assert one.status_code == 200, one.text
    assert one.json() == body["data"][1]
    missing = srv.get(prefix + "/v1/models/dall-e-9", key=key)
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "model_not_found"
    assert srv.get(prefix + "/v1/models/gpt-image-2").status_code == 401


@pytest.mark.parametrize("path", ["/v1/nope", "/api/v1/nope", "/", "/v1", "/v1/me/extra", "/api/v2/me"])
def test_unknown_route_404(srv, key, path):
    r = srv.get(path, key=key)
    assert r.status_code == 404, r.text
    assert_error_body(r.text, "not_found", "invalid_request_error")
    assert "X-Request-Id" in r.headers


@pytest.mark.parametrize("method,path", [("POST", "/v1/me"), ("DELETE", "/v1/me"),
                                         ("POST", "/api/v1/me"), ("PUT", "/v1/credits"),
                                         ("POST", "/healthz")])
def test_wrong_method_405(srv, key, method, path):
    r = srv.request(method, path, key=key, data=b"{}")
    assert r.status_code == 405, r.text
    assert_error_body(r.text, "method_not_allowed", "invalid_request_error")
    assert "GET" in [m.strip() for m in r.headers.get("Allow", "").split(",")], r.headers


# ---- request ids --------------------------------------------------------------------------

def test_every_response_has_request_id(srv, key):
    seen = set()
    for path, k in [("/healthz", None), ("/v1/me", key), ("/v1/me", None), ("/nope", None)]:
        r = srv.get(path, key=k)
        rid = r.headers.get("X-Request-Id")
        assert rid, (path, r.headers)
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid), rid
        seen.add(rid)
    assert len(seen) == 4, f"generated request ids must be unique: {seen}"


@pytest.mark.parametrize("rid", ["abc", "client-1.2_3:4", "A" * 128])
def test_sane_request_id_echoed(srv, key, rid):
    r = srv.get("/v1/me", key=key, headers={"X-Request-Id": rid})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == rid


@pytest.mark.parametrize("rid", ["A" * 129, "has space", "semi;colon", "<script>", "a/b"])
def test_insane_request_id_replaced(srv, rid):
    r = srv.get("/healthz", headers={"X-Request-Id": rid})
    assert r.status_code == 200
    got = r.headers["X-Request-Id"]
    assert got != rid
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", got), got


def test_request_id_echoed_on_errors(srv):
    r = srv.get("/v1/me", headers={"X-Request-Id": "err-rid-1"})
    assert r.status_code == 401
    assert r.headers["X-Request-Id"] == "err-rid-1"
    r = srv.get("/nope", headers={"X-Request-Id": "err-rid-2"})
    assert r.status_code == 404
    assert r.headers["X-Request-Id"] == "err-rid-2"


# ---- access log ---------------------------------------------------------------------------

def test_access_log_line(srv, key):
    rid = "accesslog-check-1"
    r = srv.get("/v1/me", key=key, headers={"X-Request-Id": rid})
    assert r.status_code == 200
    m = srv.wait_for_stderr(r"method=GET path=/v1/me status=200 latency_ms=(\S+) key=(\S+) "
                            r"bytes=(\d+) ip=(\S+) rid=" + re.escape(rid) + r"\b", timeout=5)
    assert m, f"no access log line for rid {rid}:\n{srv.stderr_text()[-3000:]}"
    assert float(m.group(1)) >= 0
    assert m.group(2) == key[:11], "access log shows the key prefix sk-XXXXXXXX only"
    assert key not in srv.stderr_text(), "the full key must never be logged"
    assert int(m.group(3)) == len(r.content)
    assert m.group(4) == "127.0.0.1"


def test_access_log_unauthenticated_request(srv):
    rid = "accesslog-check-2"
    srv.get("/v1/me", headers={"X-Request-Id": rid, "Authorization": "Bearer sk-" + "x" * 43})
    m = srv.wait_for_stderr(r"method=GET path=/v1/me status=401 .* key=- .*rid=" + re.escape(rid), timeout=5)
    assert m, srv.stderr_text()[-3000:]


# ---- raw protocol robustness ----------------------------------------------------------------

def test_non_utf8_header_value(srv):
    data = (b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-\xff\xfe\xc3\x28abc\r\n"
            b"X-Request-Id: \xff\xff\r\nUser-Agent: \xc0\xaf\r\nConnection: close\r\n\r\n")
    status, headers, body = parse_raw_response(raw_request(srv.port, data))
    assert status == 401
    assert_error_body(body.decode(), "invalid_api_key", "authentication_error")
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", headers["x-request-id"])
    assert srv.get("/healthz").status_code == 200


def test_non_utf8_body(srv, key):
    payload = b"\xff\xfe\x00\x80{\"a\":\"\xc3\x28\"}"
    data = (b"POST /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
            b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(payload)).encode() +
            b"\r\nConnection: close\r\n\r\n" + payload)
    status, headers, body = parse_raw_response(raw_request(srv.port, data))
    assert status == 405
    assert_error_body(body.decode(), "method_not_allowed", "invalid_request_error")
    assert srv.get("/healthz").status_code == 200


def test_non_utf8_path(srv):
    data = b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    resp = raw_request(srv.port, data)
    assert resp, "server must answer, not drop the connection"
    status, headers, body = parse_raw_response(resp)
    assert status in (400, 404), status
    json.loads(body.decode("utf-8"))  # the error body itself must be valid UTF-8 JSON
    assert srv.get("/healthz").status_code == 200


def test_garbage_request_line_gets_400(srv):
    resp = raw_request(srv.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    if resp:  # closing without a reply is also acceptable for non-HTTP garbage
        status, _, body = parse_raw_response(resp)
        assert status == 400
        assert_error_body(body.decode(), "invalid_request", "invalid_request_error")
    assert srv.get("/healthz").status_code == 200


def test_header_block_too_large_431(srv):
    data = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp, closed = recv_until_eof(s, timeout=5)
    status, headers, body = parse_raw_response(resp)
    assert status == 431
    assert closed, "the connection must be closed after a 431"
    assert headers.get("content-type", "").startswith("application/json")
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert srv.get("/healthz").status_code == 200


def test_header_block_just_under_limit_ok(srv):
    r = srv.get("/healthz", headers={"X-Pad": "a" * 15000})
    assert r.status_code == 200


# ---- keep-alive and concurrency -------------------------------------------------------------

def test_keep_alive_session(srv, key):
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {key}"
        for path in ["/v1/me", "/v1/credits", "/v1/models", "/healthz", "/v1/me", "/nope", "/v1/me"]:
            r = s.get(srv.url + path, timeout=HTTP_TIMEOUT)
            assert r.status_code == (404 if path == "/nope" else 200), (path, r.text)


def test_keep_alive_raw_two_requests_one_connection(srv, key):
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(req)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        s.sendall(req + req)  # pipelined
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b'{"status":"ok"}') < 2 and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.count(b"HTTP/1.1 200") == 2, data


def test_200_concurrent_me(srv, key):
    def one(_):
        r = requests.get(srv.url + "/v1/me", headers={"Authorization": f"Bearer {key}"},
                         timeout=30)
        return r.status_code, r.json() if r.status_code == 200 else r.text

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(200)))
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]
    assert all(r[1]["id"] == "user_1" for r in results)


def test_1000_idle_connections_do_not_block(srv):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    socks = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
        time.sleep(0.3)
        for _ in range(3):
            t0 = time.monotonic()
            r = srv.get("/healthz", timeout=5)
            elapsed = time.monotonic() - t0
            assert r.status_code == 200
            assert elapsed < 1.0, f"/healthz took {elapsed:.2f}s with 1000 idle connections"
    finally:
        for s in socks:
            s.close()
    assert srv.get("/healthz").status_code == 200


# ---- limits and timeouts (own servers) ------------------------------------------------------

@pytest.fixture(scope="module")
def _shared_small(module_factory):
    return module_factory.server("[server]\nmax_body_bytes = 4096\nheader_timeout_ms = 1000\n")


@pytest.fixture
def small(_shared_small):
    yield from shared_server(_shared_small)


def test_body_too_large_413_requests(small):
    r = small.request("POST", "/v1/me", data=b"x" * 5000)
    assert r.status_code == 413, r.text
    assert_error_body(r.text, "payload_too_large", "invalid_request_error")


def test_body_under_limit_not_413(small):
    r = small.request("POST", "/v1/me", data=b"x" * 4000)
    assert r.status_code == 405, r.text


def test_body_too_large_413_declared_up_front(small):
    """Content-Length over the limit is refused before the body is sent."""
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as s:
        s.sendall(b"POST /v1/me HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 10000000\r\n\r\n")
        resp, closed = recv_until_eof(s, timeout=3)
    status, headers, body = parse_raw_response(resp)
    assert status == 413
    assert closed, "the connection must be closed after an early 413"
    assert_error_body(body.decode(), "payload_too_large", "invalid_request_error")
    assert headers.get("x-request-id")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_refused_upload_still_reads_its_413(small, declared):
    """Most clients (fetch, the OpenAI SDKs) send the whole body without waiting for an
    interim answer. The 413 must reach them: closing with their bytes unread would make the
    kernel send a reset that destroys the reply (the SDKs then report a connection error and
    upload the body twice more)."""
    payload = b"x" * (3 * 1024 * 1024)
    if declared:
        head = b"POST /v1/me HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload)
        data = head + payload
    else:
        head = b"POST /v1/me HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = head + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as s:
        s.sendall(data)  # a reset here (BrokenPipe/ConnectionReset) is the bug
        s.shutdown(socket.SHUT_WR)
        resp = recv_until_close(s, timeout=5)
    status, _, body = parse_raw_response(resp)
    assert status == 413
    assert_error_body(body.decode(), "payload_too_large", "invalid_request_error")


@pytest.mark.parametrize("te,status", [
    ("gzip, chunked", 501),             # a coding we do not decode
    ("deflate;q=1, Chunked", 501),
    ("gzip", 400),                      # final coding not chunked: the length cannot be known
    ("chunked, gzip", 400),
    ("chunked, chunked", 400),          # chunked applied twice
    ("chunked\r\nContent-Length: 5", 400),  # framed two ways: the request-smuggling shape
])
def test_transfer_codings_other_than_chunked_are_refused(small, te, status):
    """RFC 9112 §6.1/§6.3: imagegate decodes only `chunked`, once, last. Anything else used to be
    accepted with the coded bytes taken as the body (or, for a final coding other than chunked,
    a body of unknowable length); now it is refused and the connection closed."""
    body = b"5\r\nhello\r\n0\r\n\r\n"
    head = ("POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
            f"Transfer-Encoding: {te}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as s:
        s.sendall(head + body)
        resp = recv_until_close(s, timeout=5)
    got, headers, rbody = parse_raw_response(resp)
    assert got == status, resp[:300]
    assert headers.get("connection", "").lower() == "close", headers
    assert_error_body(rbody.decode(), "invalid_request", "invalid_request_error")


def test_plain_chunked_body_still_works(small):
    """The one framing that stays: chunked alone (in any case) is read whole, and the same
    connection serves the next request."""
    body = b"5\r\nhello\r\n0\r\n\r\n"
    first = b"POST /v1/me HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n" + body
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as s:
        s.sendall(first + second)
        resp = recv_until_close(s, timeout=5)
    got, _, rbody = parse_raw_response(resp)
    assert got == 405, resp[:300]  # /v1/me is GET only: the body was read, then routed
    assert_error_body(rbody.decode(), "method_not_allowed", "invalid_request_error")
    assert resp.count(b"HTTP/1.1 200") == 1, resp[-300:]


def test_body_too_large_413_chunked(small):
    chunk = b"x" * 1000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    data = (b"POST /v1/me HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = recv_until_close(s, timeout=3)
    status, _, rbody = parse_raw_response(resp)
    assert status == 413
    assert_error_body(rbody.decode(), "payload_too_large", "invalid_request_error")


def test_slow_header_client_disconnected(small):
    """Request line, then one byte per second: closed after header_timeout_ms (1000 ms)."""
    s = socket.create_connection(("127.0.0.1", small.port), timeout=5)
    closed_after = None
    other_ok = []
    try:
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        s.settimeout(0.2)
        while time.monotonic() - t0 < 5.0:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            # Meanwhile the server keeps serving others.
            r = small.get("/healthz", timeout=2)
            other_ok.append(r.status_code == 200)
            end = time.monotonic() + 1.0
            eof = False
            while time.monotonic() < end:
                try:
                    b = s.recv(4096)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    eof = True
                    break
                if not b:
                    eof = True
                    break
            if eof:
                closed_after = time.monotonic() - t0
                break
    finally:
        s.close()
    assert closed_after is not None, "slow client still connected after 5 s"
    assert closed_after < 3.0, f"closed only after {closed_after:.2f}s"
    assert closed_after > 0.5, f"closed suspiciously early ({closed_after:.2f}s)"
    assert other_ok and all(other_ok)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_slow_body_gets_408(factory, framing):
    """A body that does not arrive within body_timeout_ms is answered 408 (as nginx's
    client_body_timeout), not with a bare close; the server keeps serving others."""
    srv = factory.server("[server]\nbody_timeout_ms = 600\n")
    if framing == "content-length":
        head = b"POST /v1/me HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
    else:
        head = b"POST /v1/me HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(head)
        resp = recv_until_close(s, timeout=5)
        elapsed = time.monotonic() - t0
    status, headers, body = parse_raw_response(resp)
    assert status == 408, resp[:300]
    assert headers.get("connection", "").lower() == "close", headers
    assert_error_body(body.decode(), "invalid_request", "invalid_request_error")
    assert 0.5 < elapsed < 4.0, f"answered after {elapsed:.2f}s"
    assert srv.get("/healthz").status_code == 200


def test_a_whole_body_is_not_cut_by_the_body_deadline(factory):
    """The deadline covers the whole body, not each read: a body sent in parts well within it
    is read whole, and the same connection serves the next request."""
    srv = factory.server("[server]\nbody_timeout_ms = 1500\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /v1/me HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        time.sleep(0.3)
        s.sendall(b"56789GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = recv_until_close(s, timeout=5)
    status, _, _ = parse_raw_response(resp)
    assert status == 405, resp[:300]  # read whole, then routed: /v1/me is GET only
    assert resp.count(b"HTTP/1.1 200") == 1, resp[-300:]


def _wait_closed(sock, timeout):
    """Seconds until the peer closes sock, or None."""
    t0 = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - t0 < timeout:
        try:
            b = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0
        if not b:
            return time.monotonic() - t0
    return None


def test_idle_keepalive_connection_closed_after_idle_timeout(factory):
    srv = factory.server("[server]\nidle_timeout_ms = 2000\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = s.recv(65536)
        assert resp.startswith(b"HTTP/1.1 200"), resp
        t = _wait_closed(s, 6.0)
    assert t is not None, "keep-alive connection not closed within 6 s (idle_timeout_ms = 2000)"
    assert 1.0 < t < 4.0, f"closed after {t:.2f}s, expected ~2 s"


def test_idle_unused_connections_closed_after_idle_timeout(factory):
    """Sockets opened and never used are closed once idle_timeout_ms passes."""
    srv = factory.server("[server]\nidle_timeout_ms = 2000\n")
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(50)]
    try:
        t0 = time.monotonic()
        still_open = list(socks)
        deadline = t0 + 4.5
        while still_open and time.monotonic() < deadline:
            nxt = []
            for s in still_open:
                s.settimeout(0.01)
                try:
                    b = s.recv(1)
                    if b:
                        nxt.append(s)  # unexpected data, keep watching for EOF
                except socket.timeout:
                    nxt.append(s)
                except ConnectionResetError:
                    pass
            still_open = nxt
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        assert not still_open, (f"{len(still_open)} of 50 idle sockets still open after "
                                f"{elapsed:.1f}s with idle_timeout_ms = 2000")
        assert srv.get("/healthz").status_code == 200
    finally:
        for s in socks:
            s.close()


# ---- shutdown -----------------------------------------------------------------------------

@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_exit_0(factory, signo):
    srv = factory.server()
    assert srv.get("/healthz").status_code == 200
    t0 = time.monotonic()
    rc = srv.stop(signo=signo)
    assert rc == 0, f"exit code {rc}\n{srv.stderr_text()[-2000:]}"
    assert time.monotonic() - t0 < 5.0


def test_sigterm_right_after_listening_line(factory):
    """Once the listening line is printed, SIGTERM must already mean a graceful stop (exit 0).

    Races the signal against the server's startup on purpose: a server that installs its
    signal handlers before announcing itself always passes; one that does it afterwards dies
    of the default SIGTERM action in most of these attempts."""
    inst = factory.instance()
    env = inst.env()
    env["IMAGEGATE_LISTEN"] = "127.0.0.1:0"
    for attempt in range(8):
        p = subprocess.Popen(inst.cli_argv("serve"), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
        watchdog = threading.Timer(15, p.kill)  # never hang on a server that never listens
        watchdog.start()
        try:
            for line in p.stdout:
                if line.startswith(b"imagegate listening on "):
                    p.send_signal(signal.SIGTERM)
                    break
            rc = p.wait(timeout=15)
        finally:
            watchdog.cancel()
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
            p.stdout.close()
        assert rc == 0, (f"attempt {attempt}: SIGTERM sent right after the listening line "
                         f"ended the process with {rc} instead of exit 0")


def test_idle_keepalive_does_not_delay_shutdown(factory):
    srv = factory.server()
    with requests.Session() as s:
        assert s.get(srv.url + "/healthz", timeout=5).status_code == 200
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            t0 = time.monotonic()
            rc = srv.stop()
            elapsed = time.monotonic() - t0
        finally:
            raw.close()
    assert rc == 0
    assert elapsed < 5.0, f"shutdown with idle connections took {elapsed:.1f}s"


def test_in_flight_request_finishes_on_sigterm(factory):
    srv = factory.server()
    key = srv.bootstrap_key
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        body = b'{"hello":"world"}'
        s.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
                  b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
        time.sleep(0.3)  # the server is now reading this request's body
        srv.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert srv.running(), "server exited while a request was in flight"
        # New connections are no longer accepted once draining (or are refused promptly).
        s.sendall(body[5:])
        resp = recv_until_close(s, timeout=5)
    status, headers, rbody = parse_raw_response(resp)
    assert status == 200, resp
    assert json.loads(rbody)["id"] == "user_1"
    assert headers.get("connection", "").lower() == "close"
    rc = srv.wait(timeout=10)
    assert rc == 0


def test_absolute_form_request_target(srv, key):
    """RFC 9112 §3.2.2: a server must accept `GET http://host/path` (proxies send it)."""
    resp = raw_request(srv.port, b"GET http://127.0.0.1/v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Authorization: Bearer " + key.encode() + b"\r\nConnection: close\r\n\r\n")
    status, _, body = parse_raw_response(resp)
    assert status == 200, resp[:300]
    assert json.loads(body)["email"], body


@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
def test_an_upload_without_a_valid_key_is_refused_before_its_body(srv, expect):
    """The key is checked once the header is read: a client waiting for `100 Continue` gets the
    401 instead and sends nothing; one that sends anyway still reads the 401 (the server never
    buffers the body)."""
    size = 8 * 1024 * 1024
    head = (b"POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-" + b"x" * 43 +
            b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n" % size +
            (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(head)
        if expect:
            resp = recv_until_close(s, timeout=5)
            assert not resp.startswith(b"HTTP/1.1 100"), resp[:100]
        else:
            s.sendall(b"x" * size)
            s.shutdown(socket.SHUT_WR)
            resp = recv_until_close(s, timeout=10)
    status, _, body = parse_raw_response(resp)
    assert status == 401, resp[:300]
    assert_error_body(body.decode(), "invalid_api_key", "authentication_error")


def test_a_keyed_upload_waiting_for_100_continue_gets_it(srv, key):
    body = b"--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--b--\r\n"
    head = (b"POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
            b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(head)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100"), first[:100]
        s.sendall(body)
        resp = recv_until_close(s, timeout=10)
    status, _, rbody = parse_raw_response(resp)
    assert status == 400, resp[:300]  # an edit without an image: the body was read and judged
    assert json.loads(rbody)["error"]["param"] == "image", rbody


def test_a_silent_new_connection_gets_the_header_timeout(factory):
    """A connection that never sends a byte is closed after header_timeout_ms, not after the
    (longer) keep-alive idle timeout; a kept-alive one waits the idle timeout between requests."""
    srv = factory.server("[server]\nidle_timeout_ms = 60000\nheader_timeout_ms = 1000\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as silent:
        t0 = time.monotonic()
        _, closed = recv_until_eof(silent, timeout=4)
        assert closed, "a silent connection was still open after 4 s (header_timeout_ms = 1000)"
        assert 0.5 < time.monotonic() - t0 < 3.5
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = kept.recv(4096)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        time.sleep(1.8)  # past the header timeout, well within the idle timeout
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        second = kept.recv(4096)
        assert second.startswith(b"HTTP/1.1 200"), second[:100]
