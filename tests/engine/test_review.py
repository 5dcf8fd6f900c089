from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from clearmamba.engine.pipeline import prepare_out  # noqa: E402
from clearmamba.engine.process import FrameOut, ReportOutcome, SourceOutcome, write_png_atomic  # noqa: E402
from clearmamba.engine.review import create_app  # noqa: E402
from clearmamba.testing.images import angiogram  # noqa: E402

TOKEN = "t0k3n-for-tests"
EVIL = "<script>alert('x')</script>"


def make_review_state(out, vocabulary=None) -> None:
    """A state with three open items: one frame with an ambiguous eye, one whose burned-in PHI survived
    (quarantined), and a report-level unknown diagnosis (carrying hostile text to test escaping)."""
    state, _ = prepare_out(out)
    state.set_meta("vocabulary", json.dumps(vocabulary or {"uveitis": [], "central_serous": []}))
    rng = np.random.default_rng(0)
    frames = []
    for k, (eye, folder, reasons) in enumerate(
        [
            ("OD", "images", ["ambiguous_eye"]),
            ("OS", "images", []),
            ("OS", "quarantine", ["phi_after_erasure"]),
        ]
    ):
        name = f"{folder}/{k:016x}.png"
        sha = write_png_atomic(out / name, angiogram(eye, "FFA", 30 + k, rng, 96))
        frames.append(
            FrameOut(name, 1, (0, 10.0 * k, 10, 10.0 * k + 10), eye, "label", "FFA", 30.0 + k, sha, reasons)
        )
    sid = "s" * 16
    state.db.execute("INSERT INTO sources(id, path) VALUES (?, ?)", (sid, str(out / "x.pdf")))
    report = ReportOutcome(
        index=0, pages=[1], patient_key="k", label=None, diagnosis=f"{EVIL} & co", reasons=["unknown_diagnosis"],
        frames=frames,
    )
    outcome = SourceOutcome(str(out / "x.pdf"), sha256="0", reports=[report])
    assert state.commit_report(sid, outcome)
    state.close()


@pytest.fixture
def client(tmp_path):
    out = tmp_path / "out"
    make_review_state(out)
    (out / "private" / "secret.txt").write_text("not for the browser")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG outside")
    os.symlink(tmp_path / "outside.png", out / "images" / "link.png")
    app = create_app(out, TOKEN)
    return TestClient(app, base_url="http://127.0.0.1:8765"), out


