"""Test-side helpers for the gateway's signed task callbacks (pure Python 3.11 standard library).

- sign() / verify(): an independent Standard Webhooks (https://www.standardwebhooks.com) signer
  and verifier. Headers: `webhook-id`, `webhook-timestamp` (integer unix seconds),
  `webhook-signature` (space-separated `v1,<base64>` entries, any one matching is enough).
  Signed content: b"{id}.{timestamp}." + body; key: base64-decoded secret after `whsec_`;
  signature: standard (padded) base64 of the HMAC-SHA256 digest.
- WebhookReceiver: a real HTTP server on 127.0.0.1:<free port> that records every request and
  answers according to a behaviour that can be changed at any time, per path if wanted.

Everything has a timeout; nothing here can hang a test run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.server
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
_TIMESTAMP_RE = re.compile(r"[0-9]{1,19}")


# ---- Standard Webhooks signing / verification -------------------------------------------------

class WebhookVerificationError(Exception):
    """Verification failed; `.reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _secret_key(secret: str) -> bytes:
    """The HMAC key: `whsec_<base64>` with the prefix removed, base64-decoded (strictly)."""
    if not isinstance(secret, str):
        raise TypeError("secret must be a str")
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"secret is not valid base64 after the {SECRET_PREFIX!r} prefix: {e}") from None
    if not key:
        raise ValueError("secret decodes to an empty key")
    return key


def _signature_b64(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    # Spec: sign f"{id}.{timestamp}.{body}" with the body decoded as UTF-8. Encoding the prefix
    # and appending the raw body bytes is byte-for-byte the same for any valid UTF-8 body.
    content = f"{msg_id}.{timestamp}.".encode("utf-8") + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Returns the `webhook-signature` entry `v1,<base64>` for this message (tests only)."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError("timestamp must be an int (unix seconds)")
    body = bytes(body)
    body.decode("utf-8")  # the spec signs the UTF-8 text of the body
    return "v1," + _signature_b64(_secret_key(secret), msg_id, str(timestamp), body)


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive lookup; a missing, empty or ambiguous header is a verification error."""
    found = []
    for k, v in headers.items():
        if str(k).lower() == name:
            found.append(v)
    if not found:
        raise WebhookVerificationError(f"missing header {name}")
    if len(found) > 1 and len(set(found)) > 1:
        raise WebhookVerificationError(f"header {name} given more than once with different values")
    value = found[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value is None or not str(value).strip():
        raise WebhookVerificationError(f"empty header {name}")
    return str(value)


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: int | None = None,
           tolerance: int = DEFAULT_TOLERANCE) -> None:
    """Checks a Standard Webhooks delivery; returns None or raises WebhookVerificationError.

    `headers`: any mapping (dict, requests' CaseInsensitiveDict, email.message.Message ...),
    looked up case-insensitively. `now`: unix seconds (default: time.time()). A timestamp more
    than `tolerance` seconds before or after `now` is rejected. Entries of `webhook-signature`
    whose version is not `v1` are ignored; any one matching `v1` entry is enough.
    """
    key = _secret_key(secret)
    msg_id = _header(headers, "webhook-id")
    ts_text = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")

    if not _TIMESTAMP_RE.fullmatch(ts_text):
        raise WebhookVerificationError(f"invalid webhook-timestamp {ts_text!r} (want integer unix seconds)")
    ts = int(ts_text)
    now = int(time.time()) if now is None else int(now)
    if ts < now - tolerance:
        raise WebhookVerificationError(f"timestamp too old: {ts} is {now - ts}s before now ({now}), "
                                       f"tolerance {tolerance}s")
    if ts > now + tolerance:
        raise WebhookVerificationError(f"timestamp too new: {ts} is {ts - now}s after now ({now}), "
                                       f"tolerance {tolerance}s")

    body = bytes(body)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WebhookVerificationError(f"body is not valid UTF-8: {e}") from None

    expected = _signature_b64(key, msg_id, ts_text, body).encode("ascii")
    v1_entries = 0
    matched = False
    for entry in sig_header.split(" "):
        if not entry:
            continue
        version, sep, sig = entry.partition(",")
        if not sep or version != "v1":
            continue  # unknown versions (and garbage) are ignored
        v1_entries += 1
        # compare_digest on bytes: constant time; non-ASCII garbage just fails to match.
        if hmac.compare_digest(expected, sig.encode("utf-8", "surrogateescape")):
            matched = True  # keep looping: no early exit that depends on which entry matched
    if v1_entries == 0:
        raise WebhookVerificationError(f"no v1 signature in webhook-signature {sig_header!r}")
    if not matched:
        raise WebhookVerificationError(f"no matching v1 signature among {v1_entries} entr"
                                       f"{'y' if v1_entries == 1 else 'ies'}")


# ---- the receiver ------------------------------------------------------------------------------

MODES = ("ok", "status", "hang", "redirect", "fail_first", "slow")
DEFAULT_REDIRECT_TARGET = "/redirected"


@dataclass
class Delivery:
    """One request the receiver got. `status` is what it answered (None: no answer, `hang`)."""
    method: str
    path: str                      # the raw request target, query string included
    headers: dict                  # lower-cased names; repeated headers joined with ", "
    body: bytes
    received_at: float             # time.time() when the full body had been read
    status: int | None
    mode: str                      # the behaviour that answered it
    raw_headers: list = field(default_factory=list)  # [(name, value)] as received

    @property
    def route(self) -> str:
        """The path without the query string."""
        return urlsplit(self.path).path

    def json(self):
        return json.loads(self.body)

    def verify(self, secret: str, now: int | None = None, tolerance: int = DEFAULT_TOLERANCE) -> None:
        verify(secret, self.headers, self.body, now=now, tolerance=tolerance)

    def summary(self) -> str:
        body = self.body[:120]
        more = "..." if len(self.body) > 120 else ""
        return (f"{self.method} {self.path} -> {self.status} ({self.mode}) "
                f"webhook-id={self.headers.get('webhook-id')!r} body={body!r}{more}")


class _Behaviour:
    def __init__(self, mode: str, kw: dict):
        if mode not in MODES:
            raise ValueError(f"unknown behaviour {mode!r}; one of {', '.join(MODES)}")
        allowed = {
            "ok": set(),
            "status": {"code", "body"},
            "hang": set(),
            "redirect": {"to", "code"},
            "fail_first": {"n", "code"},
            "slow": {"seconds"},
        }[mode]
        unknown = set(kw) - allowed
        if unknown:
            raise ValueError(f"behaviour {mode!r} takes {sorted(allowed) or 'no options'}, "
                             f"not {sorted(unknown)}")
        self.mode = mode
        self.kw = dict(kw)
        if mode == "status":
            if "code" not in kw:
                raise ValueError("behaviour 'status' needs code=")
            self.code = int(kw["code"])
            if not 100 <= self.code <= 599:
                raise ValueError(f"bad status code {self.code}")
        elif mode == "redirect":
            self.code = int(kw.get("code", 302))
            if self.code not in (301, 302, 303, 307, 308):
                raise ValueError(f"redirect code must be a 3xx redirect, not {self.code}")
            self.to = kw.get("to", DEFAULT_REDIRECT_TARGET)
            if not self.to.startswith("/"):
                raise ValueError("redirect to= must be a path on this server, starting with '/'")
        elif mode == "fail_first":
            if "n" not in kw:
                raise ValueError("behaviour 'fail_first' needs n=")
            self.n = int(kw["n"])
            self.code = int(kw.get("code", 500))
            self.seen = 0  # guarded by the receiver's lock
        elif mode == "slow":
            if "seconds" not in kw:
                raise ValueError("behaviour 'slow' needs seconds=")
            self.seconds = float(kw["seconds"])

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.kw.items())
        return f"{self.mode}({opts})"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64


class WebhookReceiver:
    """A local webhook endpoint. Use as a context manager (or start()/stop()).

        with WebhookReceiver() as rx:
            rx.behave("fail_first", n=2)            # default for every path
            rx.behave("hang", path="/hang")         # this path only
            ... point the gateway at rx.url + "/cb" ...
            d = rx.wait_for(3)                      # first 3 deliveries, or AssertionError
            d[0].verify(secret)

    Every request gets its own thread and its own connection (answers carry `Connection:
    close`), so a hanging or slow answer never blocks another request or shutdown.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self._host = host
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._deliveries: list[Delivery] = []
        self._default = _Behaviour("ok", {})
        self._by_path: dict[str, _Behaviour] = {}
        self._redirect_targets: set[str] = set()
        self._stopping = threading.Event()
        self._handlers: set[threading.Thread] = set()
        self._httpd = None
        self._thread = None
        self.port = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "WebhookReceiver":
        if self._httpd is not None:
            raise RuntimeError("receiver already started")
        self._stopping.clear()
        self._httpd = _Server((self._host, 0), self._handler_class())
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"webhook-receiver:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Releases hanging/slow handlers, stops accepting, closes the listening socket."""
        if self._httpd is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        httpd, self._httpd = self._httpd, None
        httpd.shutdown()
        httpd.server_close()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            handlers = list(self._handlers)
        for t in handlers:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("receiver not started")
        return f"http://{self._host}:{self.port}"

    def url_for(self, path: str = "/") -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    # ---- behaviour ---------------------------------------------------------------------------
    def behave(self, mode: str, path: str | None = None, **kw) -> None:
        """Sets how requests are answered, from now on; `path=None` sets the default.

        ok                      200 `{}` (application/json)
        status, code=, body=    that status (body: bytes/str/JSON-able; default a small JSON)
        hang                    never answer; released (connection closed) when the receiver stops
        redirect, to=, code=    302 (or code) with Location: <url><to> (default /redirected)
        fail_first, n=, code=   500 (or code) for the first n requests, then 200
        slow, seconds=          wait that long, then 200

        Each call starts a fresh behaviour (fail_first counts from 0 again).
        """
        b = _Behaviour(mode, kw)
        if path is not None and not path.startswith("/"):
            raise ValueError("path must start with '/'")
        with self._lock:
            if mode == "redirect":
                self._redirect_targets.add(urlsplit(b.to).path)
            if path is None:
                self._default = b
            else:
                self._by_path[urlsplit(path).path] = b

    def reset(self) -> None:
        """Default `ok`, no per-path behaviours, no recorded deliveries."""
        with self._lock:
            self._default = _Behaviour("ok", {})
            self._by_path.clear()
            self._redirect_targets.clear()
            self._deliveries.clear()

    # ---- what was received --------------------------------------------------------------------
    @property
    def deliveries(self) -> list[Delivery]:
        """A snapshot (copy) of every request so far, in arrival order."""
        with self._lock:
            return list(self._deliveries)

    def hits(self, path: str) -> list[Delivery]:
        """Deliveries whose path (query ignored) equals `path`."""
        route = urlsplit(path).path
        return [d for d in self.deliveries if d.route == route]

    @property
    def redirect_targets(self) -> set[str]:
        with self._lock:
            return set(self._redirect_targets)

    @property
    def redirect_followed(self) -> bool:
        """True if any request ever reached a path some `redirect` behaviour pointed to."""
        with self._lock:
            return any(d.route in self._redirect_targets for d in self._deliveries)

    def wait_for(self, n: int, timeout: float = 10.0, path: str | None = None) -> list[Delivery]:
        """The first n deliveries (to `path` only, if given); AssertionError after `timeout` s."""
        route = None if path is None else urlsplit(path).path
        deadline = time.monotonic() + timeout

        def matching():
            return [d for d in self._deliveries if route is None or d.route == route]

        with self._cond:
            while True:
                got = matching()
                if len(got) >= n:
                    return got[:n]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            where = "" if route is None else f" to {route}"
            lines = [d.summary() for d in self._deliveries] or ["(none)"]
            behaviours = ", ".join([f"default={self._default!r}"] +
                                   [f"{p}={b!r}" for p, b in sorted(self._by_path.items())])
            raise AssertionError(
                f"expected {n} webhook deliveries{where} within {timeout}s at {self.url}, "
                f"got {len(got)}; behaviours: {behaviours}; all requests received "
                f"({len(self._deliveries)}):\n  " + "\n  ".join(lines))

    # ---- request handling ---------------------------------------------------------------------
    def _pick(self, route: str) -> tuple[_Behaviour, int | None]:
        """Chooses the behaviour and the status it will answer (None: hang). Lock held."""
        b = self._by_path.get(route, self._default)
        if b.mode == "ok" or b.mode == "slow":
            return b, 200
        if b.mode in ("status", "redirect"):
            return b, b.code
        if b.mode == "fail_first":
            b.seen += 1
            return b, (b.code if b.seen <= b.n else 200)
        return b, None  # hang

    def _handler_class(self):
        rx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "webhook-receiver"
            sys_version = ""
            timeout = 30  # socket timeout for reading a request from a stalled client

            def log_message(self, fmt, *args):
                pass

            def handle(self):
                me = threading.current_thread()
                with rx._lock:
                    rx._handlers.add(me)
                try:
                    super().handle()
                except (ConnectionError, TimeoutError, OSError):
                    pass
                finally:
                    with rx._lock:
                        rx._handlers.discard(me)

            def _read_body(self) -> bytes:
                te = (self.headers.get("Transfer-Encoding") or "").lower()
                if "chunked" in te:
                    out = bytearray()
                    while True:
                        line = self.rfile.readline(65537)
                        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline(65537)  # CRLF after the chunk
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n > 0 else b""

            def _send(self, code: int, body: bytes = b"", ctype: str = "application/json",
                      extra: dict | None = None):
                self.send_response(code)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                if body or code not in (204, 304) and code >= 200:
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if body:
                    self.wfile.write(body)
                self.wfile.flush()

            def _serve(self):
                self.close_connection = True
                try:
                    body = self._read_body()
                except ValueError:
                    self._send(400, b'{"error": "malformed request body"}')
                    return
                received_at = time.time()
                headers: dict = {}
                raw = list(self.headers.items())
                for k, v in raw:
                    k = k.lower()
                    headers[k] = f"{headers[k]}, {v}" if k in headers else v
                route = urlsplit(self.path).path
                with rx._cond:
                    b, status = rx._pick(route)
                    rx._deliveries.append(Delivery(self.command, self.path, headers, body,
                                                   received_at, status, b.mode, raw))
                    rx._cond.notify_all()

                if b.mode == "hang":
                    rx._stopping.wait()
                    return  # connection closed without an answer
                if b.mode == "slow" and rx._stopping.wait(b.seconds):
                    return
                if b.mode == "redirect":
                    self._send(status, b"", extra={"Location": rx.url + b.to})
                elif b.mode == "status":
                    payload = b.kw.get("body")
                    if payload is None:
                        payload = json.dumps({"error": f"receiver answered {status}"}).encode()
                    elif isinstance(payload, str):
                        payload = payload.encode()
                    elif not isinstance(payload, (bytes, bytearray)):
                        payload = json.dumps(payload).encode()
                    self._send(status, bytes(payload) if status not in (204, 304) else b"")
                elif status == 200:
                    self._send(200, b"{}")
                else:
                    self._send(status, json.dumps({"error": f"receiver answered {status}"}).encode())

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler
