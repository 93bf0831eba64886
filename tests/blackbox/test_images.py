"""Image generation and editing against the default deployment (model gpt-image-2 served by the
built-in local renderer, seed 000 prices: 1/2/3 credits at 1K/2K/4K, times n)."""

import base64
import itertools
import json
import time
from decimal import Decimal

import pytest
import requests

from conftest import shared_server
from imgutil import (IMG_TIMEOUT, MIME, assert_charge_headers, assert_openai_error, b64_image,
                     credits, data_url, edit_multipart, generate, image_info, job_id_from_url,
                     jloads, local_path, make_png, png_is_complete, read_sse)

_emails = itertools.count()


@pytest.fixture(scope="module")
def _srv(module_factory):
    return module_factory.server()


@pytest.fixture
def srv(_srv):
    yield from shared_server(_srv)


@pytest.fixture(scope="module")
def _key(_srv):
    return _srv.create_user("images@example.com", credits=10000)


@pytest.fixture
def key(srv, _key):
    """The module's user (10,000 credits; tests check balances relative to the start); no hold
    may stay open after any test."""
    yield _key
    assert credits(srv, _key)["reserved"] == 0, "a hold stayed open"


def check_reply(srv, r, n=1, fmt="png", size=None, want_b64=True, want_url=True):
    """The OpenAI image reply shape; returns [image bytes] (from b64_json or the URL)."""
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert r.headers.get("X-Job-Id", "").startswith("img_"), r.headers
    body = r.json()
    for k in ("created", "data", "background", "output_format", "quality", "size"):
        assert k in body, f"reply without {k!r}: {json.dumps(body)[:400]}"
    assert isinstance(body["created"], int) and body["created"] > 1_600_000_000, body["created"]
    assert body["output_format"] == fmt, body["output_format"]
    assert isinstance(body["data"], list) and len(body["data"]) == n, body["data"]
    images = []
    for i, item in enumerate(body["data"]):
        assert ("b64_json" in item) == want_b64, f"b64_json presence != {want_b64}: {list(item)}"
        assert ("url" in item) == want_url, f"url presence != {want_url}: {list(item)}"
        if want_url:
            path = local_path(srv, item["url"])
            job_id_from_url(item["url"])
            if n > 1:
                assert path.endswith(f"?index={i}"), path
        img = b64_image(item) if want_b64 else srv.get(local_path(srv, item["url"])).content
        info = image_info(img)
        assert info["format"] == fmt, info
        if size is not None:
            assert (info["width"], info["height"]) == size, f"image is {info}, expected {size}"
        images.append(img)
    if size is not None:
        assert body["size"] == f"{size[0]}x{size[1]}", body["size"]
    return images


# ---- the basics -----------------------------------------------------------------------------

def test_generate_default(srv, key):
    before = credits(srv, key)
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "a cat in a space helmet"})
    [img] = check_reply(srv, r, size=(1024, 1024))
    assert png_is_complete(img)
    assert_charge_headers(r, 1, before["credits"] - 1)
    assert credits(srv, key) == {"credits": before["credits"] - 1, "reserved": 0}
    # b64_json and url carry the same bytes; the URL needs no auth and is served safely.
    url = r.json()["data"][0]["url"]
    job_id = job_id_from_url(url)
    assert len(job_id) >= 16 and job_id.replace("_", "").replace("-", "").isalnum(), job_id
    g = requests.get(url, timeout=10)
    assert g.status_code == 200
    assert g.content == img
    assert g.headers["Content-Type"] == "image/png"
    assert g.headers.get("X-Content-Type-Options") == "nosniff"
    assert g.headers.get("ETag")
    assert g.headers.get("Cache-Control")
    assert g.headers.get("Accept-Ranges") == "bytes"


def test_generate_without_model_uses_default(srv, key):
    r = generate(srv, key, {"prompt": "a shiba under cherry blossoms", "size": "1024x1024"})
    check_reply(srv, r, size=(1024, 1024))
    assert_charge_headers(r, 1)


def test_bootstrap_key_has_100_credits(srv):
    key = srv.bootstrap_key
    assert credits(srv, key) == {"credits": 100, "reserved": 0}
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "first image"})
    check_reply(srv, r)
    assert r.headers["X-Credits-Charged"] == "1"
    assert r.headers["X-Credits-Remaining"] == "99"
    assert credits(srv, key) == {"credits": 99, "reserved": 0}


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2-all", "gpt-image-2-text-to-image",
                                   "gpt-image-2-image-to-image"])
