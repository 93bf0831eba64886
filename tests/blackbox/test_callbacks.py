"""Signed task callbacks (Standard Webhooks), checked with the independent verifier in
webhooks.py (not the server's code): the body is the dialect's GET, the id is fixed across
retries while the timestamp changes, only 2xx counts, redirects are not followed, hanging and
failing receivers stay bounded and never delay other deliveries, history and replay, rotation."""

import time

import pytest
import requests

from imgutil import assert_ledger_ok, assert_openai_error, jloads
from webhooks import WebhookReceiver, WebhookVerificationError

PRICE = "[models.price]\nkind = \"per_tier\"\nprices = { 1K = 1, 2K = 2, 4K = 3 }\n"
ATTEMPTS = 3


def config(schedule="[0, 1100, 1100]", timeout_ms=1000, latency_ms=50):
    return ('[images]\nallow_private_reference_urls = true\n\n'
            f'[callbacks]\nretry_schedule_ms = {schedule}\njitter_percent = 0\n'
            f'timeout_ms = {timeout_ms}\npoll_interval_ms = 50\n\n'
            f'[[providers]]\nname = "local"\ntype = "local"\nlatency_ms = {latency_ms}\n\n'
            '[[models]]\nid = "gpt-image-2"\nchannels = ["local"]\n' + PRICE)


@pytest.fixture(scope="module")
def _srv(module_factory):
    return module_factory.server(config())


@pytest.fixture
def srv(_srv):
    _srv.ensure_running()
    return _srv


@pytest.fixture
def rx():
    with WebhookReceiver() as receiver:
        yield receiver


_users = iter(range(10_000))


@pytest.fixture
def account(srv):
    email = f"hooks{next(_users)}@example.com"
    key = srv.create_user(email, credits=20)
    secret = srv.cli_ok("webhooks", "secret", email).strip()
    return email, key, secret


def create(srv, key, body, path="/v1/images/generations"):
    r = requests.post(srv.url + path, json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return jloads(r.text)


def deliveries(srv, key, task_id):
    r = srv.get(f"/v1/tasks/{task_id}/deliveries", key=key)
    assert r.status_code == 200, r.text
    return jloads(r.text)["data"]


def wait_delivery_state(srv, key, task_id, state, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        found = deliveries(srv, key, task_id)  # empty until the task is final
        if found and found[0]["status"] == state:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


# ---- bodies: each dialect's GET ------------------------------------------------------------------

def test_seed003_callback_is_signed_and_equals_the_task_get(srv, rx, account):
    _, key, secret = account
    assert secret.startswith("whsec_")
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/cb"),
                                "input": {"prompt": "a paper boat"}})["data"]["taskId"]
    [d] = rx.wait_for(1)
    d.verify(secret)
    assert d.headers["webhook-id"] == f"msg_{task_id}"
    assert d.headers["content-type"].startswith("application/json")
    body = d.json()
    assert body == jloads(srv.get(f"/v1/tasks/{task_id}", key=key).text)
    assert body["status"] == "completed" and body["output"]["urls"]
    with pytest.raises(WebhookVerificationError):
        d.verify("whsec_" + "QUJD" * 8)  # someone else's secret


def test_seed001_callback_equals_its_get(srv, rx, account):
    _, key, secret = account
    created = create(srv, key, {"model": "gpt-image-2", "prompt": "a kite", "aspect_ratio": "1:1",
                                "resolution": "1K", "callback_url": rx.url_for("/s1")},
                     path="/api/v1/images/generations")
    task_id = created["data"]["taskId"]
    [d] = rx.wait_for(1)
    d.verify(secret)
    get = srv.get(f"/api/v1/images/generations?task_id={task_id}", key=key)
    assert d.json() == jloads(get.text)
    assert d.json()["code"] == 200 and d.json()["data"]["taskId"] == task_id


def test_seed002_callback_equals_its_get(factory, rx):
    srv = factory.server(config() + '\n[tasks]\nprofile = "seed002"\n')
    key = srv.create_user("s2@example.com", credits=5)
    secret = srv.cli_ok("webhooks", "secret", "s2@example.com").strip()
    task_id = create(srv, key, {"model": "gpt-image-2", "prompt": "a bell",
                                "callback_url": rx.url_for("/s2")},
                     path="/api/v1/images/generations")["id"]
    [d] = rx.wait_for(1)
    d.verify(secret)
    assert d.json() == jloads(srv.get(f"/api/v1/images/tasks/{task_id}", key=key).text)
    assert d.json()["status"] == "succeeded"


def test_canceled_and_failed_tasks_call_back_too(factory, rx):
    srv = factory.server(config(latency_ms=0).replace(
        'latency_ms = 0', 'latency_ms = 0\nfailure_percent = 100\nfailures_retryable = false'))
    key = srv.create_user("fail@example.com", credits=5)
    secret = srv.cli_ok("webhooks", "secret", "fail@example.com").strip()
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/f"),
                                "input": {"prompt": "doomed"}})["data"]["taskId"]
    [d] = rx.wait_for(1)
    d.verify(secret)
    assert d.json()["id"] == task_id and d.json()["status"] == "failed"


# ---- retries, status codes, redirects, hangs ------------------------------------------------------

