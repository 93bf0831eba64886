"""Result retention ([images] result_retention_s): a succeeded job's result files are deleted
once it finished longer ago than the retention; the job row, its charge and its ledger rows stay,
and its image URLs answer 410 result_expired (the signed /v1/files URLs 404: the file is gone)."""

import sqlite3
import time

import requests

from imgutil import assert_openai_error, credits, generate, local_path

RETENTION_S = 2


def db_count(srv, sql) -> int:
    db = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


def blob_rows(srv) -> int:
    return db_count(srv, "SELECT COUNT(*) FROM blobs")


def sweep_index_exists(srv) -> bool:
    return db_count(srv, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'jobs_results_kept'") == 1


def make_job(srv, key, prompt):
    r = generate(srv, key, {"model": "gpt-image-2", "prompt": prompt, "size": "1024x1024",
                            "response_format": "url"})
    assert r.status_code == 200, r.text
    return r.headers["X-Job-Id"], r.json()["data"][0]["url"]


def test_results_older_than_the_retention_are_deleted_and_answer_410(factory):
    srv = factory.server(f'[images]\nurl_style = "signed"\nresult_retention_s = {RETENTION_S}\n'
                         'result_sweep_interval_ms = 200\n')
    key = srv.create_user("keep@example.com", credits=10)
    old_id, old_signed = make_job(srv, key, "old")
    assert "/v1/files/" in old_signed, old_signed
    old_image = f"/api/jobs/{old_id}/image"
    first = srv.get(old_image, key=key)
    assert first.status_code == 200 and first.content.startswith(b"\x89PNG")
    assert requests.get(old_signed, timeout=10).status_code == 200
    assert blob_rows(srv) == 1
    assert sweep_index_exists(srv)

    # Past the retention (and a sweep or two), a new job is made: only the old one expires.
    deadline = time.monotonic() + RETENTION_S + 10
    time.sleep(RETENTION_S + 0.5)
    new_id, new_signed = make_job(srv, key, "new")
    while True:
        r = srv.get(old_image, key=key)
        if r.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert_openai_error(r, 410, code="result_expired")
    assert requests.get(old_signed, timeout=10).status_code == 404
    assert srv.get(f"/api/jobs/{new_id}/image", key=key).status_code == 200
    assert requests.get(new_signed, timeout=10).status_code == 200
    assert blob_rows(srv) == 1  # the new job's
    assert srv.wait_for_stderr(r"result retention: deleted the results of 1 jobs")

    # The job itself, its charge and the ledger stay.
    job = srv.get(f"/api/jobs/{old_id}", key=key).json()
    assert job["status"] == "succeeded"
    assert str(job["credits_charged"]) in ("1", "1.0")
    assert isinstance(job["results_expired_at"], int)
    assert job["results_expired_at"] >= job["completed_at"] + RETENTION_S - 1
    assert job["data"] == []
    assert credits(srv, key) == {"credits": 8, "reserved": 0}
    assert srv.stop() == 0
    rc, out, err = srv.cli("ledger", "check")
    assert rc == 0, out + err


def test_without_retention_results_are_kept(factory):
    srv = factory.server("[images]\nresult_sweep_interval_ms = 100\n")
    key = srv.create_user("forever@example.com", credits=10)
    job_id, url = make_job(srv, key, "kept")
    time.sleep(1.0)
    assert requests.get(url, timeout=10).status_code == 200
    job = srv.get(f"/api/jobs/{job_id}", key=key).json()
    assert "results_expired_at" not in job and len(job["data"]) == 1
    assert not sweep_index_exists(srv)  # no finish pays for an index nothing reads


def test_retention_must_be_a_non_negative_number_of_seconds(factory):
    inst = factory.instance("[images]\nresult_retention_s = -1\n")
    rc, out, err = inst.cli("ledger", "check")
    assert rc != 0 and "result_retention_s" in err, (rc, out, err)
