"""The async task engine against a Kie-style upstream (tests/fakes/fake_kie.py): the upstream
protocol and its faults, the upstream's callback waking the poller, failover before the
upstream accepted work, the deadline sweep, per-key profiles, a kill -9 with 50 tasks in flight
over a fast and a slow upstream, and a race of callback, poller and sweep on the same jobs."""

import re
import sqlite3
import time
from urllib.parse import urlsplit

import pytest
import requests

from imgutil import (FakeKie, assert_ledger_ok, assert_openai_error, credits, data_url,
                     image_info, jloads, make_png)

PRICE = "[models.price]\nkind = \"per_tier\"\nprices = { 1K = 1, 2K = 2, 4K = 3 }\n"
FINAL = ("succeeded", "failed", "canceled")


def kie_block(name, fake, poll_ms=5000):
    return (f'[[providers]]\nname = "{name}"\ntype = "kie"\nbase_url = "{fake.base_url}"\n'
            f'api_key = "test-kie-key"\npoll_interval_ms = {poll_ms}\ntimeout_ms = 5000\n\n')


def config(fakes, channels=None, poll_ms=5000, deadline_ms=120_000, sweep_ms=200,
           max_running=256, extra_models=""):
    """seed002 profile: every POST /api/v1/images/generations is a task."""
    blocks = "".join(kie_block(name, fake, poll_ms) for name, fake in fakes)
    channels = channels or [fakes[0][0]]
    chan = ", ".join(f'"{c}"' for c in channels)
    return (f'[images]\nallow_private_reference_urls = true\n\n'
            f'[tasks]\nprofile = "seed002"\nmax_running = {max_running}\n'
            f'deadline_ms = {deadline_ms}\nsweep_interval_ms = {sweep_ms}\n\n'
            '[callbacks]\nretry_schedule_ms = [0, 300, 300]\ntimeout_ms = 2000\n\n'
            + blocks +
            '[[providers]]\nname = "local"\ntype = "local"\n\n'
            f'[[models]]\nid = "gpt-image-2"\nchannels = [{chan}]\n' + PRICE + extra_models)


def create(srv, key, body, path="/api/v1/images/generations"):
    r = requests.post(srv.url + path, json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})
    return r


def create_task(srv, key, prompt="a red fox", **extra):
    r = create(srv, key, {"model": "gpt-image-2", "prompt": prompt, **extra})
    assert r.status_code == 200, r.text
    body = jloads(r.text)
    assert body["status"] == "pending", body
    return body["id"]


def task(srv, key, task_id):
    r = srv.get(f"/api/v1/images/tasks/{task_id}", key=key)
    assert r.status_code == 200, r.text
    return jloads(r.text)


def wait_final(srv, key, task_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        body = task(srv, key, task_id)
        if body["status"] in FINAL:
            return body
        assert time.monotonic() < deadline, f"task {task_id} never finished: {body}"
        time.sleep(0.05)


def job_ids_created_upstream(fake) -> list:
    """The imagegate job id of every createTask the fake accepted (from its callBackUrl)."""
    out = []
    for t in fake.stats()["tasks"].values():
        m = re.search(r"/v1/upstream/[^/]+/([^/?]+)\?", t.get("callBackUrl") or "")
        assert m, t
        out.append(m.group(1))
    return out


def settlements(srv, job_id) -> list:
    con = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in con.execute(
            "SELECT kind FROM ledger WHERE job_id = ? AND kind IN ('settle', 'refund')", (job_id,))]
    finally:
        con.close()


@pytest.fixture(scope="module")
def kie():
    fake = FakeKie(delay_ms=300)
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def fake(kie):
    kie.reset()
    return kie


_users = iter(range(10_000))


def user(srv, credits_=20):
    return srv.create_user(f"engine{next(_users)}@example.com", credits=credits_)


# ---- the Kie protocol ---------------------------------------------------------------------------