def test_prefixes_and_aliases(srv, key, prefix, model):
    r = generate(srv, key, {"model": model, "prompt": "a red square", "size": "1024x1024"},
                 path=prefix + "/images/generations")
    check_reply(srv, r, size=(1024, 1024))
    assert_charge_headers(r, 1)


# ---- sizes and prices (seed 004's ratio x tier table, seed 000's prices) ------------------------

SIZES = [
    # (request fields, expected WxH, credits)
    ({"size": "1536x1024"}, (1536, 1024), 1),
    ({"size": "1024x1536"}, (1024, 1536), 1),
    ({"size": "16:9", "quality": "standard"}, (1280, 720), 1),
    ({"size": "16:9"}, (1280, 720), 1),
    ({"size": "16:9", "quality": "hd"}, (2048, 1152), 2),
    ({"size": "9:16", "quality": "hd"}, (1152, 2048), 2),
    ({"size": "1:1", "quality": "hd"}, (2048, 2048), 2),
    ({"size": "4:3"}, (1024, 768), 1),
    ({"size": "5:4"}, (1040, 832), 1),
    ({"size": "21:9"}, (1344, 576), 1),
    ({"size": "3:2", "quality": "hd"}, (2064, 1376), 2),
    ({"size": "2048x2048"}, (2048, 2048), 2),
    ({"size": "1:1", "resolution": "2k"}, (2048, 2048), 2),
    ({"size": "16:9", "quality": "uhd"}, (3840, 2160), 3),
]


@pytest.mark.parametrize("fields,dims,price", SIZES, ids=[json.dumps(s[0]) for s in SIZES])
def test_exact_size_and_price(srv, key, fields, dims, price):
    before = credits(srv, key)["credits"]
    r = generate(srv, key, dict({"model": "gpt-image-2", "prompt": "a lighthouse at dusk"}, **fields))
    check_reply(srv, r, size=dims)
    assert_charge_headers(r, price, before - price)
    assert credits(srv, key) == {"credits": before - price, "reserved": 0}


def test_n_2_images_and_job(srv, key):
    before = credits(srv, key)["credits"]
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "two cats", "n": 2, "size": "1024x1024"})
    imgs = check_reply(srv, r, n=2, size=(1024, 1024))
    assert_charge_headers(r, 2, before - 2)
    urls = [d["url"] for d in r.json()["data"]]
    assert len(set(urls)) == 2
    job_ids = {job_id_from_url(u) for u in urls}
    assert len(job_ids) == 1, urls
    for u, img in zip(urls, imgs):
        g = requests.get(u, timeout=10)
        assert g.status_code == 200 and g.content == img
    job_id = job_ids.pop()
    j = srv.get(f"/api/jobs/{job_id}", key=key)
    assert j.status_code == 200, j.text
    job = j.json()
    assert job["id"] == job_id
    assert job["object"] == "image.job"
    assert job["status"] == "succeeded"
    assert job["model"] == "gpt-image-2"
    assert Decimal(str(job["credits_charged"])) == 2
    assert [d["url"] for d in job["data"]] == urls


def test_boundaries_accepted(srv, key):
    """n = 10 and a 32,000-character prompt are the documented maxima; size auto is allowed."""
    before = credits(srv, key)["credits"]
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "ten", "n": 10, "size": "16:9",
                            "response_format": "url"})
    check_reply(srv, r, n=10, want_b64=False, size=(1280, 720))
    assert_charge_headers(r, 10, before - 10)
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "p" * 32000, "size": "auto"})
    check_reply(srv, r)
    assert_charge_headers(r, 1, before - 11)


@pytest.mark.parametrize("fmt", ["url", "b64_json"])
def test_response_format(srv, key, fmt):
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "a boat", "response_format": fmt})
    check_reply(srv, r, size=(1024, 1024), want_b64=(fmt == "b64_json"), want_url=(fmt == "url"))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_format(srv, key, fmt):
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "a tree", "output_format": fmt,
                            "size": "1024x768"})
    [img] = check_reply(srv, r, fmt=fmt, size=(1024, 768))
    g = requests.get(r.json()["data"][0]["url"], timeout=10)
    assert g.status_code == 200 and g.content == img
    assert g.headers["Content-Type"] == MIME[fmt]


