"""Helpers for the image black-box tests: image encoders/parsers (no PIL), OpenAI error checks,
credit accounting, SSE parsing, multipart bodies, a fake OpenAI upstream and a local image host.

Everything here talks to real processes over real sockets; every wait has a timeout.
"""

import base64
import http.server
import json
import os
import re
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from decimal import Decimal
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_KIE = REPO_ROOT / "tests" / "fakes" / "fake_kie.py"
FAKE_OPENAI = REPO_ROOT / "tests" / "fakes" / "fake_openai.py"

# Image jobs run the local renderer under ASan: give every generation call room.
IMG_TIMEOUT = 60.0


# ---- images ------------------------------------------------------------------------------

def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def make_png(width: int, height: int, rgba: bool = False, seed: int = 0) -> bytes:
    """A valid PNG (RGB, or RGBA with a transparent left half) of the given size."""
    r, g, b = (seed * 67 + 40) % 256, (seed * 131 + 80) % 256, (seed * 29 + 160) % 256
    if rgba:
        half = width // 2
        row = b"\x00" + b"\x00\x00\x00\x00" * half + bytes([r, g, b, 255]) * (width - half)
        color_type = 6
    else:
        row = b"\x00" + bytes([r, g, b]) * width
        color_type = 2
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(row * height, 6))
            + _chunk(b"IEND", b""))