def test_kie_task_finishes_early_on_the_upstream_callback(factory, fake):
    # Polling every 30 s: only the upstream's callback can finish this within seconds.
    srv = factory.server(config([("kie", fake)], poll_ms=30_000))
    key = user(srv)
    started = time.monotonic()
    task_id = create_task(srv, key, "a lighthouse", size="1536x1024")
    body = wait_final(srv, key, task_id, timeout=20)
    assert body["status"] == "succeeded", body
    assert time.monotonic() - started < 15
    [created] = fake.stats()["tasks"].values()
    assert created["model"] == "gpt-image-2-text-to-image"
    assert created["input"]["prompt"] == "a lighthouse"
    assert created["input"]["aspect_ratio"] == "3:2" and created["input"]["resolution"] == "1K"
    assert created["callbacks"] == [200]  # imagegate accepted the signed callback
    # The result was downloaded into imagegate before the task succeeded.
    [item] = body["data"]
    assert item["url"].startswith(srv.url + "/api/jobs/")
    img = requests.get(item["url"], timeout=10)
    assert img.status_code == 200 and image_info(img.content)["width"] == 64
    assert credits(srv, key) == {"credits": 19, "reserved": 0}
    assert_ledger_ok(srv)


def test_lost_callbacks_are_covered_by_polling(factory, fake):
    fake.control(mode="no_callback")
    srv = factory.server(config([("kie", fake)], poll_ms=200))
    key = user(srv)
    body = wait_final(srv, key, create_task(srv, key))
    assert body["status"] == "succeeded", body
    assert fake.stats()["callbacks_sent"] == 0


def test_image_to_image_hands_the_upstream_fetchable_input_urls(factory, fake):
    srv = factory.server(config([("kie", fake)], poll_ms=200))
    key = user(srv)
    png = make_png(96, 64, seed=7)
    task_id = create_task(srv, key, "make it blue", image_urls=[data_url(png)])
    assert wait_final(srv, key, task_id)["status"] == "succeeded"
    [created] = fake.stats()["tasks"].values()
    assert created["model"] == "gpt-image-2-image-to-image"
    [url] = created["input"]["input_urls"]
    assert url.startswith(srv.url + "/v1/files/"), url
    # Handed over as a signed URL; the inputs are deleted once the task is final.
    assert requests.get(url, timeout=10).status_code == 404


@pytest.mark.parametrize("mode", ["fail", "result_404"])
def test_upstream_failure_fails_the_task_and_refunds(factory, fake, mode):
    fake.control(mode=mode)
    srv = factory.server(config([("kie", fake)], poll_ms=200))
    key = user(srv)
    body = wait_final(srv, key, create_task(srv, key))
    assert body["status"] == "failed", body
    assert credits(srv, key) == {"credits": 20, "reserved": 0}
    assert_ledger_ok(srv)


def test_duplicate_upstream_callbacks_settle_once(factory, fake):
    fake.control(mode="duplicate_callbacks")
    srv = factory.server(config([("kie", fake)], poll_ms=30_000))
    key = user(srv)
    ids = [create_task(srv, key, f"dup {i}") for i in range(5)]
    for task_id in ids:
        assert wait_final(srv, key, task_id)["status"] == "succeeded"
    deadline = time.monotonic() + 10
    while fake.stats()["callbacks_sent"] < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    for task_id in ids:
        assert settlements(srv, task_id) == ["settle"]
    assert credits(srv, key) == {"credits": 15, "reserved": 0}
    assert_ledger_ok(srv)


def test_create_refused_fails_over_to_the_next_channel(factory, fake):
    fake.control(fail_first_n_creates=1)
    srv = factory.server(config([("kie", fake)], channels=["kie", "local"], poll_ms=200))
    key = user(srv)
    body = wait_final(srv, key, create_task(srv, key))
    assert body["status"] == "succeeded", body
    assert fake.stats()["tasks"] == {}  # the 503 created nothing upstream
    assert credits(srv, key) == {"credits": 19, "reserved": 0}


def test_never_finishing_upstream_task_is_failed_by_the_deadline_sweep(factory, fake):
    fake.control(mode="never_finish")
    srv = factory.server(config([("kie", fake)], poll_ms=100, deadline_ms=2_000, sweep_ms=100))
    key = user(srv)
    task_id = create_task(srv, key)
    body = wait_final(srv, key, task_id, timeout=20)
    assert body["status"] == "failed"
    generic = jloads(srv.get(f"/v1/tasks/{task_id}", key=key).text)
    assert generic["error"]["code"] == "timeout", generic
    assert credits(srv, key) == {"credits": 20, "reserved": 0}
    assert settlements(srv, task_id) == ["refund"]
    assert_ledger_ok(srv)


def test_forged_upstream_callbacks_are_refused(factory, fake):
    srv = factory.server(config([("kie", fake)]))
    r = requests.post(srv.url + "/v1/upstream/kie/img_x?exp=9999999999&sig=" + "A" * 43,
                      json={"code": 200}, timeout=10)
    assert_openai_error(r, 403)
    r = requests.post(srv.url + "/v1/upstream/kie/img_x", json={}, timeout=10)
    assert_openai_error(r, 403)


def test_channel_concurrency_is_bounded(factory, fake):
    fake.control(delay_ms=600)
    cfg = config([("kie", fake)], poll_ms=100).replace(
        'poll_interval_ms = 100\n', 'poll_interval_ms = 100\nmax_concurrent = 2\n', 1)
    srv = factory.server(cfg)
    key = user(srv)
    ids = [create_task(srv, key, f"bounded {i}") for i in range(6)]
    peak = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = fake.stats()["tasks"].values()
        peak = max(peak, sum(t["state"] not in ("success", "fail") for t in tasks))
        if len(tasks) == 6 and all(t["state"] == "success" for t in tasks):
            break
        time.sleep(0.02)
    assert peak == 2, peak
    for task_id in ids:
        assert wait_final(srv, key, task_id)["status"] == "succeeded"


# ---- profiles --------------------------------------------------------------------------------

def test_key_profile_overrides_the_deployment_profile(factory):
    srv = factory.server('[[providers]]\nname = "local"\ntype = "local"\n\n'
                         '[[models]]\nid = "gpt-image-2"\nchannels = ["local"]\n' + PRICE)
    plain = user(srv)
    srv.cli_ok("users", "add", "profiled@example.com", "--password", "correct-horse-battery")
    profiled = srv.cli_ok("keys", "create", "profiled@example.com", "--profile", "seed002").strip()
    srv.cli_ok("credits", "grant", "profiled@example.com", "5")
    listing = srv.cli_ok("keys", "list", "profiled@example.com")
    assert "seed002" in listing, listing

    sync = create(srv, plain, {"model": "gpt-image-2", "prompt": "x"})
    assert sync.status_code == 200 and "data" in sync.json() and sync.json()["data"], sync.text
    pending = create(srv, profiled, {"model": "gpt-image-2", "prompt": "x"})
    assert pending.status_code == 200 and pending.json()["status"] == "pending", pending.text
    assert wait_final(srv, profiled, pending.json()["id"])["status"] == "succeeded"

    rc, _, err = srv.cli("keys", "create", "profiled@example.com", "--profile", "seed009")
    assert rc != 0 and "--profile must be seed001 or seed002" in err


# ---- restarts and races ------------------------------------------------------------------------

