//! HTTP/1.1 on one URL tunnel, spoken inside the request's own task.
//!
//! hyper's client runs a task per connection and hands every request and
//! response across a channel to it: two more task wake-ups per request on
//! top of QUIC's. Here the ingress's request task writes the request head
//! itself and parses the response head (httparse); the response body is
//! read by whoever polls it (the client connection's task), and the tunnel
//! is handed back for reuse when the exchange is over. Upgrades
//! (websockets) do not come here: they go through hyper (see `proxy`).
//!
//! Invariants:
//! - One exchange at a time per tunnel. A tunnel is handed back only when
//!   the request body was sent in full, the response body was read in
//!   full, the response allows keep-alive and no byte is left over.
//! - Response bodies are framed as RFC 9112 6.3 says: none for HEAD, 1xx,
//!   204 and 304; chunked; `Content-Length`; else until the app closes
//!   (then the tunnel is not reused). Interim 1xx responses are skipped.
//! - Nothing is buffered without bound: a response head is at most
//!   [`MAX_HEAD`], and body bytes are passed on as they arrive.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::task::AbortOnDropHandle;

/// Errors of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest response head (status line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers per response at most.
const MAX_HEADERS: usize = 128;
/// How much is read from the tunnel at a time.
const READ_SIZE: usize = 16 * 1024;

/// One tunnel: its two directions, and bytes read but not used yet.
pub struct Tunnel<R, W> {
    pub recv: R,
    pub send: W,
    pub buf: BytesMut,
}

impl<R: AsyncRead + Unpin, W> Tunnel<R, W> {
    pub fn new(recv: R, send: W) -> Tunnel<R, W> {
        Tunnel {
            recv,
            send,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle tunnel can take a request: the app has not closed
    /// it and sent nothing unasked (looked at without waiting).
    pub fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(
            Pin::new(&mut self.recv).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }
}

/// How a request's body goes on the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

impl RequestBody {
    /// The framing for a request with these (already prepared) headers and
    /// this body.
    pub fn of(headers: &HeaderMap, body: &Incoming) -> RequestBody {
        if let Some(n) = content_length(headers).ok().flatten() {
            return RequestBody::Length(n);
        }
        if body.is_end_stream() {
            return RequestBody::None;
        }
        match body.size_hint().exact() {
            Some(n) => RequestBody::Length(n),
            None => RequestBody::Chunked,
        }
    }
}

/// The request head as sent on the tunnel. `headers` are already prepared
/// (hop-by-hop headers gone); the body's framing header is added.
pub fn encode_head(method: &Method, path: &str, headers: &HeaderMap, body: RequestBody) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        RequestBody::Length(n) if !headers.contains_key(header::CONTENT_LENGTH) => {
            out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        RequestBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends a request body on `send` as `framing` says; gives `send` back
/// when all of it went.
/// How [`send_body`]'s error starts when the client's body was at fault
/// (malformed chunks, a connection cut mid-body), not the tunnel.
pub const CLIENT_BODY_BROKE: &str = "the client's request body broke";

pub async fn send_body<W: AsyncWrite + Unpin>(
    mut send: W,
    mut body: Incoming,
    framing: RequestBody,
) -> Result<W, String> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{CLIENT_BODY_BROKE}: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        let written = if framing == RequestBody::Chunked {
            let size = format!("{:x}\r\n", data.len());
            async {
                send.write_all(size.as_bytes()).await?;
                send.write_all(&data).await?;
                send.write_all(b"\r\n").await
            }
            .await
        } else {
            send.write_all(&data).await
        };
        written.map_err(|e| format!("the tunnel broke while sending the request body: {e}"))?;
    }
    if framing == RequestBody::Chunked {
        send.write_all(b"0\r\n\r\n")
            .await
            .map_err(|e| format!("the tunnel broke while sending the request body: {e}"))?;
    }
    Ok(send)
}

/// How a response body is delimited, and how far reading it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body, or all of it read.
    Done,
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the app closes.
    UntilClose,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// What one decoding step gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    Done,
}

