"""Black-box test harness for imagegate.

Starts the real binary (env IMAGEGATE_BIN, default build/debug/imagegate relative to the repo
root), talks to it over real TCP/HTTP and drives the real admin CLI. Nothing is mocked.

Every process started here is cleaned up at teardown, even when a test fails, and every wait
has a timeout so a broken server can never hang the suite.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# Debug builds run under ASan + UBSan: startup and CLI calls are slower than usual.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0

LISTEN_RE = re.compile(
    r"^imagegate listening on http://(?P<host>[^\s:]+):(?P<port>\d+) "
    r"\(public URL (?P<public>\S+), data in (?P<data>.+)\)$"
)
KEY_RE = re.compile(r"^sk-[0-9A-Za-z]{43}$")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def resolve_bin() -> Path:
    raw = os.environ.get("IMAGEGATE_BIN", "build/debug/imagegate")
    p = Path(raw)
    if not p.is_absolute():
        p = (REPO_ROOT / p) if not p.exists() else p.resolve()
    return p


def base_env() -> dict:
    """The caller's environment minus any IMAGEGATE_* variable, so tests are hermetic."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


def error_lines(stderr: str) -> list:
    return [l for l in stderr.splitlines() if l.strip()]


def assert_one_error_line(rc: int, stderr: str, *needles: str) -> str:
    """A failing CLI command: non-zero exit and exactly one stderr line 'imagegate: error: ...'."""
    assert rc != 0, f"expected a non-zero exit, got 0 (stderr={stderr!r})"
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected exactly one stderr line, got {lines!r}"
    assert lines[0].startswith("imagegate: error:"), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


