"""Crash safety of the credit ledger: kill -9 everything mid-write, then verify and restart."""

import re
import subprocess
import threading
import time

import pytest

from conftest import CLI_TIMEOUT

SUMMARY = re.compile(r"^checked (\d+) users, (\d+) ledger rows, (\d+) holds \((\d+) open\)$", re.M)


def ledger_check(inst):
    rc, out, err = inst.cli("ledger", "check")
    m = SUMMARY.search(out)
    return rc, out, err, m


class LineCounter:
    def __init__(self, proc, prefix):
        self.proc = proc
        self.prefix = prefix
        self.count = 0
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            with self.cond:
                self.lines.append(line)
                if line.startswith(self.prefix):
                    self.count += 1
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.count < n and time.monotonic() < deadline and self.proc.poll() is None:
                self.cond.wait(0.1)
            return self.count


class GrantStream:
    """Runs `credits grant` back to back until stopped; can kill -9 the one in flight."""

    def __init__(self, inst, email):
        self.inst = inst
        self.email = email
        self.stop = threading.Event()
        self.results = []
        self.current = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            p = subprocess.Popen(self.inst.cli_argv("credits", "grant", self.email, "0.5",
                                                    "--note", "stream"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, env=self.inst.env())
            with self.lock:
                self.current = p
            try:
                out, err = p.communicate(timeout=CLI_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            with self.lock:
                self.current = None
                self.results.append((p.returncode, err.decode("utf-8", "replace")))

    def kill_current(self, after):
        """Waits for a grant to be in flight, lets it run `after` seconds, then kill -9s it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                p = self.current
            if p is not None:
                time.sleep(after)
                if p.poll() is None:
                    p.kill()
                    return True
            time.sleep(0.01)
        return False

    def finish(self):
        self.stop.set()
        self.thread.join(CLI_TIMEOUT + 5)
        with self.lock:
            if self.current is not None and self.current.poll() is None:
                self.current.kill()


def test_kill9_everything_then_check_and_restart(factory, torture_path):
    srv = factory.server()
    email = "torture@example.com"
    key = srv.create_user(email, credits=1000)
    assert srv.get("/v1/credits", key=key).json() == {"credits": 1000, "reserved": 0}

    torture = subprocess.Popen(
        [str(torture_path), "--config", str(srv.config_path), "--email", email,
         "--seconds", "30", "--threads", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=srv.env())
    stream = None
    try:
        ops = LineCounter(torture, "ops ")
        stream = GrantStream(srv, email)
        got = ops.wait_for(3, timeout=30)
        assert got >= 3, (f"ledger_torture printed only {got} 'ops' lines "
                          f"(rc={torture.poll()}): {ops.lines[-5:]}")
        # The server keeps serving while the ledger is hammered.
        r = srv.get("/v1/credits", key=key, timeout=10)
        assert r.status_code == 200, r.text

        killed = 0
        for delay in (0.05, 0.15, 0.3):
            killed += stream.kill_current(delay)
        assert killed >= 1, "could not kill a credits grant mid-way"

        torture.kill()
        srv.kill()
        time.sleep(0.2)
        # Kill a CLI grant once more now that nothing else is running.
        stream.kill_current(0.1)
    finally:
        if torture.poll() is None:
            torture.kill()
        torture.wait(timeout=10)
        if stream is not None:
            stream.finish()

    completed = [(rc, err) for rc, err in stream.results if rc >= 0]
    failed = [(rc, err) for rc, err in completed if rc != 0]
    assert not failed, f"credits grant failed under concurrency: {failed[:3]}"

    # 1) Straight after the crash: the ledger is consistent; holds may still be open.
    rc, out, err, m = ledger_check(srv)
    assert rc == 0, f"ledger check after kill -9 failed:\n{out}\n{err}"
    assert m, out
    assert "ledger OK" in out
    open_before = int(m.group(4))
    assert open_before > 0, f"expected ledger_torture to leave holds open:\n{out}"
    show = srv.cli_ok("credits", "show", email).splitlines()[0]
    reserved_before = re.search(r"reserved (\S+)$", show).group(1)
    assert reserved_before != "0", show

    # 2) Restart: every hold left open is refunded at startup.
    srv.start()
    rc, out, err, m = ledger_check(srv)
    assert rc == 0, f"ledger check after restart failed:\n{out}\n{err}"
    assert m and m.group(4) == "0", f"holds still open after restart:\n{out}"
    assert int(m.group(3)) >= open_before
    r = srv.get("/v1/credits", key=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reserved"] == 0, body
    assert body["credits"] >= 0
    show = srv.cli_ok("credits", "show", email).splitlines()
    assert show[0].endswith("reserved 0"), show[0]
    assert any("refund" in l for l in show[1:3]), "newest ledger rows should be the startup refunds"

    # 3) A clean stop/start keeps it that way.
    assert srv.stop() == 0
    srv.start()
    rc, out, err, m = ledger_check(srv)
    assert rc == 0 and m and m.group(4) == "0", out
    assert srv.get("/v1/credits", key=key).json() == body


def test_hold_left_by_clean_exit_refunded_on_start(factory, torture_path):
    """ledger_torture exiting normally also leaves holds; the next server start refunds them."""
    inst = factory.server(start=False)
    inst.cli_ok("users", "add", "t2@example.com", "--password", "password123")
    inst.cli_ok("credits", "grant", "t2@example.com", "50")
    p = subprocess.run([str(torture_path), "--config", str(inst.config_path), "--email",
                        "t2@example.com", "--seconds", "1", "--threads", "2"],
                       capture_output=True, text=True, timeout=60, env=inst.env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("done ")
    rc, out, err, m = ledger_check(inst)
    assert rc == 0 and m, out + err
    open_before = int(m.group(4))
    assert open_before > 0, out
    inst.start()
    rc, out, err, m = ledger_check(inst)
    assert rc == 0 and m and m.group(4) == "0", out
    first = inst.cli_ok("credits", "show", "t2@example.com").splitlines()[0]
    assert first.endswith("reserved 0"), first
