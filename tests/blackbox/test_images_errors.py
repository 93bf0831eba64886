"""Bad image requests: each is an OpenAI-shaped error naming the field, charges nothing and stores
nothing."""

import itertools
import socket

import pytest

from conftest import parse_raw_response, recv_until_eof, shared_server
from imgutil import (assert_openai_error, credits, data_url, edit_multipart, generate, job_rows,
                     make_png, make_png_claiming, stored_files)

_emails = itertools.count()


@pytest.fixture(scope="module")
def _srv(module_factory):
    return module_factory.server()


@pytest.fixture
def srv(_srv):
    yield from shared_server(_srv)


@pytest.fixture(scope="module")
def _key(_srv):
    return _srv.create_user("errors@example.com", credits=100)


@pytest.fixture
def key(srv, _key):
    """The module's user (100 credits); the test fails if its balance, the job tables or the
    stored files changed."""
    before = credits(srv, _key)
    files, rows = stored_files(srv), job_rows(srv)
    yield _key
    assert credits(srv, _key) == before, "a rejected request changed the balance"
    assert stored_files(srv) == files, "a rejected request stored files"
    assert job_rows(srv) == rows, "a rejected request stored a job"


def gen(**fields):
    return dict({"model": "gpt-image-2", "prompt": "a cat"}, **fields)


SIZE = "size"
SIZE_TIER = {"size", "quality", "resolution", "aspect_ratio"}
REFS = {"image", "images", "image[]", "image_urls"}

BAD_JSON = [
    # (id, body, status, param, code)
    ("size-1000x1000", gen(size="1000x1000"), 400, SIZE, "invalid_request"),
    ("size-4000x2000", gen(size="4000x2000"), 400, SIZE, "invalid_request"),
    ("size-3840x1024", gen(size="3840x1024"), 400, SIZE, "invalid_request"),
    ("size-0x0", gen(size="0x0"), 400, SIZE, "invalid_request"),
    ("size-16:10", gen(size="16:10"), 400, SIZE, "invalid_request"),
    ("size-negative", gen(size="-1024x1024"), 400, SIZE, "invalid_request"),
    ("size-tiny", gen(size="512x512"), 400, SIZE, "invalid_request"),
    ("size-garbage", gen(size="big"), 400, SIZE, "invalid_request"),
    ("uhd-1:1", gen(size="1:1", quality="uhd"), 400, SIZE_TIER, "invalid_request"),
    ("4K-1:1", gen(size="1:1", resolution="4K"), 400, SIZE_TIER, "invalid_request"),
    ("n-0", gen(n=0), 400, "n", "invalid_request"),
    ("n-11", gen(n=11), 400, "n", "invalid_request"),
    ("n-string", gen(n="2"), 400, "n", "invalid_request"),
    ("n-float", gen(n=1.5), 400, "n", "invalid_request"),
    ("prompt-empty", gen(prompt=""), 400, "prompt", "invalid_request"),
    ("prompt-missing", {"model": "gpt-image-2"}, 400, "prompt", "invalid_request"),
    ("prompt-32001", gen(prompt="x" * 32001), 400, "prompt", "invalid_request"),
    ("prompt-not-string", gen(prompt=42), 400, "prompt", "invalid_request"),
    ("quality-ultra", gen(quality="ultra"), 400, "quality", "invalid_request"),
    ("compression-101", gen(output_format="jpeg", output_compression=101), 400, "output_compression",
     "invalid_request"),
    ("compression-negative", gen(output_format="jpeg", output_compression=-1), 400, "output_compression",
     "invalid_request"),
    ("transparent-jpeg", gen(background="transparent", output_format="jpeg"), 400, "background",
     "invalid_request"),
    ("output-format-gif", gen(output_format="gif"), 400, "output_format", "invalid_request"),
    ("partial-images-4", gen(stream=True, partial_images=4), 400, "partial_images", "invalid_request"),
    ("refs-17", gen(image_urls=[data_url(make_png(16, 16, seed=i)) for i in range(17)]), 400, REFS,
     "invalid_request"),
    ("ref-not-image", gen(image_urls=["data:image/png;base64,aGVsbG8gd29ybGQ="]), 400, REFS,
     "invalid_request"),
    ("ref-bomb", gen(image_urls=[data_url(make_png_claiming(100000, 100000))]), 400, REFS,
     "invalid_request"),
    ("unknown-model", gen(model="gpt-image-99"), 404, "model", "model_not_found"),
]