impl Framing {
    /// Takes the next piece of body out of `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, String> {
        loop {
            match self {
                Framing::Done => return Ok(Step::Done),
                Framing::Length(0) => {
                    *self = Framing::Done;
                    return Ok(Step::Done);
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    if let Framing::Chunked(c @ Chunk::Data(0)) = self {
                        *c = Chunk::DataEnd;
                    }
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if buf.len() < 1024 => return Ok(Step::More),
                    _ => return Err("the app sent a malformed chunk size".into()),
                },
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("the app sent a chunk longer than its size".into());
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_HEAD {
                            return Err("the app sent trailers larger than 64 KiB".into());
                        }
                        return Ok(Step::More);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        *self = Framing::Done;
                    }
                }
            }
        }
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The app allows another request on this connection.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf` (consuming it), or
/// `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err("the app's response head is larger than 64 KiB".into())
        }
        Err(e) => return Err(format!("the app sent a malformed response: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("the app answered with status {code}"))?;
    let http10 = resp.version == Some(0);
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("the app sent a malformed header name {:?}", h.name))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| format!("the app sent a malformed value for {name}"))?;
        headers.append(name, value);
    }
    buf.advance(used);
    let connection_says = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let mut keep_alive = if http10 {
        connection_says("keep-alive")
    } else {
        !connection_says("close")
    };
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Done
    } else if let Some(te) = headers.get(header::TRANSFER_ENCODING) {
        let chunked_last = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        if chunked_last && !http10 {
            Framing::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else {
        match content_length(&headers)? {
            Some(n) => Framing::Length(n),
            None => {
                keep_alive = false;
                Framing::UntilClose
            }
        }
    };
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// The `Content-Length`, if any; several values must agree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| format!("malformed Content-Length {v:?}"))?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length values".into());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Why reading a response head failed.
#[derive(Debug)]
pub enum HeadError {
    /// The tunnel ended before a single byte of response.
    Nothing(String),
    /// Anything else (bytes may have come).
    Broken(String),
}

/// Reads the response head (after any interim 1xx responses).
pub async fn read_head<R: AsyncRead + Unpin>(
    recv: &mut R,
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Head, HeadError> {
    let mut got_any = false;
    loop {
        match parse_head(buf, method) {
            Ok(Some(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(HeadError::Broken(
                    "the app switched protocols unasked".into(),
                ))
            }
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(HeadError::Broken(e)),
        }
        buf.reserve(READ_SIZE);
        match recv.read_buf(buf).await {
            Ok(0) if !got_any => {
                return Err(HeadError::Nothing(
                    "the app closed the connection without answering".into(),
                ))
            }
            Ok(0) => {
                return Err(HeadError::Broken(
                    "the app closed the connection in the middle of its response head".into(),
                ))
            }
            Ok(_) => got_any = true,
            Err(e) if !got_any => return Err(HeadError::Nothing(format!("the tunnel broke: {e}"))),
            Err(e) => return Err(HeadError::Broken(format!("the tunnel broke: {e}"))),
        }
    }
}

/// The request body's side of an exchange: the send half, or the task
/// still sending the body on it.
pub enum Sending<W> {
    Idle(W),
    Busy(AbortOnDropHandle<Result<W, String>>),
    /// Sending failed: the send half is gone, the tunnel cannot be reused.
    Gone,
}

/// What is done with a tunnel whose exchange is over.
pub type GiveBack<R, W> = Box<dyn FnOnce(Tunnel<R, W>) + Send + Sync>;

/// A response body read off the tunnel as it is polled.
pub struct ResponseBody<R, W> {
    state: Option<Reading<R, W>>,
}

struct Reading<R, W> {
    recv: R,
    buf: BytesMut,
    framing: Framing,
    sending: Sending<W>,
    keep_alive: bool,
    give_back: GiveBack<R, W>,
}

impl<R, W> Reading<R, W> {
    /// The body was read in full: hand the tunnel back if it can be reused.
    fn finish(self) {
        if !self.keep_alive || !self.buf.is_empty() {
            return;
        }
        let send = match self.sending {
            Sending::Idle(send) => send,
            Sending::Gone => return,
            Sending::Busy(mut task) => {
                if !task.is_finished() {
                    return; // the app answered before it had the whole body
                }
                match (&mut task).now_or_never() {
                    Some(Ok(Ok(send))) => send,
                    _ => return,
                }
            }
        };
        (self.give_back)(Tunnel {
            recv: self.recv,
            send,
            buf: self.buf,
        });
    }
}

impl<R, W> ResponseBody<R, W> {
    /// The body that follows `head` on `tunnel`; `give_back` gets the
    /// tunnel when it can be reused. A response without a body hands the
    /// tunnel back at once.
    pub fn new(
        recv: R,
        buf: BytesMut,
        sending: Sending<W>,
        head: &Head,
        give_back: GiveBack<R, W>,
    ) -> ResponseBody<R, W> {
        let reading = Reading {
            recv,
            buf,
            framing: head.framing,
            sending,
            keep_alive: head.keep_alive,
            give_back,
        };
        if matches!(reading.framing, Framing::Done | Framing::Length(0)) {
            reading.finish();
            return ResponseBody { state: None };
        }
        ResponseBody {
            state: Some(reading),
        }
    }
}

impl<R: AsyncRead + Unpin, W: Unpin> Body for ResponseBody<R, W> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(st) = this.state.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match st.framing.step(&mut st.buf) {
                Ok(Step::Data(data)) => {
                    // The last bytes of a sized body: the reader (hyper)
                    // may stop polling once it has them, so the tunnel
                    // goes back now.
                    if st.framing == Framing::Length(0) {
                        if let Some(st) = this.state.take() {
                            st.finish();
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    if let Some(st) = this.state.take() {
                        st.finish();
                    }
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => {
                    this.state = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            st.buf.reserve(READ_SIZE);
            let read = {
                let mut read = std::pin::pin!(st.recv.read_buf(&mut st.buf));
                read.as_mut().poll(cx)
            };
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let closed_ok = st.framing == Framing::UntilClose;
                    this.state = None;
                    if closed_ok {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(
                        "the app closed the connection in the middle of the response body".into(),
                    )));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.state = None;
                    return Poll::Ready(Some(Err(format!(
                        "the tunnel broke during the response body: {e}"
                    )
                    .into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state
            .as_ref()
            .is_none_or(|s| matches!(s.framing, Framing::Done | Framing::Length(0)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state.as_ref().map(|s| s.framing) {
            None | Some(Framing::Done) => SizeHint::with_exact(0),
            Some(Framing::Length(n)) => SizeHint::with_exact(n),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(s: &[u8]) -> BytesMut {
        BytesMut::from(s)
    }

    /// Feeds `wire` to a fresh decoder in pieces of `piece` bytes; returns
    /// the body and what is left over.
    fn decode(
        mut framing: Framing,
        wire: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut b = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = wire;
        loop {
            match framing.step(&mut b)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::Done => return Ok((out, b.to_vec())),
                Step::More => {
                    if rest.is_empty() {
                        return Err("ran out".into());
                    }
                    let n = piece.min(rest.len());
                    b.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire =
            b"5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nchunked web\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, 100] {
            let (body, rest) = decode(Framing::Chunked(Chunk::Size), wire, piece).expect("decodes");
            assert_eq!(body, b"hello chunked web", "piece {piece}");
            // Bytes after the body stay (only whole pieces were fed).
            assert!(b"NEXT".starts_with(&rest), "piece {piece}: {rest:?}");
        }
        assert!(decode(Framing::Chunked(Chunk::Size), b"zz\r\n", 10).is_err());
        assert!(decode(Framing::Chunked(Chunk::Size), b"2\r\nabc\r\n", 10).is_err());
        assert_eq!(
            decode(Framing::Chunked(Chunk::Size), b"3\r\nab", 10),
            Err("ran out".into())
        );
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let (body, rest) = decode(Framing::Length(5), b"hello, world", 4).expect("decodes");
        assert_eq!(body, b"hello");
        assert_eq!(rest, b", w");
        assert_eq!(decode(Framing::Length(0), b"", 1), Ok((vec![], vec![])));
    }

    #[test]
    fn heads_give_status_headers_and_framing() {
        let get = Method::GET;
        let mut b = buf(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc");
        let head = parse_head(&mut b, &get).expect("parses").expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&b[..], b"abc");

        let mut b = buf(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        let head = parse_head(&mut b, &get).expect("parses").expect("complete");
        assert_eq!(head.framing, Framing::Chunked(Chunk::Size));

        let mut b = buf(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let head = parse_head(&mut b, &get).expect("parses").expect("complete");
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);

        let mut b = buf(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        let head = parse_head(&mut b, &get).expect("parses").expect("complete");
        assert!(!head.keep_alive, "HTTP/1.0 without keep-alive");

        for (method, status) in [
            (Method::HEAD, "200"),
            (Method::GET, "204"),
            (Method::GET, "304"),
        ] {
            let mut b = buf(format!("HTTP/1.1 {status} X\r\nContent-Length: 9\r\n\r\n").as_bytes());
            let head = parse_head(&mut b, &method)
                .expect("parses")
                .expect("complete");
            assert_eq!(head.framing, Framing::Done, "{method} {status}");
        }

        let mut b = buf(b"HTTP/1.1 200 OK\r\nContent-Len");
        assert!(parse_head(&mut b, &get).expect("partial is fine").is_none());
        let mut b = buf(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(parse_head(&mut b, &get).is_err());
        let mut b = buf(b"NOT HTTP\r\n\r\n");
        assert!(parse_head(&mut b, &get).is_err());
        let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        b.extend(std::iter::repeat_n(b'x', MAX_HEAD + 10));
        assert!(
            parse_head(&mut b, &get).is_err(),
            "an endless head is refused"
        );
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("web.localhost"));
        let head = encode_head(&Method::POST, "/up?x=1", &h, RequestBody::Chunked);
        assert_eq!(
            String::from_utf8_lossy(&head),
            "POST /up?x=1 HTTP/1.1\r\nhost: web.localhost\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let head = encode_head(&Method::PUT, "/", &h, RequestBody::Length(7));
        assert!(String::from_utf8_lossy(&head).contains("content-length: 7\r\n"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        let head = encode_head(&Method::PUT, "/", &h, RequestBody::Length(7));
        assert_eq!(
            String::from_utf8_lossy(&head)
                .matches("content-length")
                .count(),
            1
        );
    }

    type Handed<R> = std::sync::Arc<std::sync::Mutex<Option<Tunnel<R, ()>>>>;

    /// Reads a response head off `tunnel` and returns it with its body,
    /// which hands the tunnel to `back` when it can be reused.
    async fn respond<R: AsyncRead + Unpin + Send + Sync + 'static>(
        mut tunnel: Tunnel<R, ()>,
        back: &Handed<R>,
    ) -> (Head, ResponseBody<R, ()>) {
        let head = read_head(&mut tunnel.recv, &mut tunnel.buf, &Method::GET)
            .await
            .expect("head");
        let keep = back.clone();
        let body = ResponseBody::new(
            tunnel.recv,
            tunnel.buf,
            Sending::Idle(()),
            &head,
            Box::new(move |t| *keep.lock().expect("lock") = Some(t)),
        );
        (head, body)
    }

    /// A whole exchange on an in-memory tunnel: interim response skipped,
    /// chunked body read as polled, tunnel handed back, then a second one
    /// on the same tunnel.
    #[tokio::test]
    async fn exchanges_reuse_the_tunnel_only_when_complete() {
        let (ours, mut app) = tokio::io::duplex(64 * 1024);
        let (recv, _send) = tokio::io::split(ours);
        let back: Handed<_> = Handed::default();
        app.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
        let (head, body) = respond(Tunnel::new(recv, ()), &back).await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(
            back.lock().expect("lock").is_none(),
            "not before the body is read"
        );
        let got = body.collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"abc");
        let mut tunnel = back.lock().expect("lock").take().expect("handed back");
        assert!(tunnel.is_usable());

        // Connection: close → read to the end, never handed back.
        app.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye")
            .await
            .expect("write");
        drop(app);
        let (_, body) = respond(tunnel, &back).await;
        assert_eq!(&body.collect().await.expect("body").to_bytes()[..], b"bye");
        assert!(back.lock().expect("lock").is_none());
    }

    /// hyper stops polling a sized body once it has all its bytes: the
    /// tunnel must be back by then.
    #[tokio::test]
    async fn a_sized_body_hands_the_tunnel_back_with_its_last_bytes() {
        let (ours, mut app) = tokio::io::duplex(1024);
        let (recv, _send) = tokio::io::split(ours);
        app.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
            .await
            .expect("write");
        let back: Handed<_> = Handed::default();
        let (_, mut body) = respond(Tunnel::new(recv, ()), &back).await;
        assert_eq!(body.size_hint().exact(), Some(5));
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "hel");
        assert!(!body.is_end_stream());
        app.write_all(b"lo").await.expect("write");
        let last = body.frame().await.expect("a frame").expect("data");
        assert_eq!(last.into_data().expect("data"), "lo");
        assert!(body.is_end_stream());
        assert!(
            back.lock().expect("lock").is_some(),
            "back without another poll"
        );
    }

    #[tokio::test]
    async fn a_closed_tunnel_is_not_usable_and_says_nothing_came() {
        let (ours, app) = tokio::io::duplex(1024);
        let (recv, send) = tokio::io::split(ours);
        let mut tunnel = Tunnel::new(recv, send);
        assert!(tunnel.is_usable());
        drop(app);
        assert!(!tunnel.is_usable());
        match read_head(&mut tunnel.recv, &mut tunnel.buf, &Method::GET).await {
            Err(HeadError::Nothing(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