class Instance:
    """A config file + data dir, and the CLI bound to them (no server needed)."""

    def __init__(self, bin_path: Path, workdir: Path, extra_toml: str = "", env: dict = None,
                 write_data_dir: bool = True):
        self.bin = Path(bin_path)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "imagegate.toml"
        text = f'data_dir = "{self.data_dir}"\n' if write_data_dir else ""
        self.config_path.write_text(text + extra_toml)
        self.extra_env = dict(env or {})

    @property
    def db_path(self) -> Path:
        return self.data_dir / "imagegate.db"

    def env(self) -> dict:
        e = base_env()
        e.update(self.extra_env)
        return e

    def cli_argv(self, *args) -> list:
        return [str(self.bin), "--config", str(self.config_path), *map(str, args)]

    def cli(self, *args, timeout: float = CLI_TIMEOUT, env: dict = None):
        """Runs `imagegate --config CFG ARGS...`; returns (rc, stdout, stderr)."""
        e = self.env()
        if env:
            e.update(env)
        p = subprocess.run(self.cli_argv(*args), capture_output=True, text=True,
                           errors="replace", timeout=timeout, env=e, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr

    def cli_ok(self, *args, **kw) -> str:
        rc, out, err = self.cli(*args, **kw)
        assert rc == 0, f"imagegate {' '.join(map(str, args))} failed rc={rc}\nstdout={out}\nstderr={err}"
        return out

    def create_user(self, email: str, credits=None) -> str:
        """Creates a user and a key (and grants credits); returns the key."""
        self.cli_ok("users", "add", email, "--password", "correct-horse-battery")
        key = self.cli_ok("keys", "create", email).strip()
        assert KEY_RE.match(key), key
        if credits is not None:
            self.cli_ok("credits", "grant", email, str(credits))
        return key


class Server(Instance):
    """A running `imagegate serve` on a free port, with its stdout/stderr collected."""

    def __init__(self, bin_path, workdir, extra_toml: str = "", env: dict = None, **kw):
        super().__init__(bin_path, workdir, extra_toml, env, **kw)
        self.proc = None
        self.port = None
        self.stdout_lines = []
        self.stderr_lines = []
        self.all_stderr = []  # across restarts, for the sanitizer check
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._threads = []
        self.banner = {}
        self.serve_argv = None  # default: BIN --config CFG serve
        self.set_listen_env = True  # IMAGEGATE_LISTEN=127.0.0.1:0 unless already in env

    # ---- lifecycle -------------------------------------------------------------------------
    def server_env(self) -> dict:
        e = self.env()
        if self.set_listen_env:
            e.setdefault("IMAGEGATE_LISTEN", "127.0.0.1:0")
        return e

    def _reader(self, stream, sink):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                sink.append(line)
                if sink is self.stderr_lines:
                    self.all_stderr.append(line)
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    def spawn(self, argv=None):
        """Starts the process without waiting for it to listen."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.stdout_lines = []
        self.stderr_lines = []
        self.port = None  # self.banner is kept: the bootstrap key stays valid across restarts
        argv = argv or self.serve_argv or [str(self.bin), "--config", str(self.config_path), "serve"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=self.server_env())
        self._threads = [
            threading.Thread(target=self._reader, args=(self.proc.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._reader, args=(self.proc.stderr, self.stderr_lines), daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self.proc

    def start(self, timeout: float = START_TIMEOUT):
        self.spawn()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.stdout_lines:
                    m = LISTEN_RE.match(line)
                    if m:
                        self.port = int(m.group("port"))
                        self.listen_match = m
                        break
                if self.port is not None:
                    break
                if self.proc.poll() is not None and not all(t.is_alive() for t in self._threads):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        if self.port is None:
            rc = self.proc.poll()
            self.kill()
            raise AssertionError(
                f"server did not print its listening line within {timeout}s (rc={rc})\n"
                f"stdout:\n{self.stdout_text()}\nstderr:\n{self.stderr_text()}")
        self._parse_banner()
        return self

    def _parse_banner(self):
        for line in self.stdout_lines:
            m = re.match(r"^    login:    (\S+)$", line)
            if m:
                self.banner["login"] = m.group(1)
            m = re.match(r"^    password: (\S+)$", line)
            if m:
                self.banner["password"] = m.group(1)
            m = re.match(r"^    API key:  (sk-\S+)  \((\S+) credits; shown only now\)$", line)
            if m:
                self.banner["key"] = m.group(1)
                self.banner["credits"] = m.group(2)
            m = re.match(r"^    curl -s (\S+)/v1/me -H 'Authorization: Bearer (sk-\S+)'$", line)
            if m:
                self.banner["curl_base"] = m.group(1)
                self.banner["curl_key"] = m.group(2)

    @property
    def bootstrap_key(self) -> str:
        assert "key" in self.banner, f"no bootstrap key in banner:\n{self.stdout_text()}"
        return self.banner["key"]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _join_readers(self, timeout=5.0):
        for t in self._threads:
            t.join(timeout)

    def send_signal(self, signo):
        if self.running():
            self.proc.send_signal(signo)

    def wait(self, timeout: float = STOP_TIMEOUT):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self._join_readers()
            raise AssertionError(f"server did not exit within {timeout}s; killed")
        self._join_readers()
        return rc

    def stop(self, timeout: float = STOP_TIMEOUT, signo=signal.SIGTERM) -> int:
        """Graceful stop; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signo)
        return self.wait(timeout)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._join_readers(2.0)

    def restart(self, timeout: float = START_TIMEOUT):
        if self.running():
            rc = self.stop()
            assert rc == 0, f"server exited with {rc} on SIGTERM"
        return self.start(timeout)

    # ---- output ----------------------------------------------------------------------------
    def stdout_text(self) -> str:
        with self._lock:
            return "\n".join(self.stdout_lines)

    def stderr_text(self) -> str:
        with self._lock:
            return "\n".join(self.stderr_lines)

    def wait_for_stderr(self, pattern, timeout: float = 5.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.stderr_lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.1))

    def sanitizer_reports(self) -> list:
        with self._lock:
            return [l for l in self.all_stderr if any(m in l for m in SANITIZER_MARKERS)]

    def new_sanitizer_reports(self) -> list:
        """Sanitizer reports not returned by an earlier call."""
        reports = self.sanitizer_reports()
        seen = getattr(self, "_reported", 0)
        self._reported = len(reports)
        return reports[seen:]

    def ensure_running(self):
        """Restarts (same data dir, so keys stay valid) if an earlier test killed it."""
        if not self.running():
            if self.proc is not None:
                self._join_readers(2.0)
            self.start()
        return self

    # ---- HTTP ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path, key=None, headers=None, **kw):
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self._call(requests.get, self.url + path, headers=h, **kw)

    def request(self, method, path, key=None, headers=None, **kw):
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self._call(requests.request, method, self.url + path, headers=h, **kw)

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except requests.ConnectionError:
            self.assert_alive()
            raise

    def assert_alive(self):
        """Fails with the server's last stderr lines if it is no longer running."""
        if self.proc is not None and self.proc.poll() is not None:
            self._join_readers(2.0)
            tail = "\n".join(self.stderr_lines[-40:])
            raise AssertionError(f"the server died (exit code {self.proc.returncode}); "
                                 f"stderr tail:\n{tail}")

    def connect(self, timeout: float = 5.0) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s