def test_output_compression_accepted(srv, key):
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "a tree", "output_format": "jpeg",
                            "output_compression": 50})
    check_reply(srv, r, fmt="jpeg", size=(1024, 1024))


def test_background_transparent_png_has_alpha(srv, key):
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "a logo", "background": "transparent"})
    [img] = check_reply(srv, r, size=(1024, 1024))
    assert r.json()["background"] == "transparent"
    assert image_info(img)["color_type"] == 6, image_info(img)


# ---- the image URL: ranges, caching, ownership -----------------------------------------------

@pytest.fixture
def one_image(srv, key):
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "range me"})
    [img] = check_reply(srv, r)
    return r.json()["data"][0]["url"], img


def test_image_url_range_requests(srv, one_image):
    url, img = one_image
    total = len(img)
    r = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=10)
    assert r.status_code == 206, r.status_code
    assert r.content == img[:100]
    assert r.headers["Content-Range"] == f"bytes 0-99/{total}"
    r = requests.get(url, headers={"Range": "bytes=-10"}, timeout=10)
    assert r.status_code == 206 and r.content == img[-10:]
    r = requests.get(url, headers={"Range": f"bytes={total - 5}-"}, timeout=10)
    assert r.status_code == 206 and r.content == img[-5:]
    r = requests.get(url, headers={"Range": f"bytes={total}-"}, timeout=10)
    assert r.status_code == 416, r.status_code
    assert r.headers.get("Content-Range") == f"bytes */{total}"
    assert_openai_error(r, 416)
    assert r.json()["error"]["param"] == "range"


def test_image_url_etag_304(srv, one_image):
    url, img = one_image
    r = requests.get(url, timeout=10)
    etag = r.headers["ETag"]
    r2 = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert r2.status_code == 304, r2.status_code
    assert r2.content == b""
    # A 304's Content-Length would have to be the 200's (RFC 9110 §8.6): none is sent.
    assert "Content-Length" not in r2.headers, r2.headers
    assert r2.headers["ETag"] == etag
    r3 = requests.get(url, headers={"If-None-Match": '"something-else"'}, timeout=10)
    assert r3.status_code == 200 and r3.content == img


def test_image_url_unknown_job_404(srv, one_image):
    url, _ = one_image
    job_id = job_id_from_url(url)
    bogus = url.replace(job_id, job_id[:-4] + ("aaaa" if not job_id.endswith("aaaa") else "bbbb"))
    assert requests.get(bogus, timeout=10).status_code == 404
    assert requests.get(url.split("?")[0] + "?index=7", timeout=10).status_code in (400, 404)


def test_job_visible_only_to_owner(srv, key, one_image):
    url, _ = one_image
    job_id = job_id_from_url(url)
    r = srv.get(f"/api/jobs/{job_id}", key=key)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["id"] == job_id and job["object"] == "image.job" and job["status"] == "succeeded"
    assert job["model"] == "gpt-image-2"
    assert Decimal(str(job["credits_charged"])) == 1
    assert [d["url"] for d in job["data"]] == [url]
    assert job["params"]["prompt"] and job["params"]["size"] == "1024x1024", job["params"]
    assert "task" not in job["params"]
    assert job["created_at"] <= job["started_at"] <= job["completed_at"], job
    other = srv.create_user(f"other{next(_emails)}@example.com", credits=5)
    assert_openai_error(srv.get(f"/api/jobs/{job_id}", key=other), 404)
    assert srv.get(f"/api/jobs/{job_id}").status_code == 401


# ---- streaming -----------------------------------------------------------------------------

def stream(srv, key, path, **kw):
    h = {"Authorization": f"Bearer {key}"}
    return requests.post(srv.url + path, headers=h, stream=True, timeout=IMG_TIMEOUT, **kw)


