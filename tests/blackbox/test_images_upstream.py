"""The OpenAI adapter against tests/fakes/fake_openai.py: auth, failover, refunds on every kind of
upstream failure."""

import base64
import itertools
import time

import pytest
import requests

from conftest import shared_server
from imgutil import (IMG_TIMEOUT, assert_charge_headers, assert_ledger_ok, assert_openai_error,
                     b64_image, closed_port, credits, data_url, edit_multipart, generate, image_info,
                     make_png, read_sse)

_emails = itertools.count()
PRICE = "[models.price]\nkind = \"per_tier\"\nprices = { 1K = 1, 2K = 2, 4K = 3 }\n"


def config(fake_url, channels, timeout_ms=5000):
    return (f'[[providers]]\nname = "fake"\ntype = "openai"\nbase_url = "{fake_url}"\n'
            f'api_key = "sk-upstream"\ntimeout_ms = {timeout_ms}\nconnect_timeout_ms = 2000\n\n'
            '[[providers]]\nname = "local"\ntype = "local"\n\n'
            f'[[models]]\nid = "gpt-image-2"\nchannels = {channels}\n' + PRICE)


@pytest.fixture(scope="module")
def _only_fake(module_factory, fake_openai):
    return module_factory.server(config(fake_openai.base_url, '["fake"]', timeout_ms=1500))


@pytest.fixture(scope="module")
def _failover(module_factory, fake_openai):
    return module_factory.server(config(fake_openai.base_url, '["fake", "local"]'))


@pytest.fixture(scope="module")
def _dead(module_factory):
    return module_factory.server(config(f"http://127.0.0.1:{closed_port()}/v1", '["fake", "local"]'))


@pytest.fixture(scope="module")
def _dead_only(module_factory):
    return module_factory.server(config(f"http://127.0.0.1:{closed_port()}/v1", '["fake"]'))


@pytest.fixture
def fake(fake_openai):
    fake_openai.reset()
    yield fake_openai
    fake_openai.reset()


@pytest.fixture
def only_fake(_only_fake, fake):
    yield from shared_server(_only_fake)


@pytest.fixture
def failover(_failover, fake):
    yield from shared_server(_failover)


def user(srv, amount=50):
    return srv.create_user(f"up{next(_emails)}@example.com", credits=amount)


def body(**kw):
    return dict({"model": "gpt-image-2", "prompt": "an upstream cat", "size": "1024x1024"}, **kw)


def stream_events(srv, key, **kw):
    """[(event name, data)] of a streamed generation (the HTTP status must be 200)."""
    with requests.post(srv.url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                       json=body(stream=True, **kw), stream=True, timeout=IMG_TIMEOUT) as r:
        assert r.status_code == 200, r.text[:300]
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return read_sse(r)


# ---- success ---------------------------------------------------------------------------------

def test_upstream_ok_with_bearer(only_fake, fake):
    key = user(only_fake)
    r = generate(only_fake, key, body(size="1536x1024"))
    assert r.status_code == 200, r.text[:500]
    img = b64_image(r.json()["data"][0])
    info = image_info(img)
    assert (info["width"], info["height"]) == (1536, 1024)
    assert_charge_headers(r, 1, 49)
    assert credits(only_fake, key) == {"credits": 49, "reserved": 0}
    st = fake.stats()
    assert st["generations"] == 1, st
    last = st["last_requests"][-1]
    assert last["path"] == "/v1/images/generations"
    assert last["authorization"] == "Bearer sk-upstream", last
    assert last["fields"]["prompt"] == "an upstream cat"
    assert key not in str(st), "the customer's key must never reach the upstream"
    # the URL serves the upstream's bytes from imagegate
    g = requests.get(r.json()["data"][0]["url"], timeout=10)
    assert g.status_code == 200 and g.content == img


def test_upstream_edit_multipart(only_fake, fake):
    key = user(only_fake)
    r = edit_multipart(only_fake, key, {"model": "gpt-image-2", "prompt": "add a hat", "size": "1024x1024"},
                       [("image[]", f"{i}.png", make_png(64, 64, seed=i), "image/png") for i in range(3)]
                       + [("mask", "m.png", make_png(64, 64, rgba=True), "image/png")])
    assert r.status_code == 200, r.text[:500]
    st = fake.stats()
    assert st["edits"] == 1 and st["generations"] == 0, st
    last = st["last_requests"][-1]
    assert last["authorization"] == "Bearer sk-upstream"
    names = sorted(f["name"] for f in last["files"])
    assert len([n for n in names if n.startswith("image")]) == 3, last["files"]
    assert "mask" in names, last["files"]
    assert credits(only_fake, key) == {"credits": 49, "reserved": 0}


def test_generation_with_reference_goes_to_edits(only_fake, fake):
    key = user(only_fake)
    r = generate(only_fake, key, body(image_urls=[data_url(make_png(64, 64))]))
    assert r.status_code == 200, r.text[:500]
    st = fake.stats()
    assert st["edits"] == 1 and st["generations"] == 0, st


