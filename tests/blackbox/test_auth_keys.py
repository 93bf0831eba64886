"""API-key authentication against a running server, and key/user management via the CLI."""

import json
import re
import time

import pytest

from conftest import shared_server, KEY_RE, assert_one_error_line

AUTH_ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def _shared_srv(module_factory):
    return module_factory.server()


@pytest.fixture
def srv(_shared_srv):
    yield from shared_server(_shared_srv)


def assert_401(r):
    assert r.status_code == 401, (r.status_code, r.text)
    body = json.loads(r.text)
    assert list(body) == ["error"], body
    err = body["error"]
    assert set(err) == AUTH_ERROR_KEYS, err
    assert err["type"] == "authentication_error"
    assert err["code"] == "invalid_api_key"
    assert err["param"] is None
    assert isinstance(err["message"], str) and err["message"]
    assert r.headers["Content-Type"].startswith("application/json")
    return err


def poll_until_401(srv, key, limit=1.0, path="/v1/me"):
    """Polls every 50 ms; returns seconds until the key got 401 (or fails after 3 s)."""
    t0 = time.monotonic()
    while True:
        r = srv.get(path, key=key, timeout=5)
        elapsed = time.monotonic() - t0
        if r.status_code == 401:
            assert_401(r)
            return elapsed
        assert r.status_code == 200, r.text
        if elapsed > 3.0:
            pytest.fail(f"key still accepted {elapsed:.2f}s later")
        time.sleep(0.05)


# ---- malformed / unknown credentials ------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/me", "/v1/credits", "/v1/models", "/api/v1/me"])
def test_missing_auth_401(srv, path):
    assert_401(srv.get(path))


@pytest.mark.parametrize("value", [
    "",
    "Basic x",
    "Basic YWRtaW46cGFzc3dvcmQ=",
    "Bearer",
    "Bearer ",
    "Bearer not-a-key",
    "Bearer sk-",
    "Bearer sk-short",
    "Bearer sk-" + "A" * 10 * 1024,
    "Bearer " + "A" * 10 * 1024,
    "Bearersk-" + "A" * 43,
    "Token sk-" + "A" * 43,
    "Bearer sk-" + "A" * 43 + " extra",
    "Bearer sk-" + "A" * 42 + "!",
])
def test_malformed_auth_401(srv, value):
    assert_401(srv.get("/v1/me", headers={"Authorization": value}))


def test_unknown_key_401(srv):
    assert_401(srv.get("/v1/me", key="sk-" + "Q" * 43))
    # Same answer the second time (negative cache), and still healthy.
    assert_401(srv.get("/v1/me", key="sk-" + "Q" * 43))
    assert srv.get("/healthz").status_code == 200


def test_almost_right_key_401(srv):
    key = srv.bootstrap_key
    wrong = key[:-1] + ("a" if key[-1] != "a" else "b")
    assert_401(srv.get("/v1/me", key=wrong))
    assert srv.get("/v1/me", key=key).status_code == 200


def test_lowercase_bearer_scheme_accepted(srv):
    r = srv.get("/v1/me", headers={"Authorization": "bearer " + srv.bootstrap_key})
    assert r.status_code == 200, r.text


def test_bootstrap_key_works(srv):
    r = srv.get("/v1/me", key=srv.bootstrap_key)
    assert r.status_code == 200
    assert r.json()["email"] == "admin@localhost"


# ---- keys create / list / revoke --------------------------------------------------------------