def check_stream(r, prefix, size):
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"].startswith("text/event-stream"), r.headers
    events = read_sse(r)
    names = [e[0] for e in events]
    assert names == [f"{prefix}.partial_image", f"{prefix}.partial_image", f"{prefix}.completed"], names
    for i, (name, data) in enumerate(events[:2]):
        assert data["type"] == name, data.get("type")
        assert data["partial_image_index"] == i
        image_info(base64.b64decode(data["b64_json"]))
    name, done = events[2]
    assert done["type"] == name
    info = image_info(base64.b64decode(done["b64_json"]))
    assert (info["width"], info["height"]) == size, info
    assert isinstance(done.get("usage"), dict), done.keys()


def test_stream_generation(srv, key):
    before = credits(srv, key)["credits"]
    with stream(srv, key, "/v1/images/generations",
                json={"model": "gpt-image-2", "prompt": "a comet", "stream": True, "partial_images": 2,
                      "size": "1536x1024"}) as r:
        # Sent before the image exists: the reservation and the balance after it, and the job
        # id (a client whose stream breaks can still fetch the job).
        assert_charge_headers(r, 1, before - 1)
        job_id = r.headers["X-Job-Id"]
        check_stream(r, "image_generation", (1536, 1024))
    assert credits(srv, key) == {"credits": before - 1, "reserved": 0}
    job = srv.get(f"/api/jobs/{job_id}", key=key)
    assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text


def test_stream_to_an_http10_client_is_close_delimited(srv, key):
    """HTTP/1.0 has no chunked coding (RFC 9112 §6.1): the events come as plain bytes and the
    connection's close ends them."""
    import socket
    body = json.dumps({"model": "gpt-image-2", "prompt": "x", "stream": True,
                       "partial_images": 1, "size": "1024x1024"}).encode()
    req = (b"POST /v1/images/generations HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer "
           + key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)
    chunks = []
    with socket.create_connection(("127.0.0.1", srv.port), timeout=IMG_TIMEOUT) as s:
        s.sendall(req)
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert b"transfer-encoding" not in head.lower(), head
    text = rest.decode()
    assert text.startswith("event: image_generation.partial_image\n"), text[:100]
    names = [line[len("event: "):] for line in text.split("\n") if line.startswith("event: ")]
    assert names == ["image_generation.partial_image", "image_generation.completed"], names


def test_stream_edit_multipart(srv, key):
    before = credits(srv, key)["credits"]
    with stream(srv, key, "/v1/images/edits",
                data={"model": "gpt-image-2", "prompt": "make it blue", "stream": "true",
                      "partial_images": "2", "size": "1024x1024"},
                files=[("image", ("in.png", make_png(128, 128), "image/png"))]) as r:
        check_stream(r, "image_edit", (1024, 1024))
    assert credits(srv, key) == {"credits": before - 1, "reserved": 0}


# ---- edits ---------------------------------------------------------------------------------

def png_file(name, w=128, h=128, seed=0, field="image"):
    return (field, name, make_png(w, h, seed=seed), "image/png")


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_edit_one_file(srv, key, prefix):
    before = credits(srv, key)["credits"]
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "add a hat", "size": "1024x1024"},
                       [png_file("cat.png")], path=prefix + "/images/edits")
    check_reply(srv, r, size=(1024, 1024))
    assert_charge_headers(r, 1, before - 1)


@pytest.mark.parametrize("field", ["image", "image[]"])
def test_edit_many_files(srv, key, field):
    files = [png_file(f"f{i}.png", seed=i, field=field) for i in range(4)]
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "a gift basket", "size": "1536x1024"},
                       files)
    check_reply(srv, r, size=(1536, 1024))
    assert_charge_headers(r, 1)


def test_edit_sixteen_files_allowed(srv, key):
    files = [png_file(f"f{i}.png", 64, 64, seed=i, field="image[]") for i in range(16)]
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "collage", "size": "1024x1024"}, files)
    check_reply(srv, r, size=(1024, 1024))


def test_edit_with_mask(srv, key):
    files = [("image", "img.png", make_png(256, 256), "image/png"),
             ("mask", "mask.png", make_png(256, 256, rgba=True), "image/png")]
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "fill the hole", "size": "1024x1024",
                                  "n": "2", "response_format": "b64_json"}, files)
    check_reply(srv, r, n=2, size=(1024, 1024), want_url=False)
    assert_charge_headers(r, 2)


@pytest.mark.parametrize("variant", ["images", "image_urls", "image_url", "image_base64", "mask_url",
                                     "mask_base64", "mask_object"])
