#!/usr/bin/env python3
"""Fake Kie.ai-style async task upstream for tests.

A real local HTTP/1.1 server (asyncio, one thread, keep-alive; hundreds of concurrent or hung
connections cost no threads) that speaks Kie's create-task / poll / callback protocol:

  POST /api/v1/jobs/createTask      {"model": str, "callBackUrl": str (optional), "input": {...}}
       -> 200 {"code":200,"msg":"success","data":{"taskId":"<32 hex>"}}
          bad JSON / missing model or input -> HTTP 200 {"code":400,"msg":"..."} (as Kie does)
  GET  /api/v1/jobs/recordInfo?taskId=ID
       -> 200 {"code":200,"msg":"success","data":{"taskId","model","state","param","resultJson",
                "failCode","failMsg","costTime","completeTime","createTime"}}
          unknown id -> HTTP 200 {"code":404,"msg":"task not found"}
  GET  /files/<taskId>/<i>.png      a 64x64 solid PNG whose colour depends on (taskId, i)

Both /api/v1 routes need "Authorization: Bearer <key>" (--api-key, default "test-kie-key");
otherwise HTTP 401 {"code":401,"msg":"unauthorized"}. /files/ and the control routes are open.

A task goes waiting -> queuing -> generating -> success | fail, one third of delay_ms each
(default 200). On success resultJson is a JSON *string* {"resultUrls":[one URL per input.n]}.
On reaching a final state with a callBackUrl, the fake POSTs recordInfo's exact reply to it
(Content-Type: application/json); the outcome is counted in /_stats, never retried.

Control (no auth):
  POST /_control {"mode": M, "delay_ms": N, "delay_max_ms": X, "fail_first_n_creates": K,
                  "api_key": S}   (delay_max_ms > delay_ms: each task's delay is drawn
                  uniformly from [delay_ms, delay_max_ms])
       merged into the current settings; unknown keys or values -> HTTP 400. Replies the settings.
  POST /_reset   settings back to the command-line defaults; forgets tasks, zeroes stats, cancels
                 pending state changes and callbacks, and drops connections held by create_hang.
  GET  /_stats   counters, settings and every task.

Modes (captured by each task when it is created, except the create_* modes, which apply to each
createTask call, and garbage, which applies to each recordInfo call):
  ok                   the normal flow
  never_finish         stops in "generating" forever (no callback)
  fail                 ends in "fail" with failCode "500", failMsg "internal error", resultJson ""
  result_404           ends in "success" but the result URLs answer 404
  duplicate_callbacks  sends the final callback twice (one after the other)
  no_callback          never calls back, even with a callBackUrl
  create_500           createTask answers HTTP 500 {"code":500,"msg":"internal server error"}
  create_429           createTask answers HTTP 429 {"code":429,"msg":"rate limited"}, Retry-After: 1
  create_hang          createTask never answers (until /_reset)
  garbage              recordInfo answers HTTP 200 with non-JSON bytes
fail_first_n_creates=K: the next K createTask calls answer HTTP 503 {"code":503,"msg":...}
(before any mode applies), then it is back to normal.

The listening port is printed as "fake-kie listening on 127.0.0.1:PORT" (--port 0 for a free
port); nothing else is written to stdout or stderr.
"""

import argparse
import asyncio
import hashlib
import json
import re
import secrets
import struct
import sys
import time
import zlib
from urllib.parse import parse_qs, urlsplit

MODES = ("ok", "never_finish", "fail", "result_404", "duplicate_callbacks", "no_callback",
         "create_500", "create_429", "create_hang", "garbage")
KNOBS = ("mode", "delay_ms", "delay_max_ms", "fail_first_n_creates", "api_key")
PNG_SIZE = 64
MAX_N = 16
CALLBACK_TIMEOUT = 5.0
FILE_RE = re.compile(r"/files/([0-9A-Za-z_-]+)/(\d+)\.png")