def raw_request(port: int, data: bytes, timeout: float = 5.0, read_all: bool = True) -> bytes:
    """Sends raw bytes on a fresh connection and returns what came back until EOF/timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recv_until_close(s, timeout) if read_all else s.recv(65536)


def recv_until_close(s: socket.socket, timeout: float = 5.0) -> bytes:
    return recv_until_eof(s, timeout)[0]


def recv_until_eof(s: socket.socket, timeout: float = 5.0):
    """(data, closed): everything received, and whether the peer closed within timeout."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            b = s.recv(65536)
        except socket.timeout:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not b:
            return b"".join(chunks), True
        chunks.append(b)
    return b"".join(chunks), False


def parse_raw_response(data: bytes):
    """(status, headers-dict lower-cased, body bytes) of the first response in data."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:300]!r}"
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    n = int(headers.get("content-length", "0"))
    return status, headers, rest[:n]


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def bin_path() -> Path:
    p = resolve_bin()
    if not p.exists():
        pytest.fail(f"imagegate binary not found at {p} (set IMAGEGATE_BIN or build it)", pytrace=False)
    return p


@pytest.fixture(scope="session")
def torture_path(bin_path) -> Path:
    p = bin_path.parent / "ledger_torture"
    if not p.exists():
        pytest.fail(f"ledger_torture not found next to the binary ({p})", pytrace=False)
    return p


class _Registry:
    def __init__(self, bin_path, base_dir):
        self.bin_path = bin_path
        self.base_dir = Path(base_dir)
        self.servers = []
        self.n = 0

    def _dir(self):
        self.n += 1
        return self.base_dir / f"inst{self.n}"

    def instance(self, extra_toml="", env=None, **kw) -> Instance:
        return Instance(self.bin_path, self._dir(), extra_toml, env, **kw)

    def server(self, extra_toml="", env=None, start=True, **kw) -> Server:
        s = Server(self.bin_path, self._dir(), extra_toml, env, **kw)
        self.servers.append(s)
        if start:
            s.start()
        return s

    def cleanup(self):
        problems = []
        for s in self.servers:
            if s.running():
                try:
                    s.stop(timeout=10)
                except AssertionError:
                    pass
            s.kill()
            problems += s.new_sanitizer_reports()
        return problems


def _registry_fixture(bin_path, base_dir):
    reg = _Registry(bin_path, base_dir)
    try:
        yield reg
    finally:
        problems = reg.cleanup()
    assert not problems, "sanitizer reported errors in the server:\n" + "\n".join(problems)


@pytest.fixture
def factory(bin_path, tmp_path):
    """Makes servers / CLI instances in tmp_path; stops them all at teardown."""
    yield from _registry_fixture(bin_path, tmp_path)


@pytest.fixture(scope="module")
def module_factory(bin_path, tmp_path_factory):
    yield from _registry_fixture(bin_path, tmp_path_factory.mktemp("mod"))


def shared_server(module_server):
    """Generator body for a function-scoped view of a module-scoped server: restarts it if a
    previous test crashed it, and fails the test that made the sanitizer report anything."""
    module_server.ensure_running()
    module_server.new_sanitizer_reports()
    yield module_server
    time.sleep(0.05)
    new = module_server.new_sanitizer_reports()
    if module_server.proc.poll() is not None:
        module_server._join_readers(2.0)
        new += module_server.new_sanitizer_reports()
    assert not new, ("sanitizer reported errors in the server during this test:\n" + "\n".join(new)
                     + "\nstderr tail:\n" + "\n".join(module_server.stderr_lines[-60:]))


@pytest.fixture
def server(factory) -> Server:
    """A fresh server with the default config (bootstrap enabled)."""
    return factory.server()


@pytest.fixture
def bootstrap_key(server) -> str:
    return server.bootstrap_key


@pytest.fixture
def cli(server):
    """cli(*args) -> (rc, stdout, stderr), bound to the `server` fixture's config and data."""
    return server.cli


@pytest.fixture
def instance(factory) -> Instance:
    """A config + empty data dir with no server running: for CLI-only tests."""
    return factory.instance("[bootstrap]\nenabled = false\n")


# ---- image tests: a fake OpenAI upstream and a local image host --------------------------------

@pytest.fixture(scope="module")
def fake_openai():
    """tests/fakes/fake_openai.py on a free port (one per module; reset it between tests)."""
    from imgutil import FakeOpenAI
    fake = FakeOpenAI()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def image_host(tmp_path):
    """A local http.server for reference-image URLs: image_host.put(name, bytes) -> URL."""
    from imgutil import ImageHost
    host = ImageHost(tmp_path / "image_host")
    try:
        yield host
    finally:
        host.close()