def test_edit_json_forms(srv, key, variant):
    img = make_png(200, 200, seed=3)
    mask = make_png(200, 200, rgba=True)
    body = {"model": "gpt-image-2", "prompt": "repaint", "size": "1024x1024"}
    if variant == "images":
        body["images"] = [{"image_url": data_url(img)}, {"image_url": data_url(make_png(64, 64))}]
    elif variant == "image_urls":
        body["image_urls"] = [data_url(img)]
    elif variant == "image_url":
        body["image_url"] = data_url(img)
    elif variant == "image_base64":
        body["image_base64"] = base64.b64encode(img).decode()
    elif variant == "mask_url":
        body.update(image_urls=[data_url(img)], mask_url=data_url(mask))
    elif variant == "mask_base64":
        body.update(image_urls=[data_url(img)], mask_base64=base64.b64encode(mask).decode())
    elif variant == "mask_object":
        body.update(images=[{"image_url": data_url(img)}], mask={"image_url": data_url(mask)})
    r = generate(srv, key, body, path="/v1/images/edits")
    check_reply(srv, r, size=(1024, 1024))
    assert_charge_headers(r, 1)


@pytest.mark.parametrize("ref,out,price", [((1536, 1024), (1536, 1024), 1),
                                           ((2048, 1152), (2048, 1152), 2),
                                           ((1000, 700), (1008, 672), 1)],
                         ids=["valid-1K", "valid-2K", "odd-size"])
def test_edit_auto_size_follows_the_reference(srv, key, ref, out, price):
    """`auto` keeps a reference that is itself a valid size (billed by its long edge); any other
    reference maps to its nearest ratio at the default tier (seed 004's table)."""
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "same frame", "size": "auto"},
                       [("image", "ref.png", make_png(*ref), "image/png")])
    check_reply(srv, r, size=out)
    assert_charge_headers(r, price)


def test_generation_with_reference_image(srv, key):
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "watercolor style",
                            "image_urls": [data_url(make_png(96, 96))], "size": "1024x1024"})
    check_reply(srv, r, size=(1024, 1024))
    assert_charge_headers(r, 1)


def test_image_urls_stand_in_for_the_prompt(srv, key):
    """Seeds 002 and 003: prompt is optional when image_urls are given."""
    r = generate(srv, key, {"model": "gpt-image-2", "image_urls": [data_url(make_png(96, 96))],
                            "size": "1024x1024"})
    check_reply(srv, r, size=(1024, 1024))


@pytest.mark.parametrize("prompt", ["\u00a0", "\u200b\u200b", "\u00ad", "\ufeff"],
                         ids=["nbsp", "zwsp", "shy", "bom"])
def test_prompt_of_invisible_characters_renders(srv, key, prompt):
    """A valid prompt that draws no ink is still a picture, not an upstream failure."""
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": prompt, "size": "1024x1024"})
    check_reply(srv, r, size=(1024, 1024))


def test_stream_generation_with_reference_keeps_generation_events(srv, key):
    """A reference image makes the job an edit, but the events are named after the endpoint:
    the SDK's images.generate stream type expects image_generation.*."""
    with stream(srv, key, "/v1/images/generations",
                json={"model": "gpt-image-2", "prompt": "a comet", "stream": True, "partial_images": 2,
                      "image_urls": [data_url(make_png(96, 96))], "size": "1024x1024"}) as r:
        check_stream(r, "image_generation", (1024, 1024))


def test_seed003_input_object(srv, key):
    """The `input` object is seed 003's task form: a task id at once, the image when polled."""
    before = credits(srv, key)["credits"]
    r = generate(srv, key, {"model": "gpt-image-2",
                            "input": {"prompt": "a cat on the moon", "image_urls": [data_url(make_png(64, 64))],
                                      "aspect_ratio": "16:9", "resolution": "2K"}})
    assert r.status_code == 200, r.text
    task_id = jloads(r.text)["data"]["taskId"]
    deadline = time.monotonic() + 60
    while True:
        task = jloads(srv.get(f"/v1/tasks/{task_id}", key=key).text)
        if task["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline, task
        time.sleep(0.05)
    assert task["status"] == "completed", task
    [url] = task["output"]["urls"]
    png = requests.get(url, timeout=10).content
    assert image_info(png)["width"] == 2048 and image_info(png)["height"] == 1152
    assert credits(srv, key) == {"credits": before - 2, "reserved": 0}


# ---- reference images by URL -----------------------------------------------------------------

def test_loopback_reference_url_refused_by_default(srv, key, image_host):
    url = image_host.put("x.png", make_png(64, 64))
    before = credits(srv, key)
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "edit", "image_urls": [url]})
    assert_openai_error(r, 400, param="image_urls", code="invalid_request", etype="invalid_request_error")
    assert credits(srv, key) == before
    assert image_host.requests == [], "the private URL must not even be fetched"


