"""The admin CLI, run against a config + data dir (mostly with no server running)."""

import re
import sqlite3
import subprocess

import pytest

from conftest import CLI_TIMEOUT, KEY_RE, assert_one_error_line, base_env

HELP_COMMANDS = [
    [], ["serve"], ["users"], ["users", "add"], ["users", "list"], ["users", "disable"],
    ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"],
    ["credits"], ["credits", "grant"], ["credits", "show"], ["ledger"], ["ledger", "check"],
]


@pytest.mark.parametrize("cmd", HELP_COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_exits_0(bin_path, cmd):
    p = subprocess.run([str(bin_path), *cmd, "--help"], capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, env=base_env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "Usage" in p.stdout or "usage" in p.stdout, p.stdout
    if cmd:
        assert cmd[-1] in p.stdout


@pytest.mark.parametrize("args", [[], ["bogus"], ["users"], ["users", "add"], ["keys", "nope"],
                                  ["credits", "grant", "a@b.c"], ["users", "list", "--what"],
                                  ["credits", "show", "a@b.c", "--limit", "x"]],
                         ids=lambda a: " ".join(a) or "none")
def test_usage_errors_one_line(instance, args):
    rc, out, err = instance.cli(*args)
    assert_one_error_line(rc, err)


# ---- users ---------------------------------------------------------------------------------

def test_users_add_generated_password(instance):
    rc, out, err = instance.cli("users", "add", "alice@example.com")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert re.fullmatch(r"created user_\d+ alice@example\.com", lines[0]), lines[0]
    m = re.fullmatch(r"password: (\S+)", lines[1])
    assert m, lines[1]
    assert len(m.group(1)) >= 12


def test_users_add_with_password_and_admin(instance):
    rc, out, err = instance.cli("users", "add", "root@example.com", "--password", "longenough", "--admin")
    assert rc == 0, err
    assert re.fullmatch(r"created user_\d+ root@example\.com \(admin\)\n", out), repr(out)
    assert "password" not in out


def test_users_add_ids_increase(instance):
    out1 = instance.cli_ok("users", "add", "u1@example.com", "--password", "password1")
    out2 = instance.cli_ok("users", "add", "u2@example.com", "--password", "password2")
    n1 = int(re.search(r"user_(\d+)", out1).group(1))
    n2 = int(re.search(r"user_(\d+)", out2).group(1))
    assert n2 > n1


@pytest.mark.parametrize("dup", ["bob@example.com", "BOB@EXAMPLE.COM", "Bob@Example.com"])
def test_users_add_duplicate_email_any_case(instance, dup):
    instance.cli_ok("users", "add", "bob@example.com", "--password", "password1")
    rc, out, err = instance.cli("users", "add", dup, "--password", "password2")
    assert_one_error_line(rc, err)
    users = instance.cli_ok("users", "list")
    assert users.lower().count("bob@example.com") == 1, users


@pytest.mark.parametrize("pw", ["", "short", "1234567"])
def test_users_add_short_password(instance, pw):
    rc, out, err = instance.cli("users", "add", "carol@example.com", "--password", pw)
    assert_one_error_line(rc, err)
    assert "carol" not in instance.cli_ok("users", "list")


def test_users_add_password_exactly_8_ok(instance):
    instance.cli_ok("users", "add", "dave@example.com", "--password", "12345678")


@pytest.mark.parametrize("email", ["no-at-sign", "@example.com", "user@", "a b@example.com", ""])
def test_users_add_invalid_email(instance, email):
    rc, out, err = instance.cli("users", "add", email, "--password", "password1")
    assert_one_error_line(rc, err)


def test_users_list_table(instance):
    instance.cli_ok("users", "add", "eve@example.com", "--password", "password1", "--admin")
    instance.cli_ok("users", "add", "frank@example.com", "--password", "password1")
    instance.cli_ok("credits", "grant", "frank@example.com", "12.5")
    out = instance.cli_ok("users", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "EMAIL", "ADMIN", "STATUS", "CREDITS", "RESERVED", "CREATED"]
    rows = {l.split()[1]: l.split() for l in lines[1:] if l.strip()}
    assert set(rows) == {"eve@example.com", "frank@example.com"}
    eve, frank = rows["eve@example.com"], rows["frank@example.com"]
    assert re.fullmatch(r"user_\d+", eve[0])
    assert eve[2] == "yes" and frank[2] == "no"
    assert eve[3] == "active" and frank[3] == "active"
    assert eve[4] == "0" and frank[4] == "12.5"
    assert frank[5] == "0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", frank[6]), frank


def test_users_list_empty(instance):
    out = instance.cli_ok("users", "list")
    assert out.splitlines()[0].split()[0] == "ID"
    assert len([l for l in out.splitlines() if l.strip()]) == 1


def test_users_disable(instance):
    instance.cli_ok("users", "add", "gina@example.com", "--password", "password1")
    rc, out, err = instance.cli("users", "disable", "GINA@example.com")
    assert rc == 0, err
    row = [l for l in instance.cli_ok("users", "list").splitlines() if "gina@" in l][0]
    assert row.split()[3] == "disabled"


def test_users_disable_unknown(instance):
    rc, out, err = instance.cli("users", "disable", "ghost@example.com")
    assert_one_error_line(rc, err, "ghost@example.com")


# ---- keys ----------------------------------------------------------------------------------

def test_keys_create_capturable(instance, tmp_path):
    """`KEY=$(imagegate keys create EMAIL)` captures exactly the key."""
    instance.cli_ok("users", "add", "hank@example.com", "--password", "password1")
    script = (f'KEY=$("$IG" --config "$CFG" keys create hank@example.com --name "my key") || exit 9; '
              f'printf "%s" "$KEY"')
    env = instance.env()
    env.update(IG=str(instance.bin), CFG=str(instance.config_path))
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                       timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert KEY_RE.match(p.stdout), repr(p.stdout)
    listed = instance.cli_ok("keys", "list", "hank@example.com")
    assert f"{p.stdout[:11]}...{p.stdout[-4:]}" in listed
    assert "my key" in listed


def test_keys_list_unknown_user(instance):
    rc, out, err = instance.cli("keys", "list", "ghost@example.com")
    assert_one_error_line(rc, err)


def test_keys_list_header_and_rows(instance):
    instance.cli_ok("users", "add", "ivy@example.com", "--password", "password1")
    keys = [instance.cli_ok("keys", "create", "ivy@example.com", "--name", f"k{i}").strip()
            for i in range(3)]
    out = instance.cli_ok("keys", "list", "ivy@example.com")
    lines = out.splitlines()
    assert lines[0].split()[0] == "KEY"
    for k in keys:
        assert k not in out
        assert re.search(re.escape(f"{k[:11]}...{k[-4:]}"), out)
    assert len(re.findall(r"^sk-[0-9A-Za-z]{8}\.\.\.[0-9A-Za-z]{4}\s", out, re.M)) == 3


# ---- credits -------------------------------------------------------------------------------

@pytest.fixture
def jo(instance):
    instance.cli_ok("users", "add", "jo@example.com", "--password", "password1")
    return instance


def show_first_line(inst, email="jo@example.com"):
    return inst.cli_ok("credits", "show", email).splitlines()[0]


def test_credits_grant_decimal(jo):
    rc, out, err = jo.cli("credits", "grant", "jo@example.com", "4.7")
    assert rc == 0, err
    assert "4.7" in out
    assert show_first_line(jo) == "jo@example.com: credits 4.7, reserved 0"
    jo.cli_ok("credits", "grant", "jo@example.com", "0.000001")
    assert show_first_line(jo) == "jo@example.com: credits 4.700001, reserved 0"
    jo.cli_ok("credits", "grant", "jo@example.com", "95.299999")
    assert show_first_line(jo) == "jo@example.com: credits 100, reserved 0"


def test_credits_grant_email_case_insensitive(jo):
    jo.cli_ok("credits", "grant", "JO@EXAMPLE.COM", "3")
    assert show_first_line(jo) == "jo@example.com: credits 3, reserved 0"


def test_credits_grant_negative_plain(jo):
    """Plain `-5` (no `--`) parses as the AMOUNT."""
    jo.cli_ok("credits", "grant", "jo@example.com", "10")
    rc, out, err = jo.cli("credits", "grant", "jo@example.com", "-5")
    assert rc == 0, f"plain negative amount failed to parse: {err}"
    assert show_first_line(jo) == "jo@example.com: credits 5, reserved 0"


def test_credits_grant_negative_after_double_dash(jo):
    jo.cli_ok("credits", "grant", "jo@example.com", "10")
    rc, out, err = jo.cli("credits", "grant", "jo@example.com", "--", "-2.5")
    assert rc == 0, err
    assert show_first_line(jo) == "jo@example.com: credits 7.5, reserved 0"
    rc, out, err = jo.cli("credits", "grant", "--", "jo@example.com", "-0.5")
    assert rc == 0, err
    assert show_first_line(jo) == "jo@example.com: credits 7, reserved 0"


def test_credits_grant_negative_clamps_at_zero(jo):
    jo.cli_ok("credits", "grant", "jo@example.com", "3")
    rc, out, err = jo.cli("credits", "grant", "jo@example.com", "-10")
    assert rc == 0, err
    assert "clamped" in out, out
    assert show_first_line(jo) == "jo@example.com: credits 0, reserved 0"
    # Further negative grants at zero stay at zero and never go below.
    rc, out, err = jo.cli("credits", "grant", "jo@example.com", "-1")
    assert rc == 0, err
    assert show_first_line(jo) == "jo@example.com: credits 0, reserved 0"
    rc, out, err = jo.cli("ledger", "check")
    assert rc == 0, out + err


@pytest.mark.parametrize("amount", ["1e999", "-0", "+0", "abc", "1.0000001", "", "1e3", "0x10",
                                    "1,5", " 1", "1.", ".", "-", "--5", "NaN", "inf",
                                    "1000000001", "99999999999999999999999"])
def test_credits_grant_invalid_amount(jo, amount):
    rc, out, err = jo.cli("credits", "grant", "jo@example.com", "--", amount)
    assert_one_error_line(rc, err)
    assert show_first_line(jo) == "jo@example.com: credits 0, reserved 0"


@pytest.mark.parametrize("amount", ["1e999", "-0", "abc", "1.0000001", ""])
def test_credits_grant_invalid_amount_plain(jo, amount):
    rc, out, err = jo.cli("credits", "grant", "jo@example.com", amount)
    assert_one_error_line(rc, err)
    assert show_first_line(jo) == "jo@example.com: credits 0, reserved 0"


def test_credits_grant_unknown_user(instance):
    rc, out, err = instance.cli("credits", "grant", "ghost@example.com", "5")
    assert_one_error_line(rc, err, "ghost@example.com")


def test_credits_show_rows_newest_first(jo):
    for amount, note in [("1", "first-note"), ("2", "second-note"), ("3.25", "third-note")]:
        jo.cli_ok("credits", "grant", "jo@example.com", amount, "--note", note)
    out = jo.cli_ok("credits", "show", "jo@example.com")
    lines = out.splitlines()
    assert lines[0] == "jo@example.com: credits 6.25, reserved 0"
    body = "\n".join(lines[1:])
    pos = [body.find(n) for n in ("third-note", "second-note", "first-note")]
    assert all(p >= 0 for p in pos), out
    assert pos == sorted(pos), f"ledger rows not newest first:\n{out}"
    third = [l for l in lines if "third-note" in l][0]
    assert "3.25" in third and "6.25" in third


def test_credits_show_unknown_user(instance):
    rc, out, err = instance.cli("credits", "show", "ghost@example.com")
    assert_one_error_line(rc, err)


# ---- ledger check ----------------------------------------------------------------------------

LEDGER_SUMMARY = re.compile(r"^checked (\d+) users, (\d+) ledger rows, (\d+) holds \((\d+) open\)$", re.M)


def test_ledger_check_ok(jo):
    jo.cli_ok("credits", "grant", "jo@example.com", "5")
    jo.cli_ok("credits", "grant", "jo@example.com", "-1.5")
    rc, out, err = jo.cli("ledger", "check")
    assert rc == 0, out + err
    m = LEDGER_SUMMARY.search(out)
    assert m, out
    assert int(m.group(1)) == 1 and int(m.group(2)) == 2
    assert m.group(4) == "0"
    assert out.rstrip().endswith("ledger OK")
    assert "VIOLATION" not in out


def test_ledger_check_empty_database(instance):
    rc, out, err = instance.cli("ledger", "check")
    assert rc == 0, out + err
    m = LEDGER_SUMMARY.search(out)
    assert m and m.group(1) == "0", out
    assert "ledger OK" in out


def test_ledger_check_detects_corruption(jo):
    jo.cli_ok("credits", "grant", "jo@example.com", "5")
    assert jo.cli("ledger", "check")[0] == 0
    subprocess.run(["sqlite3", str(jo.db_path), "UPDATE users SET balance = balance + 1;"],
                   check=True, timeout=30, capture_output=True)
    rc, out, err = jo.cli("ledger", "check")
    assert rc == 1, (rc, out, err)
    assert "VIOLATION:" in out
    assert "ledger OK" not in out
    assert_one_error_line(rc, err)


def test_ledger_check_detects_deleted_ledger_row(jo):
    jo.cli_ok("credits", "grant", "jo@example.com", "5")
    jo.cli_ok("credits", "grant", "jo@example.com", "6")
    con = sqlite3.connect(str(jo.db_path), timeout=10)
    try:
        con.execute("DELETE FROM ledger WHERE id = (SELECT MAX(id) FROM ledger)")
        con.commit()
    finally:
        con.close()
    rc, out, err = jo.cli("ledger", "check")
    assert rc == 1, (rc, out, err)
    assert "VIOLATION:" in out


# ---- config/env shared with the CLI -----------------------------------------------------------

def test_cli_uses_imagegate_config_env(jo):
    jo.cli_ok("credits", "grant", "jo@example.com", "7")
    env = base_env()
    env["IMAGEGATE_CONFIG"] = str(jo.config_path)
    p = subprocess.run([str(jo.bin), "credits", "show", "jo@example.com"], capture_output=True,
                       text=True, env=env, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "jo@example.com: credits 7, reserved 0"


def test_cli_uses_imagegate_data_dir_env(factory, tmp_path):
    other = tmp_path / "elsewhere"
    inst = factory.instance(write_data_dir=False, env={"IMAGEGATE_DATA_DIR": str(other)})
    inst.cli_ok("users", "add", "zed@example.com", "--password", "password1")
    assert (other / "imagegate.db").exists()
    assert "zed@example.com" in inst.cli_ok("users", "list")


def test_cli_missing_config_file(bin_path, tmp_path):
    p = subprocess.run([str(bin_path), "--config", str(tmp_path / "nope.toml"), "users", "list"],
                       capture_output=True, text=True, env=base_env(), timeout=CLI_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert_one_error_line(p.returncode, p.stderr, "nope.toml")
