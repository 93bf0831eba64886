"""Async tasks: each seed's create -> poll -> result flow against its exact JSON, cancel, list,
and the bad inputs of the task endpoints. The jobs run on the built-in `local` renderer."""

import time
from decimal import Decimal

import pytest
import requests

from imgutil import assert_ledger_ok, assert_openai_error, credits, image_info, jloads

PRICE = "[models.price]\nkind = \"per_tier\"\nprices = { 1K = 1, 2K = 2, 4K = 3 }\n"


def config(latency_ms=200, failure_percent=0, max_running=256, profile="seed001"):
    return (f'[tasks]\nprofile = "{profile}"\nmax_running = {max_running}\n\n'
            f'[[providers]]\nname = "local"\ntype = "local"\nlatency_ms = {latency_ms}\n'
            f'failure_percent = {failure_percent}\nfailures_retryable = false\n\n'
            '[[models]]\nid = "gpt-image-2"\naliases = ["gpt-image-2-all"]\nchannels = ["local"]\n'
            + PRICE)


def post(srv, key, body, path="/v1/images/generations", headers=None):
    return requests.post(srv.url + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {key}", **(headers or {})})


def poll(srv, key, path, final=("completed", "failed", "succeeded", "canceled"), timeout=30.0,
         status_of=lambda b: b["status"]):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        r = srv.get(path, key=key)
        assert r.status_code == 200, r.text
        body = jloads(r.text)
        status = status_of(body)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in final:
            return body, seen
        assert time.monotonic() < deadline, f"task never finished: {seen}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def _srv(module_factory):
    return module_factory.server(config())


@pytest.fixture
def srv(_srv):
    _srv.ensure_running()
    return _srv


_users = iter(range(10_000))


@pytest.fixture
def key(srv):
    return srv.create_user(f"tasks{next(_users)}@example.com", credits=20)


def download(srv, key, url):
    assert url.startswith(srv.url + "/"), url
    r = requests.get(url, timeout=10, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.content


# ---- seed 003: the `input` object, GET /v1/tasks/{id} ----------------------------------------

def test_seed003_create_poll_completed(srv, key):
    r = post(srv, key, {"model": "gpt-image-2",
                        "input": {"prompt": "一个雨夜霓虹城市海报", "aspect_ratio": "16:9",
                                  "nsfw_checker": True}})
    assert r.status_code == 200, r.text
    created = jloads(r.text)
    assert set(created) == {"code", "msg", "data"}
    assert created["code"] == 200 and created["msg"] == "success"
    task_id = created["data"]["taskId"]
    assert isinstance(task_id, str) and len(task_id) >= 20
    assert credits(srv, key)["reserved"] == 1  # the 1K price is held while it runs

    body, seen = poll(srv, key, f"/v1/tasks/{task_id}")
    assert seen[0] in ("pending", "processing")
    assert body["status"] == "completed", body
    assert body["id"] == task_id and body["model"] == "gpt-image-2"
    assert isinstance(body["created_at"], int) and body["completed_at"] >= body["created_at"]
    assert set(body["output"]) == {"urls", "metadata"}
    assert set(body["output"]["metadata"]) == {"model", "costTime"}
    assert "error" not in body
    [url] = body["output"]["urls"]
    info = image_info(download(srv, key, url))
    assert (info["width"], info["height"]) == (1280, 720)
    assert credits(srv, key) == {"credits": 19, "reserved": 0}


def test_seed003_failure_reads_failed_with_error_and_refunds(module_factory):
    srv = module_factory.server(config(failure_percent=100))
    key = srv.create_user("fails@example.com", credits=5)
    r = post(srv, key, {"model": "gpt-image-2", "input": {"prompt": "doomed"}})
    assert r.status_code == 200, r.text
    task_id = jloads(r.text)["data"]["taskId"]
    body, _ = poll(srv, key, f"/v1/tasks/{task_id}")
    assert body["status"] == "failed"
    assert set(body["error"]) == {"code", "message"} and body["error"]["code"]
    assert "output" not in body
    assert credits(srv, key) == {"credits": 5, "reserved": 0}
    assert_ledger_ok(srv)


# ---- seed 001: aspect_ratio + resolution on /api/v1, GET ?task_id= -----------------------------

def test_seed001_ratio_and_tier_is_a_task_polled_by_task_id(srv, key):
    r = post(srv, key, {"model": "gpt-image-2-all", "prompt": "a lighthouse on a cliff at dusk",
                        "aspect_ratio": "9:16", "resolution": "2K", "quality": "medium"},
             path="/api/v1/images/generations")
    assert r.status_code == 200, r.text
    created = jloads(r.text)
    assert created["code"] == 200 and set(created["data"]) == {"taskId"}
    task_id = created["data"]["taskId"]
    body, _ = poll(srv, key, f"/api/v1/images/generations?task_id={task_id}",
                   status_of=lambda b: b["data"]["status"])
    assert body["code"] == 200
    task = body["data"]
    assert task["status"] == "completed" and task["taskId"] == task_id
    [url] = task["output"]["urls"]
    info = image_info(download(srv, key, url))
    assert (info["width"], info["height"]) == (1152, 2048)
    assert credits(srv, key)["credits"] == 18  # 2K


def test_seed001_wxh_size_stays_sync(srv, key):
    r = post(srv, key, {"model": "gpt-image-2-all", "prompt": "sync", "size": "1024x1024",
                        "response_format": "url"}, path="/api/v1/images/generations")
    assert r.status_code == 200, r.text
    assert "data" in jloads(r.text) and "url" in jloads(r.text)["data"][0]


def test_task_id_query_is_required(srv, key):
    r = srv.get("/api/v1/images/generations", key=key)
    assert_openai_error(r, 400, param="task_id")


# ---- seed 002: the deployment profile, GET /api/v1/images/tasks/{id} ---------------------------

def test_seed002_profile_always_answers_a_pending_task(module_factory):
    srv = module_factory.server(config(profile="seed002", latency_ms=300))
    key = srv.create_user("seed002@example.com", credits=30)
    r = post(srv, key, {"model": "gpt-image-2",
                        "prompt": "A cinematic product photo of a matte black coffee bag",
                        "size": "1536x1024", "quality": "high", "n": 1},
             path="/api/v1/images/generations")
    assert r.status_code == 200, r.text
    created = jloads(r.text)
    assert set(created) == {"id", "object", "created", "model", "status", "credits", "data"}
    assert created["object"] == "image.generation" and created["status"] == "pending"
    assert created["model"] == "gpt-image-2" and created["data"] == []
    assert Decimal(str(created["credits"])) == 1
    body, seen = poll(srv, key, f"/api/v1/images/tasks/{created['id']}")
    assert body["status"] == "succeeded", body
    assert body["created"] == created["created"]
    [item] = body["data"]
    assert set(item) == {"url"}
    info = image_info(download(srv, key, item["url"]))
    assert (info["width"], info["height"]) == (1536, 1024)
    # The same job reads in seed 003's dialect too.
    generic = jloads(srv.get(f"/v1/tasks/{created['id']}", key=key).text)
    assert generic["status"] == "completed" and generic["output"]["urls"] == [item["url"]]
    # The /v1 path keeps OpenAI's sync behaviour under this profile.
    r = post(srv, key, {"model": "gpt-image-2", "prompt": "sync", "response_format": "url"})
    assert r.status_code == 200 and "url" in jloads(r.text)["data"][0], r.text


def test_prefer_respond_async_makes_a_task(srv, key):
    r = post(srv, key, {"model": "gpt-image-2", "prompt": "later please"},
             headers={"Prefer": "respond-async, wait=0"})
    assert r.status_code == 200, r.text
    task_id = jloads(r.text)["data"]["taskId"]
    body, _ = poll(srv, key, f"/v1/tasks/{task_id}")
    assert body["status"] == "completed"


# ---- cancel and list ---------------------------------------------------------------------------

def test_cancel_refunds_a_queued_task_and_refuses_others(module_factory):
    srv = module_factory.server(config(latency_ms=1500, max_running=1))
    key = srv.create_user("cancel@example.com", credits=10)
    first = jloads(post(srv, key, {"model": "gpt-image-2", "input": {"prompt": "one"}}).text)
    second = jloads(post(srv, key, {"model": "gpt-image-2", "input": {"prompt": "two"}}).text)
    first_id, second_id = first["data"]["taskId"], second["data"]["taskId"]
    assert credits(srv, key) == {"credits": 8, "reserved": 2}

    r = srv.request("POST", f"/v1/tasks/{second_id}/cancel", key=key)
    assert r.status_code == 200, r.text
    body = jloads(r.text)
    assert body["status"] == "failed" and body["error"]["code"] == "canceled"
    assert credits(srv, key) == {"credits": 9, "reserved": 1}
    # Canceling again, or canceling the running one, is a 409 with an OpenAI error body.
    assert_openai_error(srv.request("POST", f"/v1/tasks/{second_id}/cancel", key=key), 409)
    poll(srv, key, f"/v1/tasks/{first_id}", final=("processing",))
    assert_openai_error(srv.request("POST", f"/v1/tasks/{first_id}/cancel", key=key), 409)
    done, _ = poll(srv, key, f"/v1/tasks/{first_id}")
    assert done["status"] == "completed"
    # The canceled task never ran: still canceled, nothing charged for it.
    assert jloads(srv.get(f"/api/v1/images/tasks/{second_id}", key=key).text)["status"] == "canceled"
    assert credits(srv, key) == {"credits": 9, "reserved": 0}
    assert_openai_error(srv.request("POST", f"/v1/tasks/{first_id}/cancel", key=key), 409)
    assert_ledger_ok(srv)


def test_list_is_the_owners_only_newest_first_and_paginated(srv, key):
    other = srv.create_user("other-lister@example.com", credits=5)
    ids = []
    for i in range(3):
        r = post(srv, key, {"model": "gpt-image-2", "input": {"prompt": f"list {i}"}})
        ids.append(jloads(r.text)["data"]["taskId"])
    post(srv, other, {"model": "gpt-image-2", "input": {"prompt": "not yours"}})
    for task_id in ids:
        poll(srv, key, f"/v1/tasks/{task_id}")

    page = jloads(srv.get("/v1/tasks?limit=2", key=key).text)
    assert page["object"] == "list" and page["has_more"] is True
    assert [t["id"] for t in page["data"]] == ids[::-1][:2]
    rest = jloads(srv.get(f"/v1/tasks?limit=2&after={page['last_id']}", key=key).text)
    assert [t["id"] for t in rest["data"]] == [ids[0]] and rest["has_more"] is False
    done = jloads(srv.get("/v1/tasks?status=completed&limit=100", key=key).text)
    assert {t["id"] for t in done["data"]} == set(ids)
    assert all(t["status"] == "completed" for t in done["data"])
    assert jloads(srv.get("/v1/tasks?status=pending", key=key).text)["data"] == []
    assert_openai_error(srv.get("/v1/tasks?status=bogus", key=key), 400, param="status")
    assert_openai_error(srv.get("/v1/tasks?limit=0", key=key), 400, param="limit")
    assert_openai_error(srv.get("/v1/tasks?limit=abc", key=key), 400, param="limit")
    assert_openai_error(srv.get("/v1/tasks?after=job_unknown", key=key), 400, param="after")


def test_unknown_foreign_and_huge_ids_are_task_not_found(srv, key):
    other = srv.create_user("other-owner@example.com", credits=5)
    task_id = jloads(post(srv, other, {"model": "gpt-image-2",
                                       "input": {"prompt": "mine"}}).text)["data"]["taskId"]
    for path in (f"/v1/tasks/{task_id}", f"/api/v1/images/tasks/{task_id}",
                 f"/api/v1/images/generations?task_id={task_id}", "/v1/tasks/job_nope",
                 "/v1/tasks/" + "a" * 10_000, "/api/v1/images/generations?task_id=" + "a" * 10_000):
        assert_openai_error(srv.get(path, key=key), 404, code="task_not_found")
    assert_openai_error(srv.request("POST", f"/v1/tasks/{task_id}/cancel", key=key), 404,
                        code="task_not_found")
    poll(srv, other, f"/v1/tasks/{task_id}")


# ---- bad input: 400 naming the field, nothing charged ------------------------------------------

@pytest.mark.parametrize("body,param", [
    ({"model": "gpt-image-2", "prompt": "x", "callback_url": "ftp://example.com/hook"},
     "callback_url"),
    ({"model": "gpt-image-2", "prompt": "x", "callback_url": "not a url"}, "callback_url"),
    ({"model": "gpt-image-2", "prompt": "x", "callback_url": "http://127.0.0.1:9/hook"},
     "callback_url"),
    ({"model": "gpt-image-2", "prompt": "x", "callback_url": "http://[::1]/hook"}, "callback_url"),
    ({"model": "gpt-image-2", "prompt": "x", "callback_url": "http://10.0.0.8/hook"},
     "callback_url"),
    ({"model": "gpt-image-2", "prompt": "x", "callback_url": "http://localhost/hook"},
     "callback_url"),
    ({"model": "gpt-image-2", "prompt": "x", "callback_url": "http://169.254.169.254/"},
     "callback_url"),
    ({"model": "gpt-image-2", "input": "a string"}, "input"),
    ({"model": "gpt-image-2", "input": {"aspect_ratio": "1:1"}}, "prompt"),
    ({"model": "gpt-image-2", "prompt": "x", "stream": True, "callback_url":
      "https://example.com/hook"}, "stream"),
])
def test_bad_task_requests_are_400_and_charge_nothing(srv, key, body, param):
    before = credits(srv, key)
    r = post(srv, key, body)
    err = assert_openai_error(r, 400)
    assert err["param"] in (param, f"input.{param}"), err
    assert credits(srv, key) == before