def test_retries_keep_the_id_and_change_the_timestamp(srv, rx, account):
    _, key, secret = account
    rx.behave("fail_first", n=2)
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/retry"),
                                "input": {"prompt": "retry me"}})["data"]["taskId"]
    got = rx.wait_for(3, timeout=20)
    for d in got:
        d.verify(secret)
    assert {d.headers["webhook-id"] for d in got} == {f"msg_{task_id}"}
    stamps = [int(d.headers["webhook-timestamp"]) for d in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3, stamps
    assert got[1].received_at - got[0].received_at >= 1.0  # the schedule, not a hot loop
    assert [d.body for d in got] == [got[0].body] * 3  # the same body every time
    d = wait_delivery_state(srv, key, task_id, "succeeded")
    assert d["attempts"] == 3 and d["last_response_status"] == 200
    assert [h["response_status"] for h in d["history"]] == [500, 500, 200]
    assert [h["number"] for h in d["history"]] == [1, 2, 3]


def test_a_receiver_failing_forever_stops_at_the_attempt_cap(srv, rx, account):
    _, key, _ = account
    rx.behave("status", code=500)
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/down"),
                                "input": {"prompt": "nobody home"}})["data"]["taskId"]
    d = wait_delivery_state(srv, key, task_id, "failed", timeout=20)
    assert d["attempts"] == ATTEMPTS and d["next_attempt_at"] is None
    time.sleep(1.5)
    assert len(rx.hits("/down")) == ATTEMPTS


def test_redirects_are_failures_and_never_followed(srv, rx, account):
    _, key, _ = account
    rx.behave("redirect", to="/elsewhere")
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/moved"),
                                "input": {"prompt": "moved"}})["data"]["taskId"]
    d = wait_delivery_state(srv, key, task_id, "failed", timeout=20)
    assert d["last_response_status"] == 302
    assert not rx.redirect_followed


def test_a_hanging_receiver_is_bounded_and_blocks_no_one(srv, rx, account):
    _, key, secret = account
    rx.behave("hang", path="/hang")
    hanging = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/hang"),
                                "input": {"prompt": "hang"}})["data"]["taskId"]
    rx.wait_for(1, path="/hang")
    started = time.monotonic()
    create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/fine"),
                      "input": {"prompt": "fine"}})
    [d] = rx.wait_for(1, path="/fine", timeout=10)
    d.verify(secret)
    assert time.monotonic() - started < 5
    failed = wait_delivery_state(srv, key, hanging, "failed", timeout=30)
    assert failed["attempts"] == ATTEMPTS
    assert all(h["response_status"] is None and h["error"] for h in failed["history"])
    assert all(h["duration_ms"] < 3000 for h in failed["history"])  # timeout_ms = 1000


# ---- history, replay, rotation, ownership ---------------------------------------------------------

def test_replay_sends_the_same_message_again(srv, rx, account):
    _, key, secret = account
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/replay"),
                                "input": {"prompt": "again"}})["data"]["taskId"]
    [first] = rx.wait_for(1, path="/replay")
    d = wait_delivery_state(srv, key, task_id, "succeeded")
    r = srv.request("POST", f"/v1/tasks/{task_id}/deliveries/{d['id']}/replay", key=key)
    assert r.status_code == 202, r.text
    second = rx.wait_for(2, path="/replay")[1]
    second.verify(secret)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body
    d = wait_delivery_state(srv, key, task_id, "succeeded")
    assert d["attempts"] == 2 and len(d["history"]) == 2
    r = srv.request("POST", f"/v1/tasks/{task_id}/deliveries/msg_nope/replay", key=key)
    assert_openai_error(r, 404)


def test_rotation_signs_with_the_new_secret(srv, rx, account):
    email, key, old = account
    new = srv.cli_ok("webhooks", "secret", email, "--rotate").strip()
    assert new != old and new.startswith("whsec_")
    assert srv.cli_ok("webhooks", "secret", email).strip() == new
    create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/rot"),
                      "input": {"prompt": "rotated"}})
    [d] = rx.wait_for(1, path="/rot")
    d.verify(new)
    with pytest.raises(WebhookVerificationError):
        d.verify(old)


def test_deliveries_are_the_owners_only(srv, rx, account):
    _, key, _ = account
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/own"),
                                "input": {"prompt": "mine"}})["data"]["taskId"]
    rx.wait_for(1, path="/own")
    other = srv.create_user(f"other{next(_users)}@example.com", credits=1)
    assert_openai_error(srv.get(f"/v1/tasks/{task_id}/deliveries", key=other), 404)
    assert_openai_error(srv.get("/v1/tasks/" + "x" * 10_000 + "/deliveries", key=key), 404)
    plain = create(srv, key, {"model": "gpt-image-2", "input": {"prompt": "no callback"}})
    assert deliveries(srv, key, plain["data"]["taskId"]) == []


def test_callbacks_survive_a_restart(factory, rx):
    # The receiver is down (500) until after a restart; the outbox still delivers.
    srv = factory.server(config(schedule="[0, 1500, 1500, 1500]"))
    key = srv.create_user("restart@example.com", credits=5)
    secret = srv.cli_ok("webhooks", "secret", "restart@example.com").strip()
    rx.behave("status", code=503)
    task_id = create(srv, key, {"model": "gpt-image-2", "callback_url": rx.url_for("/later"),
                                "input": {"prompt": "patience"}})["data"]["taskId"]
    rx.wait_for(1, path="/later")
    srv.kill()
    rx.behave("ok")
    srv.start()
    d = wait_delivery_state(srv, key, task_id, "succeeded", timeout=30)
    # The first attempt may or may not have been recorded before the kill; either way it was
    # sent again after the restart, with the same id.
    assert d["attempts"] >= 1 and len(rx.hits("/later")) >= 2
    assert len({h.headers["webhook-id"] for h in rx.hits("/later")}) == 1
    rx.hits("/later")[-1].verify(secret)
    assert_ledger_ok(srv)