def test_keys_create_prints_only_the_key(srv):
    srv.cli_ok("users", "add", "kc@example.com", "--password", "password123")
    rc, out, err = srv.cli("keys", "create", "kc@example.com", "--name", "ci")
    assert rc == 0, err
    assert out.endswith("\n") and out.count("\n") == 1, repr(out)
    key = out[:-1]
    assert KEY_RE.match(key), repr(key)
    r = srv.get("/v1/me", key=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["email"] == "kc@example.com"
    assert re.fullmatch(r"user_\d+", body["id"]) and body["id"] != "user_1"
    assert body["credits"] == 0
    assert srv.get("/v1/credits", key=key).json() == {"credits": 0, "reserved": 0}


def test_keys_create_unknown_user(srv):
    rc, out, err = srv.cli("keys", "create", "nobody@example.com")
    assert_one_error_line(rc, err, "nobody@example.com")
    assert out == ""


def test_keys_are_unique(srv):
    srv.cli_ok("users", "add", "many@example.com", "--password", "password123")
    keys = {srv.cli_ok("keys", "create", "many@example.com").strip() for _ in range(5)}
    assert len(keys) == 5
    assert len({k[:11] for k in keys}) == 5


def test_keys_list_masks_keys(srv):
    srv.cli_ok("users", "add", "kl@example.com", "--password", "password123")
    k1 = srv.cli_ok("keys", "create", "kl@example.com", "--name", "first").strip()
    k2 = srv.cli_ok("keys", "create", "kl@example.com", "--name", "second").strip()
    out = srv.cli_ok("keys", "list", "kl@example.com")
    assert k1 not in out and k2 not in out, "full keys must never be listed"
    for k, name in [(k1, "first"), (k2, "second")]:
        shown = f"{k[:11]}...{k[-4:]}"
        lines = [l for l in out.splitlines() if shown in l]
        assert len(lines) == 1, (shown, out)
        assert name in lines[0]
        assert "active" in lines[0]
    # Nothing else is listed (the other users' keys).
    masked = re.findall(r"sk-[0-9A-Za-z]{8}\.\.\.[0-9A-Za-z]{4}", out)
    assert len(masked) == 2, out


def test_revoke_by_prefix_takes_effect_within_1s(srv):
    srv.cli_ok("users", "add", "rv1@example.com", "--password", "password123")
    key = srv.cli_ok("keys", "create", "rv1@example.com").strip()
    other = srv.cli_ok("keys", "create", "rv1@example.com").strip()
    # Warm the server's auth cache first: revocation must beat the cache.
    for _ in range(3):
        assert srv.get("/v1/me", key=key).status_code == 200
    rc, out, err = srv.cli("keys", "revoke", key[:11])
    assert rc == 0, err
    assert "revoked" in out and key[:11] in out
    t = poll_until_401(srv, key)
    assert t < 1.0, f"revoked key still accepted for {t:.2f}s"
    assert srv.get("/v1/me", key=other).status_code == 200, "other keys must keep working"
    assert srv.get("/v1/me", key=srv.bootstrap_key).status_code == 200
    listed = srv.cli_ok("keys", "list", "rv1@example.com")
    assert not [l for l in listed.splitlines() if key[:11] in l and "active" in l.split()], listed
    assert [l for l in listed.splitlines() if other[:11] in l and "active" in l.split()], listed


def test_revoke_by_listed_form(srv):
    srv.cli_ok("users", "add", "rv2@example.com", "--password", "password123")
    key = srv.cli_ok("keys", "create", "rv2@example.com").strip()
    assert srv.get("/v1/credits", key=key).status_code == 200
    shown = f"{key[:11]}...{key[-4:]}"
    assert shown in srv.cli_ok("keys", "list", "rv2@example.com")
    srv.cli_ok("keys", "revoke", shown)
    t = poll_until_401(srv, key, path="/v1/credits")
    assert t < 1.0, f"revoked key still accepted for {t:.2f}s"
    # All routes refuse it, with the standard body.
    for path in ["/v1/me", "/v1/models", "/api/v1/credits"]:
        assert_401(srv.get(path, key=key))


def test_revoke_twice_fails(srv):
    srv.cli_ok("users", "add", "rv3@example.com", "--password", "password123")
    key = srv.cli_ok("keys", "create", "rv3@example.com").strip()
    srv.cli_ok("keys", "revoke", key[:11])
    rc, out, err = srv.cli("keys", "revoke", key[:11])
    assert_one_error_line(rc, err)


@pytest.mark.parametrize("prefix", ["sk-", "sk-abc", "xx-ABCDEFGH", "ABCDEFGHIJK", "", "sk-ZZZZZZZZ"])
def test_revoke_bad_or_unknown_prefix(srv, prefix):
    rc, out, err = srv.cli("keys", "revoke", prefix)
    assert_one_error_line(rc, err)
    assert srv.get("/v1/me", key=srv.bootstrap_key).status_code == 200


def test_disable_user_keys_get_401(srv):
    srv.cli_ok("users", "add", "dis@example.com", "--password", "password123")
    k1 = srv.cli_ok("keys", "create", "dis@example.com").strip()
    k2 = srv.cli_ok("keys", "create", "dis@example.com").strip()
    assert srv.get("/v1/me", key=k1).status_code == 200
    assert srv.get("/v1/me", key=k2).status_code == 200
    rc, out, err = srv.cli("users", "disable", "dis@example.com")
    assert rc == 0, err
    t = poll_until_401(srv, k1)
    assert t < 1.0, f"disabled user's key still accepted for {t:.2f}s"
    assert_401(srv.get("/v1/me", key=k2))
    assert srv.get("/v1/me", key=srv.bootstrap_key).status_code == 200
    listed = srv.cli_ok("users", "list")
    row = [l for l in listed.splitlines() if "dis@example.com" in l]
    assert len(row) == 1 and "disabled" in row[0], listed


def test_new_key_for_disabled_user_rejected_or_401(srv):
    srv.cli_ok("users", "add", "dis2@example.com", "--password", "password123")
    srv.cli_ok("users", "disable", "dis2@example.com")
    rc, out, err = srv.cli("keys", "create", "dis2@example.com")
    if rc == 0:
        assert_401(srv.get("/v1/me", key=out.strip()))
    else:
        assert_one_error_line(rc, err)


def test_grant_visible_immediately_no_balance_caching(srv):
    srv.cli_ok("users", "add", "grantee@example.com", "--password", "password123")
    key = srv.cli_ok("keys", "create", "grantee@example.com").strip()
    srv.cli_ok("credits", "grant", "grantee@example.com", "100")
    assert srv.get("/v1/me", key=key).json()["credits"] == 100  # warm every cache
    srv.cli_ok("credits", "grant", "grantee@example.com", "4.7")
    r = srv.get("/v1/me", key=key)
    assert r.status_code == 200
    assert '"credits":104.7' in r.text.replace(" ", ""), r.text
    assert "E" not in r.text and "e+" not in r.text, r.text
    r = srv.get("/v1/credits", key=key)
    assert '"credits":104.7' in r.text.replace(" ", ""), r.text
    srv.cli_ok("credits", "grant", "grantee@example.com", "0.000001")
    r = srv.get("/v1/me", key=key)
    assert '"credits":104.700001' in r.text.replace(" ", ""), r.text
    srv.cli_ok("credits", "grant", "grantee@example.com", "-104.700001")
    r = srv.get("/v1/me", key=key)
    assert r.json()["credits"] == 0
    assert '"credits":0' in r.text.replace(" ", ""), r.text


@pytest.mark.parametrize("amount,text", [("0.1", "0.1"), ("0.000001", "0.000001"),
                                         ("0.000012", "0.000012"), ("0.0005", "0.0005"),
                                         ("123456.789012", "123456.789012"),
                                         ("999999999.999999", "999999999.999999")])
def test_credit_amounts_rendered_exactly(srv, amount, text):
    email = f"exact{amount.replace('.', '_')}@example.com"  # a fresh user: balance == amount
    srv.cli_ok("users", "add", email, "--password", "password123")
    key = srv.cli_ok("keys", "create", email).strip()
    srv.cli_ok("credits", "grant", email, amount)
    r = srv.get("/v1/me", key=key)
    assert f'"credits":{text}' in r.text.replace(" ", ""), r.text