def make_png(width, height, rgb):
    """A valid solid-colour RGB PNG (pure Python, zlib)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = (b"\x00" + bytes(rgb) * width) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def task_colour(task_id, index):
    return hashlib.sha256(f"{task_id}/{index}".encode()).digest()[:3]


def now_ms():
    return int(time.time() * 1000)


def response(status, body, content_type="application/json", extra=None):
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
              429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "X")
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    for k, v in (extra or {}).items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


def kie_error(code, msg):
    """Kie's in-body error: HTTP 200 with {"code": N, "msg": ...}."""
    return response(200, {"code": code, "msg": msg})


async def read_request(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return method, target, version, headers, body


class Task:
    def __init__(self, task_id, model, inp, callback_url, param, n, mode, delay_ms):
        self.task_id = task_id
        self.model = model
        self.input = inp
        self.callback_url = callback_url
        self.param = param
        self.n = n
        self.mode = mode
        self.delay_ms = delay_ms
        self.create_time = now_ms()
        self.complete_time = None
        self.state = "waiting"
        self.history = [["waiting", 0]]  # [state, ms since create]
        self.callbacks = []  # HTTP status of each callback attempt (null when there was no reply)

    def set_state(self, state):
        self.state = state
        t = now_ms()
        if state in ("success", "fail"):
            self.complete_time = t
        self.history.append([state, t - self.create_time])


class Fake:
    def __init__(self, host, port, defaults):
        self.host = host
        self.port = port
        self.defaults = dict(defaults)
        self.runners = set()  # asyncio tasks driving Kie tasks (state changes + callbacks)
        self.hangs = set()  # futures held by create_hang requests
        self.reset()

    # ---- state ----------------------------------------------------------------------------
    def reset(self):
        for r in list(getattr(self, "runners", ())):
            r.cancel()
        self.runners = set()
        for f in list(getattr(self, "hangs", ())):
            if not f.done():
                f.set_result(None)
        self.hangs = set()
        self.settings = dict(self.defaults)
        self.fail_creates_left = int(self.settings["fail_first_n_creates"])
        self.tasks = {}
        self.callback_log = []
        self.stats = {"creates": 0, "record_polls": 0, "callbacks_sent": 0, "callbacks_failed": 0,
                      "callbacks_suppressed": 0, "file_downloads": 0, "file_404s": 0, "unauthorized": 0,
                      "connections": 0}

    @property
    def public_base(self):
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def record_reply(self, task):
        final = task.state in ("success", "fail")
        result = ""
        if task.state == "success":
            result = json.dumps({"resultUrls": [f"{self.public_base}/files/{task.task_id}/{i}.png"
                                                for i in range(task.n)]})
        failed = task.state == "fail"
        return {"code": 200, "msg": "success", "data": {
            "taskId": task.task_id,
            "model": task.model,
            "state": task.state,
            "param": task.param,
            "resultJson": result,
            "failCode": "500" if failed else "",
            "failMsg": "internal error" if failed else "",
            "costTime": (task.complete_time - task.create_time) if final else 0,
            "completeTime": task.complete_time,
            "createTime": task.create_time,
        }}

    def stats_reply(self):
        tasks = {tid: {"state": t.state, "model": t.model, "input": t.input, "callBackUrl": t.callback_url,
                       "n": t.n, "mode": t.mode, "delay_ms": t.delay_ms, "history": t.history,
                       "callbacks": t.callbacks}
                 for tid, t in self.tasks.items()}
        return dict(self.stats, fail_first_n_creates_left=self.fail_creates_left, settings=self.settings,
                    callback_log=self.callback_log, tasks=tasks)

    # ---- task lifecycle -------------------------------------------------------------------
    def start_runner(self, task):
        runner = asyncio.get_running_loop().create_task(self.run_task(task))
        self.runners.add(runner)
        runner.add_done_callback(self.runners.discard)

    async def run_task(self, task):
        try:
            step = task.delay_ms / 3000
            for state in ("queuing", "generating"):
                await asyncio.sleep(step)
                task.set_state(state)
            if task.mode == "never_finish":
                return
            await asyncio.sleep(step)
            task.set_state("fail" if task.mode == "fail" else "success")
            if not task.callback_url:
                return
            if task.mode == "no_callback":
                self.stats["callbacks_suppressed"] += 1
                return
            body = json.dumps(self.record_reply(task)).encode()
            for _ in range(2 if task.mode == "duplicate_callbacks" else 1):
                await self.send_callback(task, body)
        except asyncio.CancelledError:
            pass  # /_reset

    async def send_callback(self, task, body):
        url = task.callback_url
        status, error, writer = None, None, None
        try:
            u = urlsplit(url)
            if u.scheme != "http" or not u.hostname:
                raise ValueError("only http:// callback URLs are supported")
            port = u.port or 80
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
            host_header = u.netloc.rpartition("@")[2]
            reader, writer = await asyncio.wait_for(asyncio.open_connection(u.hostname, port), CALLBACK_TIMEOUT)
            writer.write((f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: fake-kie\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                          f"Connection: close\r\n\r\n").encode() + body)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CALLBACK_TIMEOUT)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ValueError(f"bad status line {head[:80]!r}")
            status = int(parts[1])
            m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            if m and int(m.group(1)) <= 1 << 20:
                await asyncio.wait_for(reader.readexactly(int(m.group(1))), CALLBACK_TIMEOUT)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            error = "timeout"
        except Exception as e:  # refused, reset, bad URL, bad reply: counted, never raised
            if status is None:
                error = f"{type(e).__name__}: {e}"
            elif not 200 <= status < 300:
                error = f"HTTP {status}"
        finally:
            if writer is not None:
                writer.close()
        self.stats["callbacks_failed" if error else "callbacks_sent"] += 1
        task.callbacks.append(status)
        self.callback_log = (self.callback_log + [{"taskId": task.task_id, "url": url, "state": task.state,
                                                   "status": status, "error": error}])[-100:]

    # ---- routes ---------------------------------------------------------------------------
    def authorized(self, headers):
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() == self.settings["api_key"]:
            return True
        self.stats["unauthorized"] += 1
        return False

    async def create_task(self, body):
        self.stats["creates"] += 1
        if self.fail_creates_left > 0:
            self.fail_creates_left -= 1
            return response(503, {"code": 503, "msg": "service unavailable"})
        mode = self.settings["mode"]
        if mode == "create_500":
            return response(500, {"code": 500, "msg": "internal server error"})
        if mode == "create_429":
            return response(429, {"code": 429, "msg": "rate limited"}, extra={"Retry-After": "1"})
        if mode == "create_hang":
            fut = asyncio.get_running_loop().create_future()
            self.hangs.add(fut)
            await fut  # released (and the connection dropped) by /_reset
            return None
        try:
            req = json.loads(body)
        except (ValueError, RecursionError):
            return kie_error(400, "invalid JSON body")
        if not isinstance(req, dict):
            return kie_error(400, "request body must be a JSON object")
        model, inp, cb = req.get("model"), req.get("input"), req.get("callBackUrl")
        if not isinstance(model, str) or not model:
            return kie_error(400, "model is required")
        if not isinstance(inp, dict):
            return kie_error(400, "input is required and must be an object")
        if cb is not None and not isinstance(cb, str):
            return kie_error(400, "callBackUrl must be a string")
        n = inp.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            return kie_error(400, f"input.n must be an integer from 1 to {MAX_N}")
        task_id = secrets.token_hex(16)
        delay = int(self.settings["delay_ms"])
        top = int(self.settings.get("delay_max_ms", 0))
        if top > delay:  # each task draws its own delay from [delay_ms, delay_max_ms]
            delay += secrets.randbelow(top - delay + 1)
        task = Task(task_id, model, inp, cb or None, json.dumps(req), n, mode, delay)
        self.tasks[task_id] = task
        self.start_runner(task)
        return response(200, {"code": 200, "msg": "success", "data": {"taskId": task_id}})

    def record_info(self, query):
        self.stats["record_polls"] += 1
        if self.settings["mode"] == "garbage":
            return response(200, b"<html><body>502 Bad Gateway</body></html>\n\x00\xff", "text/html")
        task_id = parse_qs(query).get("taskId", [""])[0]
        if not task_id:
            return kie_error(400, "taskId is required")
        task = self.tasks.get(task_id)
        if task is None:
            return kie_error(404, "task not found")
        return response(200, self.record_reply(task))

    def file(self, path):
        m = FILE_RE.fullmatch(path)
        task = self.tasks.get(m.group(1)) if m else None
        if (task is None or task.state != "success" or task.mode == "result_404"
                or int(m.group(2)) >= task.n):
            self.stats["file_404s"] += 1
            return response(404, {"code": 404, "msg": "file not found"})
        self.stats["file_downloads"] += 1
        return response(200, make_png(PNG_SIZE, PNG_SIZE, task_colour(task.task_id, int(m.group(2)))), "image/png")

    def control(self, body):
        try:
            ctl = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            return response(400, {"error": "invalid JSON"})
        if not isinstance(ctl, dict):
            return response(400, {"error": "expected a JSON object"})
        unknown = sorted(set(ctl) - set(KNOBS))
        if unknown:
            return response(400, {"error": f"unknown control keys {unknown}; known: {list(KNOBS)}"})
        if "mode" in ctl and ctl["mode"] not in MODES:
            return response(400, {"error": f"unknown mode {ctl['mode']!r}; known: {list(MODES)}"})
        for k in ("delay_ms", "delay_max_ms", "fail_first_n_creates"):
            if k in ctl and (isinstance(ctl[k], bool) or not isinstance(ctl[k], int) or ctl[k] < 0):
                return response(400, {"error": f"{k} must be a non-negative integer"})
        if "api_key" in ctl and (not isinstance(ctl["api_key"], str) or not ctl["api_key"]):
            return response(400, {"error": "api_key must be a non-empty string"})
        self.settings.update(ctl)
        if "fail_first_n_creates" in ctl:
            self.fail_creates_left = ctl["fail_first_n_creates"]
        return response(200, self.settings)

    async def route(self, method, target, headers, body):
        path, _, query = target.partition("?")
        if path == "/_stats" and method == "GET":
            return response(200, self.stats_reply())
        if path == "/_reset" and method == "POST":
            self.reset()
            return response(200, "{}")
        if path == "/_control" and method == "POST":
            return self.control(body)
        if path == "/api/v1/jobs/createTask":
            if method != "POST":
                return response(405, {"code": 405, "msg": "method not allowed"})
            if not self.authorized(headers):
                return response(401, {"code": 401, "msg": "unauthorized"})
            return await self.create_task(body)
        if path == "/api/v1/jobs/recordInfo":
            if method != "GET":
                return response(405, {"code": 405, "msg": "method not allowed"})
            if not self.authorized(headers):
                return response(401, {"code": 401, "msg": "unauthorized"})
            return self.record_info(query)
        if path.startswith("/files/") and method == "GET":
            return self.file(path)
        return response(404, {"code": 404, "msg": "not found"})

    async def serve_connection(self, reader, writer):
        self.stats["connections"] += 1
        try:
            while True:
                try:
                    method, target, version, headers, body = await read_request(reader, writer)
                except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
                    return
                conn = headers.get("connection", "").lower()
                close = conn == "close" or (version.upper() == "HTTP/1.0" and conn != "keep-alive")
                raw = await self.route(method, target, headers, body)
                if raw is None:  # create_hang released by /_reset: drop the connection unanswered
                    writer.transport.abort()
                    return
                if close:
                    head, sep, rest = raw.partition(b"\r\n\r\n")
                    raw = head + b"\r\nConnection: close" + sep + rest
                writer.write(raw)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default="test-kie-key")
    ap.add_argument("--mode", default="ok", choices=MODES)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--delay-max-ms", type=int, default=0,
                    help="if above --delay-ms, each task's delay is uniform in [delay, max]")
    args = ap.parse_args()
    fake = Fake(args.host, 0, {"mode": args.mode, "delay_ms": args.delay_ms,
                               "delay_max_ms": args.delay_max_ms, "fail_first_n_creates": 0,
                               "api_key": args.api_key})
    server = await asyncio.start_server(fake.serve_connection, args.host, args.port,
                                        limit=64 * 1024 * 1024, backlog=4096)
    fake.port = server.sockets[0].getsockname()[1]
    print(f"fake-kie listening on {args.host}:{fake.port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