def test_upstream_stream(only_fake, fake):
    key = user(only_fake)
    events = stream_events(only_fake, key, partial_images=2)
    names = [e[0] for e in events]
    assert names == ["image_generation.partial_image"] * 2 + ["image_generation.completed"], names
    info = image_info(base64.b64decode(events[-1][1]["b64_json"]))
    assert (info["width"], info["height"]) == (1024, 1024)
    assert credits(only_fake, key) == {"credits": 49, "reserved": 0}


# ---- client errors from the upstream --------------------------------------------------------

def test_upstream_400_is_400_and_refunded(failover, fake):
    """A moderation-style 400 is the customer's fault: no failover, nothing charged."""
    key = user(failover)
    fake.control(mode="400")
    r = generate(failover, key, body())
    assert_openai_error(r, 400)
    assert credits(failover, key) == {"credits": 50, "reserved": 0}
    assert fake.stats()["requests"] == 1


# ---- failover ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["500", "503", "429"])
def test_failover_to_second_channel(failover, fake, mode):
    key = user(failover)
    fake.control(mode=mode)
    r = generate(failover, key, body())
    assert r.status_code == 200, f"{mode}: {r.status_code} {r.text[:300]}"
    info = image_info(b64_image(r.json()["data"][0]))
    assert (info["width"], info["height"]) == (1024, 1024)
    assert_charge_headers(r, 1, 49)
    assert credits(failover, key) == {"credits": 49, "reserved": 0}
    assert fake.stats()["requests"] >= 1, "the first channel was not tried"


@pytest.mark.parametrize("mode", ["garbage", "reset"])
def test_broken_reply_after_200_does_not_fail_over(failover, fake, mode):
    """A 200 that is not JSON, or a reply cut mid-body: the upstream accepted (and billed) the
    work, so another channel must not render it again. 503, refunded, one upstream request."""
    key = user(failover)
    fake.control(mode=mode)
    r = generate(failover, key, body())
    assert_openai_error(r, 503, code="upstream_error")
    assert credits(failover, key) == {"credits": 50, "reserved": 0}
    assert fake.stats()["requests"] == 1


