//! A proxy in front of the emulator that keeps one source's batches "not
//! ready" (202) for ever: the emulator's `not_ready_polls` applies to every
//! batch, and the test needs one late source among ready ones.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use syncvet_e2e::{Request, respond, serve};

/// Serves on a free loopback port; returns `http://127.0.0.1:PORT`.
pub fn not_ready_gate(upstream: SocketAddr, source: &str) -> String {
    let prefix = format!("/api/batch/{source}/");
    intercept(upstream, move |request, stream| {
        request.target.starts_with(&prefix).then(|| {
            let headers = [("content-type", "application/json"), ("retry-after", "1")];
            respond(
                stream,
                "202 Accepted",
                &headers,
                br#"{"status":"Processing"}"#,
            )
        })
    })
}

/// A proxy to `upstream` whose `handler` answers the requests it wants
/// (returning whether the connection may stay open); the rest are forwarded.
pub fn intercept<H>(upstream: SocketAddr, handler: H) -> String
where
    H: Fn(&Request, &mut TcpStream) -> Option<bool> + Send + Sync + 'static,
{
    serve(move |request, stream| match handler(&request, stream) {
        Some(keep_open) => keep_open,
        None => {
            forward(upstream, &request, stream);
            false
        }
    })
}

/// One request to the upstream on its own connection, the answer back
/// with `connection: close` (the client then opens a new connection).
fn forward(upstream: SocketAddr, request: &Request, client: &mut TcpStream) {
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let mut head: String = request
        .head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    head.push_str("connection: close\r\n\r\n");
    if up
        .write_all(head.as_bytes())
        .and_then(|()| up.write_all(&request.body))
        .is_err()
    {
        return;
    }
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response);
    let Some(end) = response.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let mut out = response[..end + 2].to_vec();
    out.extend_from_slice(b"connection: close\r\n");
    let rest: Vec<u8> = response[end + 2..].to_vec();
    // Drop the upstream's own connection header, if any.
    let text = String::from_utf8_lossy(&rest);
    let filtered = match text.find("\r\n\r\n") {
        Some(head_end) => {
            let mut kept: Vec<u8> = text[..head_end]
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .flat_map(|l| format!("{l}\r\n").into_bytes())
                .collect();
            kept.extend_from_slice(b"\r\n");
            kept.extend_from_slice(&rest[head_end + 4..]);
            kept
        }
        None => rest,
    };
    out.extend_from_slice(&filtered);
    let _ = client.write_all(&out);
}
