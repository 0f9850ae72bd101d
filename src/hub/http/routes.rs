//! What each path of the HTTP view serves: the page, `/state`, `/metrics`, snapshots and
//! MJPEG streams, and `POST /api/sources/<source>/command`; anything else gets 404,
//! methods other than GET and HEAD 405 (or 501).
//!
//! A stream is served on its connection's own thread: it waits on the source's slot (with
//! a timeout, to notice shutdown and a viewer that left) and writes whatever frame is
//! newest, so a slow viewer skips frames and delays only itself.

use super::conn::{respond, respond_error, Connection, Request};
use super::frames::FrameSlot;
use super::HttpView;
use crate::proto::commands::MAX_COMMAND_BYTES;
use crate::shutdown::{Shutdown, POLL_INTERVAL};
use std::io::{self, Write};
use std::time::Duration;

/// The page at `/`.
const PAGE: &str = include_str!("page.html");
/// How long a streaming connection's check for a departed viewer waits.
const PEER_CHECK: Duration = Duration::from_millis(1);
/// The MJPEG part boundary.
const BOUNDARY: &str = "udphub-frame";

/// Answer one request. `Ok(true)` when the connection may carry another request.
pub fn handle(
    conn: &mut Connection,
    req: &Request,
    view: &HttpView,
    shutdown: &Shutdown,
) -> io::Result<bool> {
    if let Some(source) = req
        .path()
        .strip_prefix("/api/sources/")
        .and_then(|s| s.strip_suffix("/command"))
    {
        if req.method == "POST" {
            command(conn, req, source, view, shutdown)?;
            return Ok(false);
        }
    }
    let head_only = match req.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        method => {
            let known = matches!(
                method,
                "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "CONNECT" | "TRACE"
            );
            let status = if known { 405 } else { 501 };
            respond_error(
                &mut conn.writer(),
                status,
                &format!("{method} is not served; use GET or HEAD"),
                &[("Allow", "GET, HEAD")],
                false,
                false,
            )?;
            return Ok(false);
        }
    };
    let keep = req.keep_alive;
    let path = req.path();
    if path == "/" || path == "/index.html" {
        respond(
            &mut conn.writer(),
            200,
            &[("Content-Type", "text/html; charset=utf-8")],
            page(view)?.as_bytes(),
            head_only,
            keep,
        )?;
    } else if path == "/state" {
        let body = serde_json::to_vec_pretty(&view.state()).map_err(io::Error::other)?;
        respond(
            &mut conn.writer(),
            200,
            &[("Content-Type", "application/json")],
            &body,
            head_only,
            keep,
        )?;
    } else if path == "/api/history" {
        let body = serde_json::to_vec(&view.history_state()).map_err(io::Error::other)?;
        respond(
            &mut conn.writer(),
            200,
            &[("Content-Type", "application/json")],
            &body,
            head_only,
            keep,
        )?;
    } else if path == "/metrics" {
        let body = super::report::metrics(&view.state());
        respond(
            &mut conn.writer(),
            200,
            &[("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
            body.as_bytes(),
            head_only,
            keep,
        )?;
    } else if let Some(slug) = path
        .strip_prefix("/snapshot/")
        .and_then(|s| s.strip_suffix(".jpg"))
    {
        // a listed source always has a frame; `None` is only there for the type's sake
        match view.frames.find(slug).and_then(|(_, slot)| slot.latest()) {
            Some((_, jpeg)) => {
                respond(
                    &mut conn.writer(),
                    200,
                    &[("Content-Type", "image/jpeg")],
                    &jpeg,
                    head_only,
                    keep,
                )?;
            }
            None => not_found(conn, slug, head_only, keep)?,
        }
    } else if let Some(slug) = path.strip_prefix("/stream/") {
        match view.frames.find(slug) {
            Some((_, slot)) => {
                stream(conn, &slot, view, head_only, shutdown)?;
                return Ok(false);
            }
            None => not_found(conn, slug, head_only, keep)?,
        }
    } else {
        respond_error(
            &mut conn.writer(),
            404,
            &format!("no page {path:?}; try /, /state, /metrics, /stream/<source>, /snapshot/<source>.jpg"),
            &[],
            head_only,
            keep,
        )?;
    }
    Ok(true)
}

/// `POST /api/sources/<source>/command`: the body, one JSON value of at most
/// [`MAX_COMMAND_BYTES`], for the framed sender named `source`: 202 `{"id", "source",
/// "ttl_s"}` once handed to the message service (the outcome is published to MQTT and
/// logged); 400 (bad name or JSON), 411 (no `Content-Length`), 413 (too long), 503 (no
/// message service, or its inbox is full). The connection closes afterwards.
fn command(
    conn: &mut Connection,
    req: &Request,
    source: &str,
    view: &HttpView,
    shutdown: &Shutdown,
) -> io::Result<()> {
    let fail = |conn: &mut Connection, status, detail: &str| {
        respond_error(&mut conn.writer(), status, detail, &[], false, false)
    };
    let Some(len) = req.content_length else {
        return fail(
            conn,
            411,
            "a command needs a Content-Length (no chunked bodies)",
        );
    };
    if len > MAX_COMMAND_BYTES {
        return fail(
            conn,
            413,
            &format!("a command is at most {MAX_COMMAND_BYTES} bytes of JSON; this is {len}"),
        );
    }
    if crate::wire::name::check(source).is_err() {
        return fail(
            conn,
            400,
            &format!("{source:?} is not a sender's name (1-64 of A-Z a-z 0-9 . _ -)"),
        );
    }
    let Some(body) = conn.read_body(len, shutdown) else {
        return Ok(());
    };
    let json = match crate::wire::seed_msg::parse_message(&body) {
        Ok(json) => json,
        Err(e) => return fail(conn, 400, &format!("the body must be one JSON value: {e}")),
    };
    let Some(inbox) = &view.commands else {
        return fail(conn, 503, "this hub has no message service (--no-msg)");
    };
    match inbox.submit(source, json) {
        Ok(id) => {
            let body =
                serde_json::json!({"id": id, "source": source, "ttl_s": inbox.ttl.as_secs_f64()});
            respond(
                &mut conn.writer(),
                202,
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
                false,
                false,
            )
        }
        Err(e) => fail(conn, 503, &e.to_string()),
    }
}

/// The page, with the current state and history filled in. Every `<` of the JSON is
/// escaped (`\u003c`, which means the same in JSON), so no text from a sender (a name, a
/// message field) can end the script element.
fn page(view: &HttpView) -> io::Result<String> {
    let state = serde_json::to_string(&view.state()).map_err(io::Error::other)?;
    let history = serde_json::to_string(&view.history_state()).map_err(io::Error::other)?;
    Ok(PAGE
        .replacen("null /*INITIAL_STATE*/", &state.replace('<', "\\u003c"), 1)
        .replacen(
            "null /*INITIAL_HISTORY*/",
            &history.replace('<', "\\u003c"),
            1,
        ))
}

fn not_found(conn: &mut Connection, slug: &str, head_only: bool, keep: bool) -> io::Result<()> {
    respond_error(
        &mut conn.writer(),
        404,
        &format!("no image source {slug:?} (see /state for the sources)"),
        &[],
        head_only,
        keep,
    )
}

/// Serve `/stream/<source>` until the viewer leaves or the hub stops. The connection closes
/// afterwards.
fn stream(
    conn: &mut Connection,
    slot: &FrameSlot,
    view: &HttpView,
    head_only: bool,
    shutdown: &Shutdown,
) -> io::Result<()> {
    let Some(_permit) = view.viewer_permit() else {
        return respond_error(
            &mut conn.writer(),
            503,
            &format!(
                "{} viewers are watching already (--http-max-viewers); try again later",
                view.max_viewers
            ),
            &[("Retry-After", "5")],
            head_only,
            false,
        );
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-store\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"
    );
    conn.writer().write_all(head.as_bytes())?;
    if head_only {
        return Ok(());
    }
    // Each part is followed at once by the next boundary, so a browser shows a frame as
    // soon as it has it rather than when the next one starts.
    conn.writer()
        .write_all(format!("--{BOUNDARY}\r\n").as_bytes())?;
    // from now on a read only checks whether the viewer left: it must not hold up frames
    conn.stream.set_read_timeout(Some(PEER_CHECK))?;
    let mut seen = 0;
    while !shutdown.is_triggered() {
        match slot.wait_newer(seen, POLL_INTERVAL) {
            Some((generation, jpeg)) => {
                seen = generation;
                let part = format!(
                    "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                );
                // the whole part within the write timeout, or the viewer is dropped
                let mut w = conn.writer();
                w.write_all(part.as_bytes())?;
                w.write_all(&jpeg)?;
                w.write_all(format!("\r\n--{BOUNDARY}\r\n").as_bytes())?;
            }
            // no new frame: see whether the viewer is still there
            None if conn.peer_closed() => return Ok(()),
            None => {}
        }
    }
    Ok(())
}
