#!/usr/bin/env python3
"""Fake OpenAI Images API upstream for tests and benchmarks.

A real local HTTP/1.1 server (asyncio, so thousands of slow requests cost no threads) that
answers POST /v1/images/generations and /v1/images/edits like OpenAI, and can be told to
misbehave. The behaviour comes from, in order of precedence:

  * the request header  X-Fake-Mode: <mode>[;delay_ms=N]
  * the control API     POST /_control {"mode": ..., "delay_ms": N, "fail_every": K, ...}
  * command-line flags  --mode --delay-ms

Modes: ok, slow (delay then ok), 500, 503, 429, 400 (moderation-style client error),
401, reset (close the socket mid-body), garbage (200 with a non-JSON body), hang (never answer),
stream_reset (a stream that sends its first partial image, then closes the socket),
stream_linger (a whole stream and `data: [DONE]`, then the response is never ended),
stream_cut (a whole stream, then the socket closes before the final chunk).
fail_every=K makes every K-th request fail with `fail_mode` (default 500) and the rest ok.

GET /_stats returns counters; POST /_reset clears them. The listening port is printed as
"fake-openai listening on 127.0.0.1:PORT" (use --port 0 for a free port).
"""

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
import zlib


def make_png(width, height, seed=0, noisy=False):
    """A valid RGB PNG of the given size (pure Python, zlib)."""
    width = max(1, min(int(width), 8192))
    height = max(1, min(int(height), 8192))
    if noisy:
        rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))
    else:
        r, g, b = (seed * 67) % 256, (seed * 131 + 80) % 256, (seed * 29 + 160) % 256
        row = b"\x00" + bytes([r, g, b]) * width
        rows = row * height

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


class State:
    def __init__(self, mode, delay_ms):
        self.mode = mode
        self.delay_ms = delay_ms
        self.fail_every = 0
        self.fail_mode = "500"
        self.noisy = False
        self.png_cache = {}
        self.stats = {"requests": 0, "generations": 0, "edits": 0, "failures": 0, "connections": 0, "in_flight": 0, "max_in_flight": 0,
                      "lingering": 0}
        self.last_requests = []

    def png(self, w, h, seed):
        key = (w, h, seed % 8, self.noisy)
        if key not in self.png_cache:
            self.png_cache[key] = make_png(w, h, seed, self.noisy)
        return self.png_cache[key]


def parse_size(size):
    try:
        w, h = str(size).lower().split("x")
        return int(w), int(h)
    except Exception:
        return 64, 64


def parse_multipart(content_type, body):
    fields, files = {}, []
    boundary = None
    for part in content_type.split(";"):
        part = part.strip()
        if part.lower().startswith("boundary="):
            boundary = part[9:].strip('"')
    if not boundary:
        return fields, files
    for chunk in body.split(b"--" + boundary.encode()):
        if not chunk or chunk.startswith(b"--"):
            continue
        chunk = chunk.lstrip(b"\r\n")
        head, _, data = chunk.partition(b"\r\n\r\n")
        data = data[:-2] if data.endswith(b"\r\n") else data
        disp = head.decode("latin-1")
        name = filename = None
        for token in disp.replace("\r\n", ";").split(";"):
            token = token.strip()
            if token.startswith("name="):
                name = token[5:].strip('"')
            elif token.startswith("filename="):
                filename = token[9:].strip('"')
        if filename is not None:
            files.append({"name": name, "filename": filename, "size": len(data)})
        elif name:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
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
    return method, target, headers, body


def response(status, body, content_type="application/json", extra=None):
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
              500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "X")
    if isinstance(body, str):
        body = body.encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    for k, v in (extra or {}).items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


def error_body(message, etype, code):
    return json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})


