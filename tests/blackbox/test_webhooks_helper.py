"""Tests of the test-side webhook helpers (webhooks.py) themselves: no imagegate binary needed.

The signer/verifier is checked against the published Standard Webhooks test vector and against
a vector computed here directly with hmac + hashlib; the receiver is exercised over real HTTP.
"""

import base64
import hashlib
import hmac
import socket
import threading
import time

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from webhooks import WebhookReceiver, WebhookVerificationError, sign, verify

# The published Standard Webhooks test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# A second vector, computed below without going through webhooks.py.
KEY = bytes(range(1, 33))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
MSG_ID = "msg_2xYz.with.dots"
TS = 1_700_000_000
BODY = '{"id":"task_1","status":"succeeded","prompt":"caf\u00e9 \u2615"}'.encode("utf-8")

HTTP_TIMEOUT = 5.0


def expected_sig(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    content = f"{msg_id}.{ts}.{body.decode('utf-8')}".encode("utf-8")
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def hdrs(msg_id=MSG_ID, ts=TS, sig=None, secret=SECRET, body=BODY) -> dict:
    if sig is None:
        sig = sign(secret, msg_id, ts, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def rejected(headers, body=BODY, secret=SECRET, now=TS, **kw) -> str:
    with pytest.raises(WebhookVerificationError) as ei:
        verify(secret, headers, body, now=now, **kw)
    assert ei.value.reason and str(ei.value) == ei.value.reason
    return ei.value.reason


# ---- sign / verify -----------------------------------------------------------------------------

def test_spec_vector_signs_and_verifies():
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    # Cross-check the vector itself with hmac directly.
    key = base64.b64decode(SPEC_SECRET[len("whsec_"):])
    assert expected_sig(key, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    verify(SPEC_SECRET, {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS),
                         "webhook-signature": SPEC_SIG}, SPEC_BODY, now=SPEC_TS)


def test_independent_known_answer_vector():
    want = expected_sig(KEY, MSG_ID, TS, BODY)
    assert sign(SECRET, MSG_ID, TS, BODY) == want
    # Padded standard base64 of a 32-byte digest: 44 characters ending in '='.
    b64 = want.split(",", 1)[1]
    assert len(b64) == 44 and b64.endswith("=")
    assert base64.b64decode(b64, validate=True) == hmac.new(
        KEY, f"{MSG_ID}.{TS}.".encode() + BODY, hashlib.sha256).digest()
    verify(SECRET, hdrs(sig=want), BODY, now=TS)


def test_header_lookup_is_case_insensitive():
    sig = sign(SECRET, MSG_ID, TS, BODY)
    mixed = {"Webhook-Id": MSG_ID, "WEBHOOK-TIMESTAMP": str(TS), "webhook-Signature": sig}
    verify(SECRET, mixed, BODY, now=TS)
    verify(SECRET, CaseInsensitiveDict(mixed), BODY, now=TS)


def test_default_now_is_current_time():
    now = int(time.time())
    verify(SECRET, hdrs(ts=now), BODY)
    assert "too old" in rejected(hdrs(ts=now - 3600), now=None)


@pytest.mark.parametrize("what", ["body", "id", "timestamp"])
def test_tampering_is_rejected(what):
    h = hdrs()
    body = BODY
    if what == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif what == "id":
        h["webhook-id"] = MSG_ID + "x"
    else:
        h["webhook-timestamp"] = str(TS + 1)  # still within tolerance: the signature must fail
    assert "no matching v1 signature" in rejected(h, body=body)


def test_wrong_secret_and_mangled_signature_rejected():
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    assert "no matching" in rejected(hdrs(), secret=other)
    sig = sign(SECRET, MSG_ID, TS, BODY)
    assert "no matching" in rejected(hdrs(sig=sig.rstrip("=")))          # padding is required
    assert "no matching" in rejected(hdrs(sig=sig[:-2] + "A="))
    assert "no matching" in rejected(hdrs(sig="v1," + sig))              # only one v1 prefix


def test_stale_and_future_timestamps_rejected():
    h = hdrs()
    verify(SECRET, h, BODY, now=TS + 300)   # exactly at the tolerance: accepted
    verify(SECRET, h, BODY, now=TS - 300)
    assert "too old" in rejected(h, now=TS + 301)
    assert "too new" in rejected(h, now=TS - 301)
    assert "too old" in rejected(h, now=TS + 11, tolerance=10)
    verify(SECRET, h, BODY, now=TS + 3600, tolerance=3600)


@pytest.mark.parametrize("ts", ["", "abc", "1700000000.5", "-1700000000", " 1700000000", "1e9", "0x10"])
def test_malformed_timestamp_rejected(ts):
    h = hdrs()
    h["webhook-timestamp"] = ts
    reason = rejected(h)
    assert "webhook-timestamp" in reason


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_rejected(name):
    h = hdrs()
    del h[name]
    assert rejected(h) == f"missing header {name}"


def test_multiple_signatures_one_valid_accepted():
    good = sign(SECRET, MSG_ID, TS, BODY)
    bad1 = "v1," + base64.b64encode(b"\0" * 32).decode()
    bad2 = sign("whsec_" + base64.b64encode(b"old-secret-0123456789").decode(), MSG_ID, TS, BODY)
    for header in (f"{bad1} {good}", f"{good} {bad1}", f"{bad1} {good} {bad2}", f"{bad1}  {good}"):
        verify(SECRET, hdrs(sig=header), BODY, now=TS)
    assert "2 entries" in rejected(hdrs(sig=f"{bad1} {bad2}"))


def test_non_v1_entries_ignored():
    good = sign(SECRET, MSG_ID, TS, BODY)
    b64 = good.split(",", 1)[1]
    # The right bytes under another version label never count.
    assert "no v1 signature" in rejected(hdrs(sig=f"v2,{b64}"))
    assert "no v1 signature" in rejected(hdrs(sig=f"v1a,{b64} V1,{b64} {b64}"))
    assert "no matching" in rejected(hdrs(sig=f"v2,{b64} v1,AAAA"))
    # ... and do not get in the way of a valid v1 entry.
    verify(SECRET, hdrs(sig=f"v2,{b64} v1a,xyz {good}"), BODY, now=TS)
    verify(SECRET, hdrs(sig=f"v1b,garbage {good} v2,{b64}"), BODY, now=TS)


def test_secret_decoding():
    with pytest.raises(ValueError):
        sign("whsec_not*base64!", MSG_ID, TS, BODY)
    with pytest.raises(ValueError):
        verify("whsec_", hdrs(), BODY, now=TS)


# ---- the receiver ------------------------------------------------------------------------------

@pytest.fixture
def rx():
    with WebhookReceiver() as r:
        yield r


def post(rx, path="/cb", body=b'{"n":1}', headers=None, timeout=HTTP_TIMEOUT, **kw):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return requests.post(rx.url + path, data=body, headers=h, timeout=timeout, **kw)


def test_ok_records_delivery_over_http(rx):
    assert rx.url.startswith("http://127.0.0.1:") and rx.port > 0
    body = b'{"task":"t1"}'
    t0 = time.time()
    r = post(rx, "/cb?x=1", body=body, headers={"X-Custom": "Yes", **hdrs(body=body)})
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["Content-Type"] == "application/json"
    [d] = rx.wait_for(1, timeout=2)
    assert d.method == "POST" and d.path == "/cb?x=1" and d.route == "/cb"
    assert d.body == body and d.json() == {"task": "t1"}
    assert d.headers["x-custom"] == "Yes" and "X-Custom" not in d.headers
    assert all(k == k.lower() for k in d.headers)
    assert d.status == 200 and d.mode == "ok"
    assert t0 - 1 <= d.received_at <= time.time() + 1
    d.verify(SECRET, now=TS)
    with pytest.raises(WebhookVerificationError):
        d.verify(SECRET)  # TS is far in the past


def test_chunked_body_is_recorded(rx):
    r = requests.post(rx.url + "/chunked", data=iter([b"ab", b"cde", b"f" * 70000]),
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    [d] = rx.wait_for(1, timeout=2)
    assert d.headers.get("transfer-encoding") == "chunked"
    assert d.body == b"abcde" + b"f" * 70000


@pytest.mark.parametrize("code", [500, 410, 404, 204])
def test_status(rx, code):
    rx.behave("status", code=code)
    r = post(rx)
    assert r.status_code == code
    assert rx.wait_for(1, timeout=2)[0].status == code


def test_status_custom_body(rx):
    rx.behave("status", code=503, body={"retry": True})
    r = post(rx)
    assert r.status_code == 503 and r.json() == {"retry": True}


def test_fail_first(rx):
    rx.behave("fail_first", n=2)
    codes = [post(rx).status_code for _ in range(4)]
    assert codes == [500, 500, 200, 200]
    assert [d.status for d in rx.wait_for(4, timeout=2)] == codes
    rx.behave("fail_first", n=1, code=502)  # a new behaviour counts from zero again
    assert [post(rx).status_code for _ in range(2)] == [502, 200]


def test_slow(rx):
    rx.behave("slow", seconds=0.4)
    t0 = time.monotonic()
    r = post(rx)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.35
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(rx, timeout=(HTTP_TIMEOUT, 0.1))
    assert len(rx.wait_for(2, timeout=2)) == 2


def test_hang_times_out_client_and_blocks_nothing(rx):
    rx.behave("hang", path="/hang")
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(rx, "/hang", timeout=(HTTP_TIMEOUT, 0.3))
    assert time.monotonic() - t0 < 2
    # Several hanging requests at once; other paths (the default) still answer at once.
    for _ in range(3):
        with pytest.raises(requests.exceptions.ReadTimeout):
            post(rx, "/hang", timeout=(HTTP_TIMEOUT, 0.05))
    t1 = time.monotonic()
    assert post(rx, "/other").status_code == 200
    assert time.monotonic() - t1 < 1
    hung = rx.wait_for(4, timeout=2, path="/hang")
    assert all(d.status is None and d.mode == "hang" for d in hung)
    assert [d.status for d in rx.hits("/other")] == [200]


def test_stop_releases_hanging_handlers_and_closes_socket():
    rx = WebhookReceiver().start()
    port = rx.port
    rx.behave("hang")
    outcome = {}

    def client():
        try:
            outcome["r"] = post(rx, "/hang", timeout=(HTTP_TIMEOUT, 10))
        except requests.exceptions.RequestException as e:
            outcome["e"] = e

    t = threading.Thread(target=client, daemon=True)
    t.start()
    rx.wait_for(1, timeout=2)
    t0 = time.monotonic()
    rx.stop()
    assert time.monotonic() - t0 < 2, "stop() was held up by a hanging handler"
    t.join(3)
    assert not t.is_alive(), "the hanging request was not released by stop()"
    assert isinstance(outcome.get("e"), requests.exceptions.ConnectionError), outcome
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    rx.stop()  # idempotent


def test_redirect_not_followed_by_non_following_client(rx):
    rx.behave("redirect")
    r = post(rx, "/cb", allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == rx.url + "/redirected"
    assert r.headers["Location"].startswith(rx.url)
    [d] = rx.wait_for(1, timeout=2)
    assert d.status == 302 and d.mode == "redirect"
    time.sleep(0.1)
    assert rx.hits("/redirected") == [] and not rx.redirect_followed
    assert len(rx.deliveries) == 1


def test_redirect_followed_is_detected(rx):
    # The detector works: a following client does reach the target (answered by the default).
    rx.behave("redirect", path="/cb", to="/elsewhere", code=307)
    r = post(rx, "/cb")
    assert r.status_code == 200 and r.history[0].status_code == 307
    assert rx.redirect_followed
    assert [d.status for d in rx.hits("/elsewhere")] == [200]
    assert rx.redirect_targets == {"/elsewhere"}


def test_per_path_behaviours_and_default(rx):
    rx.behave("status", code=500)                 # default
    rx.behave("ok", path="/good")
    rx.behave("status", code=410, path="/gone")
    assert post(rx, "/good").status_code == 200
    assert post(rx, "/good?q=1").status_code == 200   # matched on the path, query ignored
    assert post(rx, "/gone").status_code == 410
    assert post(rx, "/anything").status_code == 500
    rx.behave("ok")                                # switch the default at any time
    assert post(rx, "/anything").status_code == 200
    assert post(rx, "/gone").status_code == 410
    assert [d.status for d in rx.wait_for(6, timeout=2)] == [200, 200, 410, 500, 200, 410]
    rx.reset()
    assert rx.deliveries == []
    assert post(rx, "/gone").status_code == 200


def test_wait_for_waits_for_late_delivery(rx):
    def later():
        time.sleep(0.2)
        post(rx, "/late")

    t = threading.Thread(target=later, daemon=True)
    t.start()
    t0 = time.monotonic()
    [d] = rx.wait_for(1, timeout=3)
    assert d.path == "/late" and 0.1 < time.monotonic() - t0 < 2
    t.join(3)


def test_wait_for_timeout_message(rx):
    post(rx, "/cb", body=b'{"first": true}', headers={"webhook-id": "msg_abc"})
    rx.behave("status", code=500, path="/cb")
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as ei:
        rx.wait_for(2, timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 2
    msg = str(ei.value)
    for needle in ("expected 2 webhook deliveries", "within 0.2s", rx.url, "got 1",
                   "POST /cb -> 200", "msg_abc", '{"first": true}', "/cb=status(code=500)"):
        assert needle in msg, (needle, msg)
    with pytest.raises(AssertionError, match="expected 1 webhook deliveries to /nope .* got 0"):
        rx.wait_for(1, timeout=0.05, path="/nope")


def test_behave_rejects_bad_arguments(rx):
    with pytest.raises(ValueError):
        rx.behave("explode")
    with pytest.raises(ValueError):
        rx.behave("status")
    with pytest.raises(ValueError):
        rx.behave("fail_first")
    with pytest.raises(ValueError):
        rx.behave("slow", secs=1)
    with pytest.raises(ValueError):
        rx.behave("redirect", to="http://elsewhere.example/")
    with pytest.raises(ValueError):
        rx.behave("ok", path="no-slash")