@pytest.fixture(scope="module")
def _private_srv(module_factory):
    return module_factory.server("[images]\nallow_private_reference_urls = true\n")


@pytest.fixture
def private_srv(_private_srv):
    yield from shared_server(_private_srv)


def test_reference_url_fetched_when_allowed(private_srv, image_host):
    srv = private_srv
    key = srv.create_user(f"ref{next(_emails)}@example.com", credits=10)
    url = image_host.put("x.png", make_png(300, 200, seed=5))
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "edit it", "image_urls": [url],
                            "size": "1024x1024"})
    check_reply(srv, r, size=(1024, 1024))
    assert "/x.png" in image_host.requests, image_host.requests
    assert credits(srv, key) == {"credits": 9, "reserved": 0}


def test_reference_url_404_is_400(private_srv, image_host):
    srv = private_srv
    key = srv.create_user(f"ref{next(_emails)}@example.com", credits=10)
    url = image_host.put("x.png", make_png(64, 64)).replace("x.png", "missing.png")
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": "edit it", "image_urls": [url]})
    assert_openai_error(r, 400, param="image_urls")
    assert credits(srv, key) == {"credits": 10, "reserved": 0}


# ---- reply URLs behind a proxy -----------------------------------------------------------------

def proxied_url(srv, key, headers):
    r = requests.post(srv.url + "/v1/images/generations",
                      headers={"Authorization": f"Bearer {key}", **headers},
                      json={"model": "gpt-image-2", "prompt": "proxied", "response_format": "url"},
                      timeout=IMG_TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    return r.json()["data"][0]["url"]


def test_forwarded_headers_from_a_trusted_proxy(factory):
    """X-Forwarded-Proto/Host replace the configured base's scheme and host and keep its path;
    values that are not a plain host are ignored; untrusted peers change nothing."""
    srv = factory.server('public_base_url = "https://img.example.com/gw/"\n'
                         '[images]\ntrusted_proxies = ["127.0.0.1"]\n')
    key = srv.create_user("proxy@example.com", credits=10)
    assert proxied_url(srv, key, {}).startswith("https://img.example.com/gw/api/jobs/")
    assert proxied_url(srv, key, {"X-Forwarded-Host": "cdn.example.org"}).startswith(
        "https://cdn.example.org/gw/api/jobs/")
    assert proxied_url(srv, key, {"X-Forwarded-Proto": "http"}).startswith(
        "http://img.example.com/gw/api/jobs/")
    assert proxied_url(srv, key, {"X-Forwarded-Host": 'evil.com"><script>'}).startswith(
        "https://img.example.com/gw/api/jobs/")
    # A configured base is not replaced by the proxy's Host (often the upstream's own name).
    assert proxied_url(srv, key, {"Host": "backend.internal"}).startswith("https://img.example.com/gw/")

    untrusted = factory.server('public_base_url = "https://img.example.com"\n')
    key2 = untrusted.create_user("proxy2@example.com", credits=10)
    assert proxied_url(untrusted, key2, {"X-Forwarded-Host": "cdn.example.org",
                                         "X-Forwarded-Proto": "http"}).startswith(
        "https://img.example.com/api/jobs/")


def test_forwarded_proto_with_host_header_when_no_base_is_configured(factory):
    """The usual TLS front end: X-Forwarded-Proto plus the client's Host, and no
    public_base_url in the config."""
    srv = factory.server('[images]\ntrusted_proxies = ["127.0.0.1"]\n')
    key = srv.create_user("proxy3@example.com", credits=10)
    url = proxied_url(srv, key, {"X-Forwarded-Proto": "https", "Host": "gw.example.com"})
    assert url.startswith("https://gw.example.com/api/jobs/"), url