async def handle_images(state, writer, method, target, headers, body, reader=None):
    state.stats["requests"] += 1
    edit = target.startswith("/v1/images/edits")
    state.stats["edits" if edit else "generations"] += 1
    mode, delay_ms = state.mode, state.delay_ms
    override = headers.get("x-fake-mode")
    if override:
        parts = override.split(";")
        mode = parts[0].strip()
        for p in parts[1:]:
            if p.strip().startswith("delay_ms="):
                delay_ms = int(p.strip()[9:])
    if state.fail_every and state.stats["requests"] % state.fail_every == 0:
        mode = state.fail_mode
    if mode == "slow" and delay_ms == 0:
        delay_ms = 2000
    if edit:
        fields, files = parse_multipart(headers.get("content-type", ""), body)
    else:
        try:
            fields, files = json.loads(body or b"{}"), []
        except ValueError:
            writer.write(response(400, error_body("invalid JSON", "invalid_request_error", "invalid_json")))
            return
    state.last_requests = (state.last_requests + [{"path": target, "fields": fields, "files": files,
                                                   "authorization": headers.get("authorization", "")}])[-20:]
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode in ("500", "503", "429", "401", "400"):
        state.stats["failures"] += 1
        status = int(mode)
        etype = {"400": "invalid_request_error", "401": "authentication_error", "429": "rate_limit_error"}.get(mode, "server_error")
        msg = "Your request was rejected by the safety system." if mode == "400" else f"fake upstream {mode}"
        code = "moderation_blocked" if mode == "400" else None
        extra = {"Retry-After": "1"} if mode == "429" else None
        writer.write(response(status, error_body(msg, etype, code), extra=extra))
        return
    if mode == "garbage":
        state.stats["failures"] += 1
        writer.write(response(200, b"<html>definitely not json", "text/html"))
        return
    n = int(fields.get("n", 1) or 1)
    w, h = parse_size(fields.get("size", "1024x1024")) if fields.get("size") not in (None, "auto") else (1024, 1024)
    fmt = fields.get("output_format", "png")
    images = [state.png(w, h, i + state.stats["requests"]) for i in range(n)]
    usage = {"total_tokens": 100 + 50 * n, "input_tokens": 50, "output_tokens": 50 * n + 50,
             "input_tokens_details": {"text_tokens": 40, "image_tokens": 10 * len(files)}}
    stream = str(fields.get("stream", "false")).lower() == "true"
    if stream:
        prefix = "image_edit" if edit else "image_generation"
        partials = int(fields.get("partial_images", 0) or 0)
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head.encode())
        common = {"created_at": int(time.time()), "size": f"{w}x{h}", "quality": fields.get("quality", "auto"),
                  "background": fields.get("background", "opaque"), "output_format": fmt}
        events = []
        for i in range(partials):
            events.append((f"{prefix}.partial_image", dict(common, type=f"{prefix}.partial_image", partial_image_index=i,
                                                          b64_json=base64.b64encode(state.png(max(1, w // 8), max(1, h // 8), i)).decode())))
        events.append((f"{prefix}.completed", dict(common, type=f"{prefix}.completed",
                                                   b64_json=base64.b64encode(images[0]).decode(), usage=usage)))
        for name, data in events:
            payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            await writer.drain()
            if mode == "stream_reset":
                state.stats["failures"] += 1
                writer.transport.abort()
                raise ConnectionResetError
        if mode == "stream_linger":
            payload = b"data: [DONE]\n\n"
            writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            await writer.drain()
            state.stats["lingering"] += 1
            try:
                while await reader.read(4096):  # until the client hangs up (EOF)
                    pass
            finally:
                state.stats["lingering"] -= 1
            raise ConnectionResetError
        if mode == "stream_cut":
            await writer.drain()
            writer.transport.abort()
            raise ConnectionResetError
        writer.write(b"0\r\n\r\n")
        return
    body = json.dumps({"created": int(time.time()), "data": [{"b64_json": base64.b64encode(img).decode()} for img in images],
                       "usage": usage, "size": f"{w}x{h}", "quality": fields.get("quality", "auto"),
                       "output_format": fmt, "background": fields.get("background", "opaque")})
    if mode == "reset":
        state.stats["failures"] += 1
        raw = response(200, body)
        writer.write(raw[: len(raw) // 2])
        await writer.drain()
        writer.transport.abort()
        raise ConnectionResetError
    writer.write(response(200, body))


async def serve_connection(state, reader, writer):
    state.stats["connections"] += 1
    try:
        while True:
            try:
                method, target, headers, body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
                return
            path = target.split("?")[0]
            if path == "/_stats":
                writer.write(response(200, json.dumps(dict(state.stats, last_requests=state.last_requests))))
            elif path == "/_reset" and method == "POST":
                for k in state.stats:
                    state.stats[k] = 0
                state.last_requests = []
                writer.write(response(200, "{}"))
            elif path == "/_control" and method == "POST":
                ctl = json.loads(body or b"{}")
                state.mode = ctl.get("mode", state.mode)
                state.delay_ms = int(ctl.get("delay_ms", state.delay_ms))
                state.fail_every = int(ctl.get("fail_every", state.fail_every))
                state.fail_mode = str(ctl.get("fail_mode", state.fail_mode))
                state.noisy = bool(ctl.get("noisy", state.noisy))
                writer.write(response(200, "{}"))
            elif method == "POST" and path in ("/v1/images/generations", "/v1/images/edits"):
                state.stats["in_flight"] += 1
                state.stats["max_in_flight"] = max(state.stats["max_in_flight"], state.stats["in_flight"])
                try:
                    await handle_images(state, writer, method, path, headers, body, reader)
                finally:
                    state.stats["in_flight"] -= 1
            else:
                writer.write(response(404, error_body("unknown route", "invalid_request_error", "not_found")))
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
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
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--delay-ms", type=int, default=0)
    args = ap.parse_args()
    state = State(args.mode, args.delay_ms)
    server = await asyncio.start_server(lambda r, w: serve_connection(state, r, w), args.host, args.port,
                                        limit=256 * 1024 * 1024, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"fake-openai listening on {args.host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
