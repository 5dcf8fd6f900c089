"""Reviewer: a local web page over the review queue. Binds to 127.0.0.1 by default, requires the token
printed at start-up (query parameter once, then an HttpOnly SameSite cookie; forms carry it too), serves only
PNG files under the output folder's images/ and quarantine/, and escapes everything it shows.

Keyboard: a = accept, r = reject, c = edit the fields, Enter (in a field) = save the correction, n = next."""

import html
import json
import secrets
from pathlib import Path

from clearmamba.engine.errors import NoStateError
from clearmamba.engine.state import EYES, MODALITIES, State, state_path

COOKIE = "clearmamba_review"
SERVED_FOLDERS = ("images", "quarantine")
CSP = (
    "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SCRIPT = """
document.addEventListener('keydown', function (ev) {
  var form = document.getElementById('decision');
  if (!form || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  var editing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
  function submit(action) { form.elements['action'].value = action; form.submit(); }
  if (editing) {
    if (ev.key === 'Enter') { ev.preventDefault(); submit('correct'); }
    if (ev.key === 'Escape') { document.activeElement.blur(); }
    return;
  }
  if (ev.key === 'a') { ev.preventDefault(); submit('accept'); }
  else if (ev.key === 'r') { ev.preventDefault(); submit('reject'); }
  else if (ev.key === 'c') { ev.preventDefault(); form.querySelector('.field').focus(); }
  else if (ev.key === 'n') { ev.preventDefault(); window.location = document.getElementById('next').href; }
});
document.addEventListener('click', function (ev) {
  var action = ev.target.getAttribute && ev.target.getAttribute('data-action');
  if (action) { ev.preventDefault(); var f = document.getElementById('decision');
    f.elements['action'].value = action; f.submit(); }
});
"""

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>clearmamba review</title>
<style>body{{font-family:sans-serif;margin:1.5em;background:#111;color:#eee}}
img{{max-height:320px;margin:4px;border:1px solid #555}} table td{{padding:2px 10px}}
.reason{{color:#fc6;font-size:1.2em}} kbd{{background:#333;
padding:1px 5px;border-radius:3px}} .err{{color:#f66}}</style></head><body>
<p>{progress} &middot; keys: <kbd>a</kbd> accept <kbd>r</kbd> reject <kbd>c</kbd> edit, <kbd>Enter</kbd> save
correction <kbd>n</kbd> next</p>{body}<script src="/review.js"></script></body></html>"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _safe_file(out_dir: Path, rel: str) -> Path | None:
    """The file for a request path, or None unless it is a PNG directly inside images/ or quarantine/."""
    parts = rel.split("/")
    if len(parts) != 2 or parts[0] not in SERVED_FOLDERS or not parts[1].endswith(".png"):
        return None
    if parts[1] in ("", ".", "..") or "\\" in rel or "\x00" in rel or parts[1].startswith("."):
        return None
    base = (out_dir / parts[0]).resolve()
    target = (base / parts[1]).resolve()
    if target.parent != base or not target.is_file():  # symlinks pointing elsewhere resolve outside
        return None
    return target


def create_app(out_dir: str | Path, token: str, allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")):
    from fastapi import FastAPI, Request
    from fastapi.responses import (
        FileResponse,
        HTMLResponse,
        JSONResponse,
        PlainTextResponse,
        RedirectResponse,
    )
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    out_dir = Path(out_dir).resolve()
    db_path = state_path(out_dir)
    if not db_path.exists():
        raise NoStateError(f"--out {out_dir}: no engine state here ({db_path} is missing); run "
                           "'clearmamba engine run PDF_FOLDER --out ...' first")
    app = FastAPI(title="clearmamba review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))  # DNS rebinding

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path != "/review.js":
            given = (
                request.headers.get("x-review-token")
                or request.query_params.get("token")
                or request.cookies.get(COOKIE)
                or ""
            )
            if request.method == "POST" and not given:
                given = (await _form(request)).get("token", "")
            if not secrets.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse("missing or wrong review token", status_code=401)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    def state() -> State:
        return State(db_path)

    @app.get("/review.js")
    def script():
        return PlainTextResponse(SCRIPT, media_type="application/javascript")

    @app.get("/")
    def index():
        st = state()
        try:
            items = st.items("open")
        finally:
            st.close()
        if not items:
            return HTMLResponse(PAGE.format(progress="0 open", body="<h2>The review queue is empty.</h2>"))
        return RedirectResponse(f"/item/{items[0]['id']}", status_code=303)

    @app.get("/item/{item_id}")
    def item_page(item_id: int, error: str | None = None):
        st = state()
        try:
            item = st.item(item_id)
            if item is None:
                return HTMLResponse(PAGE.format(progress="", body="<h2>No such item.</h2>"), status_code=404)
            outputs = st.outputs(json.loads(item["output_ids"]))
            open_ids = [r["id"] for r in st.items("open")]
            labels = list(json.loads(st.get_meta("vocabulary", "{}")))
        finally:
            st.close()
        later = [i for i in open_ids if i > item_id]
        nxt = later[0] if later else (open_ids[0] if open_ids else item_id)
        return HTMLResponse(
            PAGE.format(
                progress=f"{len(open_ids)} open", body=_item_html(item, outputs, labels, token, nxt, error)
            )
        )

    @app.post("/item/{item_id}")
    async def decide(item_id: int, request: Request):
        form = await _form(request)
        action = str(form.get("action", ""))
        fields: dict = {}
        try:
            if action == "correct":
                fields = _parse_fields(form, labels=_labels())
            st = state()
            try:
                st.decide(item_id, action, fields, out_dir)
                st.export(out_dir)
            finally:
                st.close()
        except KeyError as err:
            return PlainTextResponse(str(err), status_code=404)
        except ValueError as err:
            return HTMLResponse(
                PAGE.format(
                    progress="", body=f"<p class=err>{_e(err)}</p><a href='/item/{item_id}'>back</a>"
                ),
                status_code=422,
            )
        return RedirectResponse("/", status_code=303)

    def _labels() -> list[str]:
        st = state()
        try:
            return list(json.loads(st.get_meta("vocabulary", "{}")))
        finally:
            st.close()

    @app.get("/api/items")
    def api_items():
        st = state()
        try:
            return JSONResponse(
                [
                    {
                        "id": r["id"],
                        "reason": r["reason"],
                        "fields": json.loads(r["fields"]),
                        "output_ids": json.loads(r["output_ids"]),
                    }
                    for r in st.items("open")
                ]
            )
        finally:
            st.close()

    @app.get("/files/{rel:path}")
    def files(rel: str):
        target = _safe_file(out_dir, rel)
        if target is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(target, media_type="image/png")

    return app


MAX_FORM_BYTES = 65536


async def _form(request) -> dict[str, str]:
    """A url-encoded form body (what the page's form posts), first value per key; no multipart needed."""
    from urllib.parse import parse_qs

    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _parse_fields(form, labels: list[str]) -> dict:
    fields: dict = {}
    for key, allowed in (("eye", EYES), ("modality", MODALITIES), ("label", tuple(labels))):
        value = str(form.get(key, "")).strip()
        if value:
            if value not in allowed:
                raise ValueError(f"field {key!r}: {value!r} is not one of {', '.join(allowed)}")
            fields[key] = value
    if "frame_time" in form:
        raw = str(form.get("frame_time", "")).strip()
        try:
            fields["frame_time"] = float(raw) if raw else None
        except ValueError as err:
            raise ValueError(f"field 'frame_time': {raw!r} is not a number of seconds") from err
        if fields["frame_time"] is not None and fields["frame_time"] < 0:
            raise ValueError("field 'frame_time': must be >= 0 seconds")
    return fields


def _select(name: str, options, current) -> str:
    opts = "".join(
        f"<option value='{_e(o)}'{' selected' if o == current else ''}>{_e(o or '?')}</option>"
        for o in ["", *options]
    )
    return f"<select class='field' name='{_e(name)}'>{opts}</select>"


def _item_html(item, outputs, labels, token, next_id, error) -> str:
    fields = json.loads(item["fields"])
    frame_item = len(outputs) == 1
    images = "".join(f"<img alt='frame' src='/files/{_e(o['file'])}'>" for o in outputs[:12])
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in fields.items())
    first = outputs[0] if outputs else None
    editors = []
    if frame_item and first is not None:
        editors += [
            f"eye {_select('eye', EYES, first['eye'])}",
            f"modality {_select('modality', MODALITIES, first['modality'])}",
            "frame time (s) <input class='field' name='frame_time' value='"
            f"{_e('' if first['frame_time'] is None else first['frame_time'])}' size=6>",
        ]
    editors.append(f"label {_select('label', labels, first['label'] if first is not None else None)}")
    return (
        f"<h2>Item {_e(item['id'])}: <span class=reason>{_e(item['reason'])}</span>"
        f" ({_e(item['status'])})</h2>"
        f"<div>{images}</div><p>{len(outputs)} image(s)</p><table>{rows}</table>"
        + (f"<p class=err>{_e(error)}</p>" if error else "")
        + f"<form id='decision' method='post' action='/item/{_e(item['id'])}'>"
        f"<input type='hidden' name='token' value='{_e(token)}'><input type='hidden' name='action' value=''>"
        + " ".join(editors)
        + "<p><button data-action='accept'>Accept (a)</button> <button data-action='correct'>Save correction"
        " (Enter)</button> <button data-action='reject'>Reject (r)</button></p></form>"
        f"<a id='next' href='/item/{_e(next_id)}'>next (n)</a>"
    )


def serve(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> None:
    """Run the review page; prints the URL with the access token."""
    import uvicorn
    from rich.console import Console

    token = token or secrets.token_urlsafe(24)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    # on loopback only loopback Host headers (DNS rebinding); a deliberate non-loopback bind is reached by
    # names we cannot know, so the token alone guards it
    hosts = ("127.0.0.1", "localhost", "[::1]") if loopback else ("*",)
    app = create_app(out_dir, token, allowed_hosts=hosts)
    console = Console()
    if not loopback:
        console.print(f"[yellow]warning: serving on {host}, reachable from other machines[/yellow]")
    console.print(f"review page: http://{host}:{port}/?token={token}")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