@pytest.mark.parametrize("path", ["/v1/images/generations"])
@pytest.mark.parametrize("body,status,param,code", [b[1:] for b in BAD_JSON], ids=[b[0] for b in BAD_JSON])
def test_bad_generation(srv, key, path, body, status, param, code):
    r = generate(srv, key, body, path=path)
    etype = "invalid_request_error"
    assert_openai_error(r, status, param=param, code=code, etype=etype)


@pytest.mark.parametrize("path", ["/api/v1/images/generations", "/v1/images/edits"])
def test_bad_size_other_paths(srv, key, path):
    body = gen(size="1000x1000")
    if path.endswith("edits"):
        body["image_urls"] = [data_url(make_png(64, 64))]
    assert_openai_error(generate(srv, key, body, path=path), 400, param="size", code="invalid_request")


def test_seed003_input_bad_resolution(srv, key):
    r = generate(srv, key, {"model": "gpt-image-2",
                            "input": {"prompt": "x", "aspect_ratio": "1:1", "resolution": "4K"}})
    err = assert_openai_error(r, 400, code="invalid_request")
    assert err["param"] is not None and any(p in err["param"] for p in SIZE_TIER), err


def test_malformed_json(srv, key):
    r = srv.request("POST", "/v1/images/generations", key=key, data=b'{"prompt": "a cat", ',
                    headers={"Content-Type": "application/json"}, timeout=10)
    assert_openai_error(r, 400, etype="invalid_request_error")


def test_json_not_an_object(srv, key):
    r = srv.request("POST", "/v1/images/generations", key=key, data=b'["prompt"]',
                    headers={"Content-Type": "application/json"}, timeout=10)
    assert_openai_error(r, 400, etype="invalid_request_error")


def test_unknown_model_edit(srv, key):
    r = edit_multipart(srv, key, {"model": "nope-1", "prompt": "x"},
                       [("image", "a.png", make_png(64, 64), "image/png")])
    assert_openai_error(r, 404, param="model", code="model_not_found")


# ---- multipart edits ---------------------------------------------------------------------------

def test_edit_without_image(srv, key):
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x"}, [])
    assert_openai_error(r, 400, param=REFS | {"image"}, code="invalid_request")


def test_edit_17_files(srv, key):
    files = [("image[]", f"{i}.png", make_png(16, 16, seed=i), "image/png") for i in range(17)]
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x"}, files)
    assert_openai_error(r, 400, param=REFS, code="invalid_request")


def test_edit_text_file_named_png(srv, key):
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x"},
                       [("image", "x.png", b"this is plain text, not a picture\n" * 10, "image/png")])
    assert_openai_error(r, 400, param={"image", "image[]"}, code="invalid_request")


def test_edit_png_claiming_huge_dimensions(srv, key):
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x"},
                       [("image", "bomb.png", make_png_claiming(100000, 100000), "image/png")])
    assert_openai_error(r, 400, param={"image", "image[]"}, code="invalid_request")


def test_edit_mask_size_mismatch(srv, key):
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x"},
                       [("image", "a.png", make_png(256, 256), "image/png"),
                        ("mask", "m.png", make_png(128, 128, rgba=True), "image/png")])
    assert_openai_error(r, 400, param="mask", code="invalid_request")


def test_edit_mask_without_alpha(srv, key):
    """OpenAI's contract: a mask is a PNG whose transparent areas mark the edit. An opaque one
    is refused before anything is reserved, naming `mask`."""
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x"},
                       [("image", "a.png", make_png(128, 128), "image/png"),
                        ("mask", "m.png", make_png(128, 128), "image/png")])
    assert_openai_error(r, 400, param="mask", code="invalid_request")
    assert "alpha" in r.json()["error"]["message"]