@pytest.mark.parametrize("mode", ["stream_linger", "stream_cut"])
def test_stream_whose_images_all_arrived_succeeds(only_fake, fake, mode):
    """`data: [DONE]` ends a stream even if the upstream keeps the response open; a connection
    that breaks after the completed image loses nothing. (timeout_ms = 1500 on this server.)"""
    key = user(only_fake)
    fake.control(mode=mode)
    t0 = time.monotonic()
    events = stream_events(only_fake, key, partial_images=1)
    names = [e[0] for e in events]
    assert names == ["image_generation.partial_image", "image_generation.completed"], names
    assert time.monotonic() - t0 < 1.2, "the stream waited for the upstream timeout"
    assert credits(only_fake, key) == {"credits": 49, "reserved": 0}
    # ...and the upstream response left open after [DONE] is closed at once, not at the timeout.
    deadline = time.monotonic() + 0.8
    while fake.stats()["lingering"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.stats()["lingering"] == 0, "the upstream transfer is still open"


def test_stream_cut_before_all_n_images_fails(only_fake, fake):
    """n = 2 and the connection breaks after the first completed image (the fake streams one):
    a broken stream, refunded, not a success with half the images."""
    key = user(only_fake)
    fake.control(mode="stream_cut")
    events = stream_events(only_fake, key, partial_images=1, n=2)
    assert [e[0] for e in events][-1] == "error", [e[0] for e in events]
    assert credits(only_fake, key) == {"credits": 50, "reserved": 0}


def test_stream_cut_after_a_partial_does_not_fail_over(failover, fake):
    """The client has seen the first channel's preview: the stream ends with an error event,
    not with another channel's unrelated image."""
    key = user(failover)
    fake.control(mode="stream_reset")
    events = stream_events(failover, key, partial_images=2)
    names = [e[0] for e in events]
    assert names == ["image_generation.partial_image", "error"], names
    err = events[-1][1]["error"]
    assert err["code"] == "upstream_error", err
    # The upstream's address and raw body stay in the log.
    assert "127.0.0.1" not in err["message"] and "b64_json" not in err["message"], err
    assert credits(failover, key) == {"credits": 50, "reserved": 0}
    assert fake.stats()["requests"] == 1


def test_failover_on_connect_refused(_dead):
    srv = _dead
    key = user(srv)
    r = generate(srv, key, body())
    assert r.status_code == 200, r.text[:300]
    assert credits(srv, key) == {"credits": 49, "reserved": 0}


def test_failover_on_timeout(failover, fake):
    fake.control(mode="hang")
    key = user(failover)
    t0 = time.monotonic()
    r = generate(failover, key, body(), timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert credits(failover, key) == {"credits": 49, "reserved": 0}
    assert time.monotonic() - t0 < 25


# ---- one channel only: 503 upstream_error, refunded ------------------------------------------------

@pytest.mark.parametrize("mode", ["500", "503", "429", "garbage", "reset", "401"])
def test_single_channel_failure_refunded(only_fake, fake, mode):
    key = user(only_fake)
    fake.control(mode=mode)
    r = generate(only_fake, key, body())
    assert_openai_error(r, 503, code="upstream_error", etype="upstream_error")
    assert credits(only_fake, key) == {"credits": 50, "reserved": 0}
    assert fake.stats()["requests"] >= 1
    # The OpenAI SDKs retry every 5xx unless told not to: a 200 cut short or garbled may have
    # been rendered and billed upstream, so that one says `x-should-retry: false`; an upstream
    # that refused the job (429, 5xx, 401) may be asked again.
    expected = "false" if mode in ("garbage", "reset") else None
    assert r.headers.get("x-should-retry") == expected, (mode, dict(r.headers))


@pytest.mark.parametrize("ctl", [{"mode": "hang"}, {"mode": "slow", "delay_ms": 4000}], ids=["hang", "slow"])
def test_single_channel_timeout_refunded(only_fake, fake, ctl):
    """timeout_ms = 1500 on this server."""
    key = user(only_fake)
    fake.control(**ctl)
    t0 = time.monotonic()
    r = generate(only_fake, key, body(), timeout=30)
    elapsed = time.monotonic() - t0
    assert_openai_error(r, 503, code="upstream_error")
    assert elapsed < 20, f"timeout took {elapsed:.1f}s with timeout_ms=1500"
    assert credits(only_fake, key) == {"credits": 50, "reserved": 0}


def test_single_channel_connect_refused(_dead_only):
    srv = _dead_only
    key = user(srv)
    r = generate(srv, key, body())
    assert_openai_error(r, 503, code="upstream_error")
    assert credits(srv, key) == {"credits": 50, "reserved": 0}
    # Customers do not learn where the upstream lives; the operator's log has the detail.
    message = r.json()["error"]["message"]
    assert "127.0.0.1" not in message and "port" not in message.lower(), message


def test_single_channel_edit_failure_refunded(only_fake, fake):
    key = user(only_fake)
    fake.control(mode="500")
    r = edit_multipart(only_fake, key, {"model": "gpt-image-2", "prompt": "x", "n": "2"},
                       [("image", "a.png", make_png(64, 64), "image/png")])
    assert_openai_error(r, 503, code="upstream_error")
    assert credits(only_fake, key) == {"credits": 50, "reserved": 0}


def test_intermittent_upstream_money(only_fake, fake):
    """Every 2nd upstream call fails: each success is charged once, each failure refunded."""
    key = user(only_fake, 20)
    fake.control(fail_every=2, fail_mode="503")
    ok = 0
    for _ in range(8):
        r = generate(only_fake, key, body())
        assert r.status_code in (200, 503), r.text[:300]
        ok += r.status_code == 200
    assert ok >= 1
    assert credits(only_fake, key) == {"credits": 20 - ok, "reserved": 0}
    assert_ledger_ok(only_fake)


@pytest.mark.parametrize("retryable", [True, False], ids=["retryable", "final"])
def test_local_injected_failures_fail_over_only_when_retryable(factory, retryable):
    """`failures_retryable = false` makes a local channel's injected failure final: the next
    channel is not tried (issue 3: failover only when the upstream cannot have accepted work)."""
    srv = factory.server('[[providers]]\nname = "flaky"\ntype = "local"\nfailure_percent = 100\n'
                         f'failures_retryable = {"true" if retryable else "false"}\n\n'
                         '[[providers]]\nname = "local"\ntype = "local"\n\n'
                         '[[models]]\nid = "gpt-image-2"\nchannels = ["flaky", "local"]\n' + PRICE)
    key = srv.create_user("flaky-local@example.com", credits=10)
    r = generate(srv, key, body())
    if retryable:
        assert r.status_code == 200, r.text[:300]
        assert_charge_headers(r, 1, 9)
    else:
        assert_openai_error(r, 503, code="upstream_error")
        assert credits(srv, key) == {"credits": 10, "reserved": 0}
    assert_ledger_ok(srv)


def test_reply_names_the_format_and_size_delivered(only_fake, fake):
    """The fake answers PNG whatever output_format says: the reply describes the image sent."""
    key = user(only_fake)
    r = generate(only_fake, key, body(output_format="jpeg", response_format="b64_json"))
    assert r.status_code == 200, r.text[:300]
    reply = r.json()
    assert reply["output_format"] == "png", reply.get("output_format")
    assert reply["size"] == "1024x1024", reply.get("size")
    assert base64.b64decode(reply["data"][0]["b64_json"]).startswith(b"\x89PNG")