def make_png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose data is one tiny row (decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def data_url(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode()


def image_info(data: bytes) -> dict:
    """{format, width, height, [color_type]} from a PNG, JPEG or WebP header. Raises on anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        assert data[12:16] == b"IHDR", "PNG without IHDR first"
        w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
        return {"format": "png", "width": w, "height": h, "bit_depth": depth, "color_type": ctype}
    if data[:3] == b"\xff\xd8\xff":
        i = 2
        while i + 4 <= len(data):
            assert data[i] == 0xFF, f"bad JPEG marker at {i}"
            marker = data[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return {"format": "jpeg", "width": w, "height": h}
            i += 2 + seglen
        raise AssertionError("JPEG without SOF marker")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = data[12:16]
        if kind == b"VP8 ":
            assert data[23:26] == b"\x9d\x01\x2a", "bad VP8 start code"
            w, h = struct.unpack("<HH", data[26:30])
            return {"format": "webp", "width": w & 0x3FFF, "height": h & 0x3FFF}
        if kind == b"VP8L":
            assert data[20] == 0x2F, "bad VP8L signature"
            bits = int.from_bytes(data[21:25], "little")
            return {"format": "webp", "width": (bits & 0x3FFF) + 1, "height": ((bits >> 14) & 0x3FFF) + 1}
        if kind == b"VP8X":
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return {"format": "webp", "width": w, "height": h, "alpha": bool(data[20] & 0x10)}
        raise AssertionError(f"unknown WebP chunk {kind!r}")
    raise AssertionError(f"not a PNG/JPEG/WebP: {data[:16]!r}")


def png_is_complete(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[-12:] == _chunk(b"IEND", b"")


def b64_image(item: dict) -> bytes:
    raw = item["b64_json"]
    assert isinstance(raw, str) and raw, f"empty b64_json in {str(item)[:200]}"
    return base64.b64decode(raw, validate=True)


MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


# ---- replies -----------------------------------------------------------------------------

def jloads(text):
    return json.loads(text, parse_float=Decimal)


def assert_openai_error(r, status, param=None, code=None, etype=None):
    """r is an OpenAI-shaped error with this status; param (a name or a set of acceptable names)."""
    assert r.status_code == status, (f"expected HTTP {status}, got {r.status_code}: {r.text[:500]}")
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    if etype is not None:
        assert err["type"] == etype, err
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        ok = {param} if isinstance(param, str) else set(param)
        assert err["param"] in ok, f"expected param in {sorted(ok)}, got {err['param']!r}: {err}"
    return err


def credits(srv, key) -> dict:
    r = srv.get("/v1/credits", key=key)
    assert r.status_code == 200, r.text
    body = jloads(r.text)
    return {"credits": Decimal(body["credits"]), "reserved": Decimal(body["reserved"])}


def assert_charge_headers(r, charged, remaining=None):
    h = r.headers
    assert "X-Credits-Charged" in h, f"no X-Credits-Charged header: {dict(h)}"
    assert "X-Credits-Remaining" in h, f"no X-Credits-Remaining header: {dict(h)}"
    assert Decimal(h["X-Credits-Charged"]) == Decimal(charged), h["X-Credits-Charged"]
    assert re.fullmatch(r"-?\d+(\.\d+)?", h["X-Credits-Charged"]), h["X-Credits-Charged"]
    assert re.fullmatch(r"\d+(\.\d+)?", h["X-Credits-Remaining"]), h["X-Credits-Remaining"]
    if remaining is not None:
        assert Decimal(h["X-Credits-Remaining"]) == Decimal(remaining), h["X-Credits-Remaining"]


def job_id_from_url(url: str) -> str:
    m = re.search(r"/api/jobs/([^/?#]+)/image", url)
    assert m, f"not a job image URL: {url}"
    return m.group(1)


def local_path(srv, url: str) -> str:
    """The path+query of an absolute URL that must point at this server."""
    assert url.startswith(srv.url + "/"), f"URL {url!r} is not absolute on {srv.url}"
    return url[len(srv.url):]


def generate(srv, key, body, path="/v1/images/generations", timeout=IMG_TIMEOUT, **kw):
    return srv.request("POST", path, key=key, json=body, timeout=timeout, **kw)


def edit_multipart(srv, key, fields, files, path="/v1/images/edits", timeout=IMG_TIMEOUT):
    """files: list of (field name, filename, bytes, content type)."""
    parts = [(k, (None, str(v))) for k, v in fields.items()]  # always multipart, even with no file
    parts += [(n, (fn, b, ct)) for n, fn, b, ct in files]
    return srv.request("POST", path, key=key, files=parts, timeout=timeout)


# ---- server-sent events --------------------------------------------------------------------

def read_sse(resp, deadline_s: float = IMG_TIMEOUT) -> list:
    """[(event name, data dict)] of a streamed response, until the stream ends."""
    events = []
    name, data_lines = None, []
    deadline = time.monotonic() + deadline_s
    for raw in resp.iter_lines(decode_unicode=False):
        assert time.monotonic() < deadline, "SSE stream took too long"
        line = raw.decode("utf-8")
        if line == "":
            if data_lines:
                text = "\n".join(data_lines)
                events.append((name, json.loads(text) if text != "[DONE]" else text))
            name, data_lines = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data_lines.append(value)
    if data_lines:
        text = "\n".join(data_lines)
        events.append((name, json.loads(text) if text != "[DONE]" else text))
    return events


# ---- stored state ----------------------------------------------------------------------------

def stored_files(srv) -> set:
    """Files under the data dir other than the SQLite database and its journals."""
    out = set()
    root = Path(srv.data_dir)
    if not root.exists():
        return out
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith("imagegate.db"):
            out.add(str(p.relative_to(root)))
    return out


def job_rows(srv) -> dict:
    """Row counts of the tables that hold jobs/images/blobs (whatever they are named)."""
    counts = {}
    try:
        con = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return counts
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for n in names:
            if any(s in n.lower() for s in ("job", "blob", "file", "image", "task")):
                counts[n] = con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0]
    except sqlite3.Error:
        pass
    finally:
        con.close()
    return counts


LEDGER_SUMMARY = re.compile(r"^checked (\d+) users, (\d+) ledger rows, (\d+) holds \((\d+) open\)$", re.M)


def assert_ledger_ok(inst):
    rc, out, err = inst.cli("ledger", "check")
    assert rc == 0, f"ledger check failed rc={rc}\nstdout={out}\nstderr={err}"
    m = LEDGER_SUMMARY.search(out)
    assert m, f"no ledger summary in {out!r}"
    assert "ledger OK" in out, out
    return m


# ---- a fake OpenAI upstream ------------------------------------------------------------------

class _FakeUpstream:
    """A fake upstream script from tests/fakes/ run on a free port (it prints its port)."""

    script: Path
    banner: str

    def __init__(self, timeout: float = 10.0, args=()):
        self.proc = subprocess.Popen([sys.executable, str(self.script), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.port = None
        line_box = []
        t = threading.Thread(target=lambda: line_box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        line = line_box[0].decode() if line_box else ""
        m = re.search(self.banner + r" listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.close()
            raise AssertionError(f"fake upstream did not start: {line!r}")
        self.port = int(m.group(1))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, **kw):
        r = requests.post(f"{self.origin}/_control", json=kw, timeout=5)
        assert r.status_code == 200, r.text

    def stats(self) -> dict:
        return requests.get(f"{self.origin}/_stats", timeout=5).json()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class FakeOpenAI(_FakeUpstream):
    script = FAKE_OPENAI
    banner = "fake-openai"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def reset(self):
        self.control(mode="ok", delay_ms=0, fail_every=0, fail_mode="500", noisy=False)
        assert requests.post(f"{self.origin}/_reset", timeout=5).status_code == 200


class FakeKie(_FakeUpstream):
    """tests/fakes/fake_kie.py: createTask / recordInfo / callbacks, with faults (see its doc)."""
    script = FAKE_KIE
    banner = "fake-kie"

    def __init__(self, delay_ms: int = 200, timeout: float = 10.0):
        super().__init__(timeout, args=("--delay-ms", str(delay_ms)))

    @property
    def base_url(self) -> str:
        return self.origin

    def reset(self):
        assert requests.post(f"{self.origin}/_reset", timeout=5).status_code == 200


# ---- a local image host for reference URLs ---------------------------------------------------

class ImageHost:
    """python http.server on 127.0.0.1:0 serving a temp dir; records the paths requested."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests = []
        host = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(host.root), **kw)

            def log_message(self, fmt, *args):
                host.requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def put(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