def test_kill_9_with_50_tasks_in_flight_loses_nothing(factory):
    fast, slow = FakeKie(delay_ms=300), FakeKie(delay_ms=4_000)
    try:
        slow_model = ('[[models]]\nid = "slow-image"\nchannels = ["slow"]\n' + PRICE)
        srv = factory.server(config([("fast", fast), ("slow", slow)], poll_ms=300,
                                    max_running=20, extra_models=slow_model))
        key = user(srv, credits_=100)
        ids = []
        for i in range(50):
            model = "gpt-image-2" if i % 2 == 0 else "slow-image"
            r = create(srv, key, {"model": model, "prompt": f"task {i}"})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        time.sleep(1.0)
        srv.kill()  # SIGKILL: no drain, no cleanup
        srv.start()
        for task_id in ids:
            wait_final(srv, key, task_id, timeout=60)
        for task_id in ids:
            assert len(settlements(srv, task_id)) == 1, task_id
        # Nothing was submitted upstream twice.
        created = job_ids_created_upstream(fast) + job_ids_created_upstream(slow)
        assert len(created) == len(set(created)), created
        succeeded = sum(task(srv, key, t)["status"] == "succeeded" for t in ids)
        assert succeeded >= 40, succeeded  # only tasks caught mid-createTask may be refunded
        c = credits(srv, key)
        assert c["reserved"] == 0 and c["credits"] == 100 - succeeded
        assert_ledger_ok(srv)
    finally:
        fast.close()
        slow.close()


def test_callback_poller_and_sweep_racing_settle_each_job_once(factory, fake):
    # The upstream finishes right around the deadline; callbacks, 50 ms polls and a 50 ms sweep
    # all try to finish the same jobs.
    fake.control(delay_ms=1_000, mode="duplicate_callbacks")
    srv = factory.server(config([("kie", fake)], poll_ms=50, deadline_ms=1_000, sweep_ms=50))
    key = user(srv, credits_=30)
    ids = [create_task(srv, key, f"race {i}") for i in range(20)]
    for task_id in ids:
        wait_final(srv, key, task_id, timeout=30)
    time.sleep(1.0)  # late callbacks and polls land on finished jobs
    outcomes = {}
    for task_id in ids:
        kinds = settlements(srv, task_id)
        assert len(kinds) == 1, (task_id, kinds)
        outcomes[task_id] = kinds[0]
        assert (task(srv, key, task_id)["status"] == "succeeded") == (kinds[0] == "settle")
    charged = sum(k == "settle" for k in outcomes.values())
    assert credits(srv, key) == {"credits": 30 - charged, "reserved": 0}
    assert_ledger_ok(srv)


def test_sigterm_lets_running_tasks_finish_within_the_grace(factory):
    """A graceful stop gives running async jobs the rest of shutdown_grace_ms (an upstream that
    cannot be asked about a task after a restart would otherwise have it failed and refunded);
    queued ones stay queued for the next start."""
    srv = factory.server('[server]\nshutdown_grace_ms = 10000\n\n'
                         '[tasks]\nprofile = "seed002"\nmax_running = 1\n\n'
                         '[[providers]]\nname = "slow"\ntype = "local"\nlatency_ms = 1500\n\n'
                         '[[models]]\nid = "gpt-image-2"\nchannels = ["slow"]\n' + PRICE)
    key = user(srv, credits_=10)
    first = create_task(srv, key, prompt="runs")
    second = create_task(srv, key, prompt="waits")  # max_running = 1: queued behind the first
    time.sleep(0.3)
    t0 = time.monotonic()
    assert srv.stop(timeout=20) == 0
    waited = time.monotonic() - t0
    assert waited > 0.8, f"exited after {waited:.2f}s without waiting for the running task"
    con = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True, timeout=5)
    try:
        status = dict(con.execute("SELECT id, status FROM jobs WHERE id IN (?, ?)",
                                  (first, second)).fetchall())
    finally:
        con.close()
    assert status == {first: "succeeded", second: "queued"}, status
    srv.start()
    assert wait_final(srv, key, second)["status"] == "succeeded"
    assert credits(srv, key) == {"credits": 8, "reserved": 0}
    assert_ledger_ok(srv)