def test_token_required_everywhere(client):
    c, out = client
    for path in ("/", "/item/1", "/api/items", "/files/images/0000000000000000.png"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={"x-review-token": "wrong"}).status_code == 401, path
    r = c.post("/item/1", data={"action": "reject"})
    assert r.status_code == 401
    r = c.post("/item/1", data={"action": "reject", "token": "nope"})
    assert r.status_code == 401
    assert [i["id"] for i in c.get("/api/items", headers={"x-review-token": TOKEN}).json()] == [1, 2, 3]
    # the token in the URL once sets an HttpOnly, SameSite cookie that the page's images then use
    r = c.get(f"/?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    assert c.get("/item/1").status_code == 200


def test_other_host_headers_are_refused(client):
    c, _ = client
    r = c.get(f"/api/items?token={TOKEN}", headers={"host": "evil.example"})
    assert r.status_code == 400


def test_default_bind_is_loopback(monkeypatch, tmp_path):
    import uvicorn

    from clearmamba.engine import review

    out = tmp_path / "out"
    make_review_state(out)
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    review.serve(out)
    assert seen["host"] == "127.0.0.1"
    review.serve(out, host="0.0.0.0")  # only when asked, with a warning
    assert seen["host"] == "0.0.0.0"


@pytest.mark.parametrize(
    "path",
    [
        "/files/../private/state.sqlite",
        "/files/images/../private/secret.txt",
        "/files/%2e%2e/private/secret.txt",
        "/files/images/%2e%2e/private/secret.txt",
        "/files/private/secret.txt",
        "/files//etc/passwd",
        "/files/images/..%2fprivate%2fsecret.txt",
        "/files/images/link.png",
        "/files/manifest.csv",
        "/files/images/missing.png",
        "/files/images\\..\\private\\secret.txt",
    ],
)
def test_only_pngs_under_images_and_quarantine_are_served(client, path):
    c, _ = client
    r = c.get(path, headers={"x-review-token": TOKEN})
    assert r.status_code == 404, path
    assert b"not for the browser" not in r.content and b"SQLite" not in r.content


def test_served_image_is_the_file(client):
    c, out = client
    r = c.get("/files/images/0000000000000000.png", headers={"x-review-token": TOKEN})
    assert r.status_code == 200 and r.content == (out / "images/0000000000000000.png").read_bytes()
    assert r.headers["content-type"] == "image/png"


def test_everything_shown_is_escaped(client):
    c, _ = client
    r = c.get("/item/3", headers={"x-review-token": TOKEN})
    assert r.status_code == 200
    assert EVIL not in r.text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.text.count("<script") == 1  # only the page's own /review.js


def test_decisions_update_db_and_manifest(client):
    c, out = client
    h = {"x-review-token": TOKEN}
    # accepting the report-level item is refused while its label is unknown: never silently labelled
    r = c.post("/item/3", data={"action": "accept", "token": TOKEN})
    assert r.status_code == 422 and "label" in r.text
    assert (
        c.post("/item/3", data={"action": "correct", "label": "nonsense", "token": TOKEN}).status_code == 422
    )
    r = c.post(
        "/item/3", data={"action": "correct", "label": "uveitis", "token": TOKEN}, follow_redirects=False
    )
    assert r.status_code == 303
    r = c.post(
        "/item/1",
        data={
            "action": "correct",
            "eye": "OS",
            "modality": "FFA",
            "frame_time": "12.5",
            "label": "uveitis",
            "token": TOKEN,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert c.post("/item/2", data={"action": "accept"}, headers=h, follow_redirects=False).status_code == 303
    assert c.get("/api/items", headers=h).json() == []
    assert c.post("/item/2", data={"action": "reject"}, headers=h).status_code == 422  # already decided
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["eye"], r["frame_time"], r["label"]) for r in rows) == [
        ("OS", "12.5", "uveitis"),
        ("OS", "31", "uveitis"),
        ("OS", "32", "uveitis"),
    ]
    # the quarantined frame, accepted by a person, moved into images/
    assert all(r["path"].startswith("images/") for r in rows) and not list((out / "quarantine").iterdir())
    import sqlite3

    with sqlite3.connect(out / "private" / "state.sqlite") as con:
        decisions = con.execute("SELECT item_id, action FROM decisions ORDER BY id").fetchall()
        statuses = dict(con.execute("SELECT id, status FROM review_items").fetchall())
    assert decisions == [(3, "correct"), (1, "correct"), (2, "accept")]
    assert statuses == {1: "corrected", 2: "accepted", 3: "corrected"}


def test_reject_drops_images_from_the_manifest(client):
    c, out = client
    h = {"x-review-token": TOKEN}
    assert c.post("/item/3", data={"action": "reject"}, headers=h, follow_redirects=False).status_code == 303
    with open(out / "manifest.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == []
    # the rejected images left images/ (renamed into quarantine/, which only the review page shows)
    left = [p for p in (out / "images").glob("*.png") if not p.is_symlink()]  # the fixture's symlink trap stays
    assert left == [] and len(list((out / "quarantine").glob("*.png"))) == 3


def test_accepting_a_report_item_does_not_release_a_quarantined_frame(client):
    c, out = client
    r = c.post("/item/3", data={"action": "correct", "label": "uveitis", "token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303
    # only the frame's own PHI item, decided by a person looking at it, may move it out of quarantine/
    assert len(list((out / "quarantine").glob("*.png"))) == 1
    with open(out / "manifest.csv", newline="") as fh:
        assert all(row["path"].startswith("images/") for row in csv.DictReader(fh))