def test_edit_without_prompt(srv, key):
    """OpenAI's edits require a prompt, whatever images come with it (only seed 002/003's
    image_urls may stand in for one)."""
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": ""},
                       [("image", "a.png", make_png(64, 64), "image/png")])
    assert_openai_error(r, 400, param="prompt", code="invalid_request")
    r = generate(srv, key, {"model": "gpt-image-2", "images": [{"image_url": data_url(make_png(64, 64))}]},
                 path="/v1/images/edits")
    assert_openai_error(r, 400, param="prompt", code="invalid_request")


def test_edit_bad_field_in_multipart(srv, key):
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x", "n": "0"},
                       [("image", "a.png", make_png(64, 64), "image/png")])
    assert_openai_error(r, 400, param="n", code="invalid_request")
    r = edit_multipart(srv, key, {"model": "gpt-image-2", "prompt": "x", "size": "16:10"},
                       [("image", "a.png", make_png(64, 64), "image/png")])
    assert_openai_error(r, 400, param="size", code="invalid_request")


def test_json_mask_size_mismatch(srv, key):
    r = generate(srv, key, gen(image_urls=[data_url(make_png(256, 256))],
                               mask_base64=__import__("base64").b64encode(make_png(100, 100)).decode()),
                 path="/v1/images/edits")
    assert_openai_error(r, 400, param={"mask", "mask_base64"}, code="invalid_request")


def test_broken_multipart_boundary(srv, key):
    png = make_png(64, 64)
    body = (b"--AAAA\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n"
            b"--AAAA\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--AAAA--\r\n")
    r = srv.request("POST", "/v1/images/edits", key=key, data=body,
                    headers={"Content-Type": "multipart/form-data; boundary=BBBB"}, timeout=10)
    assert_openai_error(r, 400, etype="invalid_request_error")
    r = srv.request("POST", "/v1/images/edits", key=key, data=body,
                    headers={"Content-Type": "multipart/form-data"}, timeout=10)
    assert_openai_error(r, 400, etype="invalid_request_error")
    truncated = body[: len(body) // 2]
    r = srv.request("POST", "/v1/images/edits", key=key, data=truncated,
                    headers={"Content-Type": "multipart/form-data; boundary=AAAA"}, timeout=10)
    assert_openai_error(r, 400, etype="invalid_request_error")


def test_upload_60mb_is_413(srv, key):
    """A 60 MB multipart upload (the default max_body_bytes is 50 MiB)."""
    size = 60 * 1000 * 1000
    head = (b"--ZZZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n")
    req = (b"POST /v1/images/edits HTTP/1.1\r\nHost: x\r\n"
           + f"Authorization: Bearer {key}\r\n".encode()
           + b"Content-Type: multipart/form-data; boundary=ZZZ\r\n"
           + f"Content-Length: {size}\r\n\r\n".encode() + head)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(req)  # the limit is checked from Content-Length, before the body is read
        resp, _ = recv_until_eof(s, timeout=10)
    status, headers, body = parse_raw_response(resp)
    assert status == 413, resp[:300]
    assert b'"error"' in body


def test_no_credits_402(srv):
    poor = srv.create_user("poor@example.com")  # 0 credits
    r = generate(srv, poor, gen())
    assert_openai_error(r, 402, code="insufficient_credits", etype="billing_error")
    assert credits(srv, poor) == {"credits": 0, "reserved": 0}
    # 1 credit is not enough for 2 images, nor for one 2K image.
    srv.cli_ok("credits", "grant", "poor@example.com", "1")
    assert_openai_error(generate(srv, poor, gen(n=2)), 402, code="insufficient_credits")
    assert_openai_error(generate(srv, poor, gen(size="16:9", quality="hd")), 402, code="insufficient_credits")
    assert credits(srv, poor) == {"credits": 1, "reserved": 0}


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/images/edits"])
def test_no_key_401(srv, key, path):
    r = srv.request("POST", path, json=gen(), timeout=10)
    assert_openai_error(r, 401, code="invalid_api_key", etype="authentication_error")
    r = srv.request("POST", path, key="sk-" + "x" * 43, json=gen(), timeout=10)
    assert_openai_error(r, 401, code="invalid_api_key", etype="authentication_error")
