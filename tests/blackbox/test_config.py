"""Config file, env overrides, startup banner and listening line."""

import re
import subprocess

import pytest

from conftest import (CLI_TIMEOUT, KEY_RE, LISTEN_RE, START_TIMEOUT, assert_one_error_line,
                      base_env)


def run_serve_expect_failure(inst, env=None):
    """`serve` with a bad config must exit promptly, non-zero, with one error line."""
    e = inst.env()
    e.setdefault("IMAGEGATE_LISTEN", "127.0.0.1:0")
    if env:
        e.update(env)
    p = subprocess.run([str(inst.bin), "--config", str(inst.config_path), "serve"],
                       capture_output=True, text=True, env=e, timeout=START_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert "listening" not in p.stdout, p.stdout
    return p.returncode, p.stdout, p.stderr


BAD_CONFIGS = [
    ("[server]\nprot = 8080\n", "unknown key 'server.prot'"),
    ("[server]\nport = \"8080\"\n", "server.port: expected an integer, got string"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[server]\nmax_body_bytes = true\n", "server.max_body_bytes"),
    ("[server]\naccess_log = 1\n", "server.access_log"),
    ("[auth]\nrevocation_poll_ms = \"fast\"\n", "auth.revocation_poll_ms"),
    ("[store]\nbackend = \"postgres\"\n", "store.backend"),
    ("[store]\nbogus = 1\n", "unknown key 'store.bogus'"),
    ("[bootstrap]\nfree_credits = \"lots\"\n", "bootstrap.free_credits"),
    ("[bootstrap]\nfree_credits = \"-5\"\n", "bootstrap.free_credits"),
    ("[bootstrap]\nenabled = \"yes\"\n", "bootstrap.enabled"),
    ("[nonsense]\nx = 1\n", "nonsense"),
    ("colour = \"blue\"\n", "unknown key 'colour'"),
    ("log_level = \"loud\"\n", "log_level"),
    ("[[models]]\nowned_by = \"me\"\n", "models[0].id"),
    ("[[models]]\nid = \"m\"\nextra = 1\n", "models[0].extra"),
    ("[server\nport = 1\n", "imagegate.toml"),  # TOML syntax error
]


@pytest.mark.parametrize("toml,needle", BAD_CONFIGS, ids=[n for _, n in BAD_CONFIGS])
def test_bad_config_serve_fails(factory, toml, needle):
    inst = factory.instance(toml)
    rc, out, err = run_serve_expect_failure(inst)
    assert_one_error_line(rc, err, needle)


@pytest.mark.parametrize("toml,needle", BAD_CONFIGS[:3], ids=[n for _, n in BAD_CONFIGS[:3]])
def test_bad_config_cli_fails(factory, toml, needle):
    inst = factory.instance(toml)
    rc, out, err = inst.cli("users", "list")
    assert_one_error_line(rc, err, needle)


@pytest.mark.parametrize("listen", ["nocolon", "127.0.0.1:notaport", "127.0.0.1:99999"])
def test_bad_listen_env(factory, listen):
    inst = factory.instance()
    rc, out, err = run_serve_expect_failure(inst, env={"IMAGEGATE_LISTEN": listen})
    assert_one_error_line(rc, err, "IMAGEGATE_LISTEN")


def test_bad_log_level_env(factory):
    inst = factory.instance()
    rc, out, err = run_serve_expect_failure(inst, env={"IMAGEGATE_LOG_LEVEL": "shouty"})
    assert_one_error_line(rc, err, "log_level")


def test_port_in_use_fails_cleanly(factory):
    first = factory.server()
    inst = factory.instance()
    rc, out, err = run_serve_expect_failure(inst, env={"IMAGEGATE_LISTEN": f"127.0.0.1:{first.port}"})
    assert rc != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and str(first.port) in lines[0], f"one line saying why: {lines!r}"
    assert "API key" not in out, "nothing may be bootstrapped when the server cannot listen"
    assert first.get("/healthz").status_code == 200


def test_unusable_data_dir(factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    inst = factory.instance(f'data_dir = "{blocker}/sub"\n', write_data_dir=False)
    rc, out, err = inst.cli("users", "list")
    assert_one_error_line(rc, err, "data_dir")
    rc, out, err = run_serve_expect_failure(inst)
    assert rc != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "data_dir" in lines[0], lines


# ---- banner and listening line --------------------------------------------------------------

def test_first_start_banner(factory):
    srv = factory.server()
    b = srv.banner
    assert b.get("login") == "admin@localhost", srv.stdout_text()
    assert re.fullmatch(r"[0-9A-Za-z]{20}", b.get("password", "")), srv.stdout_text()
    assert KEY_RE.match(b["key"]), b["key"]
    assert b["credits"] == "100"
    assert b["curl_base"] == f"http://127.0.0.1:{srv.port}"
    assert b["curl_key"] == b["key"]
    # The banner comes before the listening line.
    lines = srv.stdout_lines
    listen_idx = next(i for i, l in enumerate(lines) if LISTEN_RE.match(l))
    key_idx = next(i for i, l in enumerate(lines) if "API key:" in l)
    assert key_idx < listen_idx
    # Secrets are printed on stdout only, never logged.
    assert b["key"] not in srv.stderr_text()
    assert b["password"] not in srv.stderr_text()
    r = srv.get("/v1/me", key=b["key"])
    assert r.json() == {"id": "user_1", "email": "admin@localhost", "credits": 100}
    users = srv.cli_ok("users", "list")
    row = [l.split() for l in users.splitlines() if "admin@localhost" in l][0]
    assert row[2] == "yes", users


def test_listening_line(factory):
    srv = factory.server()
    m = srv.listen_match
    assert m.group("host") == "127.0.0.1"
    assert int(m.group("port")) == srv.port > 0
    assert m.group("public") == f"http://127.0.0.1:{srv.port}"
    assert m.group("data") == str(srv.data_dir)
    assert srv.db_path.exists()


def test_second_start_has_no_banner(factory):
    srv = factory.server()
    key = srv.bootstrap_key
    assert srv.get("/v1/me", key=key).status_code == 200
    srv.restart()
    assert "API key" not in srv.stdout_text()
    assert "password:" not in srv.stdout_text()
    assert srv.get("/v1/me", key=key).status_code == 200
    users = srv.cli_ok("users", "list")
    assert len([l for l in users.splitlines()[1:] if l.strip()]) == 1


def test_bootstrap_disabled(factory):
    srv = factory.server("[bootstrap]\nenabled = false\n")
    out = srv.stdout_text()
    assert "API key" not in out and "password" not in out and "sk-" not in out, out
    users = srv.cli_ok("users", "list").splitlines()
    assert len([l for l in users[1:] if l.strip()]) == 0, users
    assert srv.get("/healthz").status_code == 200


def test_bootstrap_custom_email_and_credits(factory):
    srv = factory.server('[bootstrap]\nadmin_email = "boss@example.com"\nfree_credits = "2.5"\n')
    assert srv.banner["login"] == "boss@example.com"
    assert srv.banner["credits"] == "2.5"
    r = srv.get("/v1/me", key=srv.bootstrap_key)
    assert r.status_code == 200
    assert '"credits":2.5' in r.text.replace(" ", ""), r.text
    assert r.json()["email"] == "boss@example.com"


def test_bootstrap_zero_credits(factory):
    srv = factory.server("[bootstrap]\nfree_credits = 0\n")
    r = srv.get("/v1/credits", key=srv.bootstrap_key)
    assert r.json() == {"credits": 0, "reserved": 0}


def test_public_base_url_env(factory):
    srv = factory.server(env={"IMAGEGATE_PUBLIC_BASE_URL": "https://img.example.com/"})
    assert srv.listen_match.group("public") == "https://img.example.com"
    assert srv.banner["curl_base"] == "https://img.example.com"


def test_public_base_url_config(factory):
    srv = factory.server('public_base_url = "https://cfg.example.com"\n')
    assert srv.listen_match.group("public") == "https://cfg.example.com"


def test_data_dir_env_overrides_config(factory, tmp_path):
    other = tmp_path / "env-data"
    srv = factory.server(env={"IMAGEGATE_DATA_DIR": str(other)})
    assert srv.listen_match.group("data") == str(other)
    assert (other / "imagegate.db").exists()
    assert not srv.db_path.exists()


def test_config_from_env_var(factory):
    inst = factory.server('[[models]]\nid = "from-env-cfg"\nowned_by = "me"\ncreated = 42\n',
                          start=False)
    # Start with IMAGEGATE_CONFIG instead of --config.
    inst.extra_env["IMAGEGATE_CONFIG"] = str(inst.config_path)
    inst.serve_argv = [str(inst.bin), "serve"]
    inst.start()
    r = inst.get("/v1/models", key=inst.bootstrap_key)
    assert r.json() == {"object": "list", "data": [
        {"id": "from-env-cfg", "object": "model", "created": 42, "owned_by": "me"}]}


def test_custom_models(factory):
    srv = factory.server('[[models]]\nid = "a-model"\nowned_by = "x"\ncreated = 1\n'
                         '[[models]]\nid = "b-model"\nowned_by = "y"\ncreated = 2\n')
    r = srv.get("/v1/models", key=srv.bootstrap_key)
    assert [m["id"] for m in r.json()["data"]] == ["a-model", "b-model"]


def test_listen_via_config_port(factory):
    """[server] port/host from the file are used when IMAGEGATE_LISTEN is not set."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = factory.server(f'[server]\nhost = "127.0.0.1"\nport = {port}\n', start=False)
    srv.set_listen_env = False
    srv.start()
    assert srv.port == port
    assert srv.get("/healthz").status_code == 200


def test_access_log_disabled(factory):
    srv = factory.server("[server]\naccess_log = false\n")
    srv.get("/healthz", headers={"X-Request-Id": "no-log-please"})
    srv.get("/v1/me", key=srv.bootstrap_key)
    assert srv.stop() == 0
    assert "method=GET" not in srv.stderr_text()


def test_all_documented_keys_accepted(factory):
    toml = """
log_level = "info"
[server]
host = "127.0.0.1"
port = 0
io_threads = 2
blocking_threads = 2
max_header_bytes = 16384
max_body_bytes = 52428800
header_timeout_ms = 10000
body_timeout_ms = 30000
idle_timeout_ms = 60000
write_timeout_ms = 30000
shutdown_grace_ms = 10000
max_connections = 5000
access_log = true
[store]
backend = "sqlite"
busy_timeout_ms = 5000
pool_size = 2
[auth]
cache_ttl_ms = 5000
negative_ttl_ms = 1000
revocation_poll_ms = 250
last_used_flush_ms = 1000
max_cache_entries = 1000
[bootstrap]
enabled = true
admin_email = "admin@localhost"
free_credits = "100"
[[models]]
id = "gpt-image-2"
owned_by = "imagegate"
created = 1745000000
"""
    srv = factory.server(toml)
    assert srv.get("/v1/me", key=srv.bootstrap_key).json()["credits"] == 100
    assert srv.cli("ledger", "check")[0] == 0
