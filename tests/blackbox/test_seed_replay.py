"""The seeds' own examples (000, 001 sync, 004), replayed with curl / requests against imagegate.
Only the host, the key and the reference-image URLs are adapted."""

import base64
import itertools
import json
import re
import subprocess
from decimal import Decimal

import pytest
import requests

from conftest import shared_server
from imgutil import credits, image_info, job_id_from_url, make_png

CURL_TIMEOUT = 120


@pytest.fixture(scope="module")
def _srv(module_factory):
    return module_factory.server("[images]\nallow_private_reference_urls = true\n")


@pytest.fixture
def srv(_srv):
    yield from shared_server(_srv)


_emails = itertools.count()


@pytest.fixture
def key(srv):
    return srv.create_user(f"seed{next(_emails)}@example.com", credits=100)


def curl(srv, args, cwd):
    """Runs curl ARGS with the seed's URL rewritten; returns (status, headers, body bytes)."""
    hdr = cwd / "curl_headers.txt"
    out = cwd / "curl_body.bin"
    argv = ["curl", "-sS", "-m", str(CURL_TIMEOUT - 10), "-D", str(hdr), "-o", str(out),
            "-w", "%{http_code}"] + args
    p = subprocess.run(argv, capture_output=True, text=True, timeout=CURL_TIMEOUT, cwd=cwd,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"curl failed rc={p.returncode}: {p.stderr}"
    headers = {}
    for line in hdr.read_text("latin-1").splitlines()[1:]:
        k, _, v = line.partition(":")
        if v:
            headers[k.strip().lower()] = v.strip()
    return int(p.stdout.strip()), headers, out.read_bytes()


def check_sync_reply(srv, status, body, size=None, want_url=True):
    assert status == 200, body[:500]
    reply = json.loads(body)
    assert isinstance(reply["created"], int)
    assert len(reply["data"]) == 1, reply["data"]
    item = reply["data"][0]
    img = base64.b64decode(item["b64_json"], validate=True)
    info = image_info(img)
    if size:
        assert (info["width"], info["height"]) == size, info
    if want_url:
        url = item["url"]
        assert url.startswith(srv.url + "/api/jobs/") and "/image" in url, url
        job_id_from_url(url)
        g = requests.get(url, timeout=10)
        assert g.status_code == 200 and g.content == img
    return reply


# ---- seed 000 ----------------------------------------------------------------------------------

def test_seed000_curl_generation_with_reference(srv, key, image_host, tmp_path):
    cat = image_host.put("cat.png", make_png(512, 512, seed=7))
    payload = """{
"model": "gpt-image-2",
"prompt": "一只戴着宇航员头盔的猫咪,在月球上弹吉他,赛博朋克风格",
"size": "16:9",
"quality": "hd",
"n": 1,
"image_urls": ["%s"]
}""" % cat
    status, headers, body = curl(srv, ["-X", "POST", f"{srv.url}/v1/images/generations",
                                       "-H", f"Authorization: Bearer {key}",
                                       "-H", "Content-Type: application/json",
                                       "-d", payload], tmp_path)
    check_sync_reply(srv, status, body, size=(2048, 1152))
    assert "/cat.png" in image_host.requests
    assert Decimal(headers["x-credits-charged"]) == 2
    assert credits(srv, key) == {"credits": 98, "reserved": 0}


def test_seed000_python_examples(srv, key, image_host, tmp_path):
    resp = requests.post(f"{srv.url}/v1/images/generations",
                         headers={"Authorization": f"Bearer {key}"},
                         json={"prompt": "一只可爱的柴犬在樱花树下", "size": "1024x1024"}, timeout=60)
    check_sync_reply(srv, resp.status_code, resp.content, size=(1024, 1024))
    dog = image_host.put("dog.png", make_png(300, 300, seed=2))
    resp = requests.post(f"{srv.url}/v1/images/generations",
                         headers={"Authorization": f"Bearer {key}"},
                         json={"prompt": "把这只狗变成水彩画风格", "image_urls": [dog]}, timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    data = resp.json()["data"][0]
    img_bytes = base64.b64decode(data["b64_json"])
    (tmp_path / "output.png").write_bytes(img_bytes)
    assert image_info(img_bytes)["format"] == "png"
    assert "/dog.png" in image_host.requests


def test_seed000_fetch_example_url(srv, key):
    resp = requests.post(f"{srv.url}/v1/images/generations",
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                         data=json.dumps({"prompt": "A cat wearing an astronaut helmet on the moon",
                                          "size": "1024x1024"}), timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    data = resp.json()["data"]
    g = requests.get(data[0]["url"], timeout=10)
    assert g.status_code == 200 and image_info(g.content)["width"] == 1024


def test_seed000_job_and_me(srv, key, tmp_path):
    status, _, body = curl(srv, ["-X", "POST", f"{srv.url}/v1/images/generations",
                                 "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
                                 "-d", '{"model": "gpt-image-2", "prompt": "赛博朋克城市夜景,霓虹灯", '
                                       '"size": "1024x1024", "n": 1}'], tmp_path)
    reply = check_sync_reply(srv, status, body, size=(1024, 1024))
    job_id = job_id_from_url(reply["data"][0]["url"])
    status, _, body = curl(srv, [f"{srv.url}/api/jobs/{job_id}", "-H", f"Authorization: Bearer {key}"],
                           tmp_path)
    assert status == 200, body
    job = json.loads(body)
    assert job["id"] == job_id and job["status"] == "succeeded"
    status, _, body = curl(srv, [f"{srv.url}/v1/me", "-H", f"Authorization: Bearer {key}"], tmp_path)
    assert status == 200
    me = json.loads(body)
    assert {"id", "email", "credits"} <= set(me)
    assert me["credits"] == 99


# ---- seed 001 (sync: a WxH size) ---------------------------------------------------------------

def test_seed001_sync_generation(srv, key, tmp_path):
    status, headers, body = curl(srv, [
        "-X", "POST", f"{srv.url}/api/v1/images/generations",
        "-H", f"Authorization: Bearer {key}",
        "-H", "Content-Type: application/json",
        "-d", """{
"model": "gpt-image-2-all",
"prompt": "a white sneaker product shot on beige background, studio light",
"size": "2048x2048",
"quality": "medium",
"n": 1
}"""], tmp_path)
    check_sync_reply(srv, status, body, size=(2048, 2048))
    assert Decimal(headers["x-credits-charged"]) == 2


def test_seed001_multipart_edit(srv, key, tmp_path):
    (tmp_path / "product.png").write_bytes(make_png(512, 512, seed=4))
    status, headers, body = curl(srv, [
        "-X", "POST", f"{srv.url}/api/v1/images/edits",
        "-H", f"Authorization: Bearer {key}",
        "-F", "model=gpt-image-2-all",
        "-F", "image=@product.png",
        "-F", "prompt=put this sneaker on a model, e-commerce close-up",
        "-F", "size=2048x2048",
        "-F", "quality=medium"], tmp_path)
    check_sync_reply(srv, status, body, size=(2048, 2048))
    assert Decimal(headers["x-credits-charged"]) == 2


# ---- seed 004 ----------------------------------------------------------------------------------

def test_seed004_generation(srv, key, tmp_path):
    status, _, body = curl(srv, [
        f"{srv.url}/v1/images/generations",
        "-H", f"Authorization: Bearer {key}",
        "-H", "Content-Type: application/json",
        "-d", """{
"model": "gpt-image-2",
"prompt": "a white siamese cat",
"n": 1,
"size": "1024x1024",
"quality": "low"
}"""], tmp_path)
    check_sync_reply(srv, status, body, size=(1024, 1024))


def test_seed004_multi_image_edit(srv, key, tmp_path):
    for i, name in enumerate(["body-lotion.png", "bath-bomb.png", "incense-kit.png", "soap.png"]):
        (tmp_path / name).write_bytes(make_png(256, 256, seed=i))
    status, headers, body = curl(srv, [
        "-X", "POST", f"{srv.url}/v1/images/edits",
        "-H", f"Authorization: Bearer {key}",
        "-F", "model=gpt-image-2",
        "-F", "image[]=@body-lotion.png",
        "-F", "image[]=@bath-bomb.png",
        "-F", "image[]=@incense-kit.png",
        "-F", "image[]=@soap.png",
        "-F", 'prompt=Generate a photorealistic image of a gift basket on a white background labeled '
              '"Relax & Unwind" with a ribbon and handwriting-like font, containing all the items in the '
              'reference pictures'], tmp_path)
    reply = check_sync_reply(srv, status, body)
    assert re.match(r"^https?://", reply["data"][0]["url"])
    if "usage" in reply:
        u = reply["usage"]
        assert {"input_tokens", "output_tokens", "total_tokens"} <= set(u), u
    assert Decimal(headers["x-credits-charged"]) == 1
    assert credits(srv, key) == {"credits": 99, "reserved": 0}
