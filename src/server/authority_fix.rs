//! A connection adapter that makes Go clients' `http://` endpoints acceptable to h2.
//!
//! etcd 3.4's clientv3 (etcdctl included) dials gRPC with the endpoint as the target, so a
//! client started with `--endpoints=http://127.0.0.1:2379` sends
//! `:authority: http://127.0.0.1:2379` on every HTTP/2 request. Go's HTTP/2 server accepts
//! it; h2 (under hyper and tonic) checks `:authority` against RFC 3986 and resets the stream
//! with `PROTOCOL_ERROR`, and has no setting to relax that (hyperium/h2#525).
//!
//! So the client-to-server half of every HTTP/2 connection on the client port passes through
//! [`AuthorityFix`] before h2 sees it. Frames pass unchanged except header blocks (HEADERS
//! plus CONTINUATION): each is HPACK-decoded with the client's dynamic table, its
//! `:authority` reduced to the authority part (`http://127.0.0.1:2379/` becomes
//! `127.0.0.1:2379`), and re-encoded as literals without indexing, so the server's HPACK
//! decoder never needs a dynamic table entry. A connection whose first request has a plain
//! `:authority` (every client but Go's with `http://` endpoints) is left alone from then on:
//! its first block passes as it came and so does everything after it, with no decoding. The
//! preface `PRI * HTTP/2.0...` tells an HTTP/2 connection; any other connection (HTTP/1.1:
//! curl on `/health`) passes through untouched.
//!
//! Worked example: a HEADERS frame (type 1) of stream 1 with flags END_HEADERS|PRIORITY
//! carrying `:method POST`, `:scheme http`, `:path /etcdserverpb.KV/Range`,
//! `:authority http://127.0.0.1:2379` goes out as a HEADERS frame of stream 1, flags
//! END_HEADERS|PRIORITY (same 5 priority bytes, padding dropped), whose block is four
//! literal fields, the last `:authority 127.0.0.1:2379`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes in an HTTP/2 frame header.
const FRAME_HEADER_BYTES: usize = 9;
/// Largest frame this adapter emits: HTTP/2's initial SETTINGS_MAX_FRAME_SIZE, which every
/// server accepts whatever it announced.
const MAX_OUT_FRAME_BYTES: usize = 16_384;
/// Largest header block (all fragments of one HEADERS) buffered before giving up: beyond it
/// the connection fails, as h2 would refuse such a header list anyway.
const MAX_HEADER_BLOCK_BYTES: usize = 1 << 20;
/// Largest frame accepted (HTTP/2's ceiling: 2^24 - 1).
const MAX_IN_FRAME_BYTES: usize = (1 << 24) - 1;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Where the adapter is in the connection's byte stream.
enum Mode {
    /// Not yet enough bytes to tell HTTP/2 from anything else.
    Sniffing,
    /// Not HTTP/2 with prior knowledge: bytes pass untouched.
    PassThrough,
    /// HTTP/2: frames are parsed and header blocks rewritten.
    Frames,
}

/// A header block being gathered across HEADERS and CONTINUATION frames.
struct PendingHeaders {
    stream_id: u32,
    /// HEADERS flags without PADDED (END_STREAM, PRIORITY); END_HEADERS is set on output.
    flags: u8,
    /// The 5 priority bytes, when the PRIORITY flag was set.
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames as they came, for a connection that needs no rewriting.
    raw: Vec<u8>,
}

/// `io` with the client's `:authority` made acceptable to h2 (see the module doc).
pub struct AuthorityFix<IO> {
    io: IO,
    mode: Mode,
    /// Bytes read from the client, not yet transformed.
    input: BytesMut,
    /// Transformed bytes, not yet handed to the server.
    output: BytesMut,
    /// The client's HPACK encoder state, mirrored.
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<PendingHeaders>,
    /// Decided by the connection's first header block: whether its `:authority` needs
    /// fixing. A client keeps one authority per connection, so a connection whose first
    /// request is fine passes through untouched from then on, at no cost.
    rewrite: Option<bool>,
    /// The client closed its side.
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps an accepted connection.
    pub fn new(io: IO) -> Self {
        AuthorityFix {
            io,
            mode: Mode::Sniffing,
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder: loona_hpack::Decoder::new(),
            pending: None,
            rewrite: None,
            eof: false,
        }
    }

    /// Moves what can be transformed from `input` to `output`.
    fn transform(&mut self) -> io::Result<()> {
        if let Mode::Sniffing = self.mode {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                self.mode = Mode::PassThrough;
            } else if n == PREFACE.len() {
                let preface = self.input.split_to(n);
                self.output.unsplit(preface);
                self.mode = Mode::Frames;
            } else if self.eof {
                self.mode = Mode::PassThrough;
            }
        }
        match self.mode {
            Mode::Sniffing => Ok(()),
            Mode::PassThrough => {
                let all = self.input.split();
                self.output.unsplit(all);
                Ok(())
            }
            Mode::Frames => {
                while let Mode::Frames = self.mode {
                    let Some(frame) = self.next_frame()? else {
                        break;
                    };
                    self.frame(frame)?;
                }
                if let Mode::PassThrough = self.mode {
                    let all = self.input.split();
                    self.output.unsplit(all);
                }
                Ok(())
            }
        }
    }

    /// Splits one whole frame off `input`, if there is one.
    fn next_frame(&mut self) -> io::Result<Option<BytesMut>> {
        if self.input.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let len = (usize::from(self.input[0]) << 16)
            | (usize::from(self.input[1]) << 8)
            | usize::from(self.input[2]);
        if len > MAX_IN_FRAME_BYTES {
            return Err(invalid("frame too large"));
        }
        if self.input.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        Ok(Some(self.input.split_to(FRAME_HEADER_BYTES + len)))
    }

    /// Handles one frame: header block fragments are gathered, the rest passes on.
    fn frame(&mut self, mut frame: BytesMut) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        match kind {
            TYPE_HEADERS => {
                let raw = frame.to_vec();
                frame.advance(FRAME_HEADER_BYTES);
                let mut payload = frame;
                let pad = if flags & FLAG_PADDED != 0 {
                    if payload.is_empty() {
                        return Err(invalid("HEADERS without its pad length"));
                    }
                    let pad = usize::from(payload[0]);
                    payload.advance(1);
                    pad
                } else {
                    0
                };
                let priority = if flags & FLAG_PRIORITY != 0 {
                    if payload.len() < 5 {
                        return Err(invalid("HEADERS without its priority"));
                    }
                    let mut p = [0u8; 5];
                    p.copy_from_slice(&payload[..5]);
                    payload.advance(5);
                    Some(p)
                } else {
                    None
                };
                if pad > payload.len() {
                    return Err(invalid("HEADERS padding longer than the frame"));
                }
                payload.truncate(payload.len() - pad);
                self.pending = Some(PendingHeaders {
                    stream_id,
                    flags: flags & !(FLAG_PADDED | FLAG_END_HEADERS),
                    priority,
                    block: payload.to_vec(),
                    raw,
                });
                if flags & FLAG_END_HEADERS != 0 {
                    self.finish_headers()?;
                }
                Ok(())
            }
            TYPE_CONTINUATION if self.pending.is_some() => {
                let Some(p) = self.pending.as_mut() else {
                    return Ok(());
                };
                p.block.extend_from_slice(&frame[FRAME_HEADER_BYTES..]);
                p.raw.extend_from_slice(&frame);
                if p.block.len() > MAX_HEADER_BLOCK_BYTES {
                    return Err(invalid("header block too large"));
                }
                if flags & FLAG_END_HEADERS != 0 {
                    self.finish_headers()?;
                }
                Ok(())
            }
            _ => {
                // Frames split one after the other from `input` are adjacent in memory, so
                // this joins them without copying.
                self.output.unsplit(frame);
                Ok(())
            }
        }
    }

    /// Decodes the gathered block, fixes `:authority`, and emits it as HEADERS (plus
    /// CONTINUATION frames when it does not fit in one).
    fn finish_headers(&mut self) -> io::Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let fields = self
            .decoder
            .decode(&p.block)
            .map_err(|e| invalid(&format!("HPACK: {e:?}")))?;
        let rewrite = *self.rewrite.get_or_insert_with(|| {
            fields
                .iter()
                .any(|(n, v)| n.as_slice() == b":authority" && strip_scheme(v) != v.as_slice())
        });
        if !rewrite {
            // The server's HPACK decoder has seen every block as the client wrote it, so
            // the rest of the connection can pass as it is.
            self.output.extend_from_slice(&p.raw);
            self.mode = Mode::PassThrough;
            return Ok(());
        }
        let mut block = Vec::with_capacity(p.block.len() + 64);
        for (name, value) in &fields {
            let value = if name.as_slice() == b":authority" {
                strip_scheme(value)
            } else {
                value.as_slice()
            };
            encode_literal(&mut block, name, value);
        }
        let mut first = Vec::with_capacity(5);
        let mut flags = p.flags;
        if let Some(prio) = p.priority {
            first.extend_from_slice(&prio);
            flags |= FLAG_PRIORITY;
        }
        let room = MAX_OUT_FRAME_BYTES - first.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first.extend_from_slice(head);
        let end = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        self.put_frame(TYPE_HEADERS, flags | end, p.stream_id, &first);
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(rest.len().min(MAX_OUT_FRAME_BYTES));
            let end = if more.is_empty() { FLAG_END_HEADERS } else { 0 };
            self.put_frame(TYPE_CONTINUATION, end, p.stream_id, chunk);
            rest = more;
        }
        Ok(())
    }

    fn put_frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len();
        self.output
            .put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        self.output.put_u32(stream_id);
        self.output.put_slice(payload);
    }
}

/// `http://host:port/` -> `host:port`; anything without a scheme is left as it is.
fn strip_scheme(value: &[u8]) -> &[u8] {
    let Some(pos) = value.windows(3).position(|w| w == b"://") else {
        return value;
    };
    let rest = &value[pos + 3..];
    match rest.iter().position(|b| *b == b'/') {
        Some(end) => &rest[..end],
        None => rest,
    }
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), no Huffman.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

/// An HPACK string literal: H bit clear, length as a 7-bit prefix integer, then the bytes.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut len = s.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len % 0x80) as u8 | 0x80);
            len /= 0x80;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from client: {what}"),
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Once the connection is known not to be HTTP/2, read straight into the caller's
            // buffer.
            if let (Mode::PassThrough, true) = (&this.mode, this.input.is_empty()) {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            // Read straight into `input`'s tail.
            let start = this.input.len();
            this.input.resize(start + READ_CHUNK_BYTES, 0);
            let mut rb = ReadBuf::new(&mut this.input[start..]);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let read = rb.filled().len();
            this.input.truncate(start + read);
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if read == 0 {
                        this.eof = true;
                    }
                    this.transform()?;
                    if this.eof && this.output.is_empty() && !this.input.is_empty() {
                        // A truncated frame at the end: hand it on as it is; the server
                        // reports the broken connection.
                        let rest = this.input.split();
                        this.output.unsplit(rest);
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_scheme_and_path() {
        assert_eq!(strip_scheme(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(strip_scheme(b"https://a:1/x"), b"a:1");
        assert_eq!(strip_scheme(b"127.0.0.1:2379"), b"127.0.0.1:2379");
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Two requests as a Go client sends them (the second one's `x-a` from the dynamic
    /// table; padding, priority, a CONTINUATION) come out with a plain `:authority`, every
    /// field intact, and the DATA frame between them unchanged.
    #[tokio::test]
    async fn header_blocks_are_rewritten_other_frames_pass() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut enc = loona_hpack::Encoder::new();
        let req: [(&[u8], &[u8]); 3] = [
            (b":method", b"POST"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b"x-a", b"1"),
        ];
        let b1 = enc.encode(req);
        let b2 = enc.encode(req);
        let mut wire = PREFACE.to_vec();
        let mut p1 = vec![2u8, 0, 0, 0, 0, 16];
        p1.extend_from_slice(&b1);
        p1.extend_from_slice(&[0, 0]);
        wire.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
            1,
            &p1,
        ));
        wire.extend(frame(0, 1, 1, b"hello"));
        let (h, c) = b2.split_at(b2.len() / 2);
        wire.extend(frame(TYPE_HEADERS, 0, 3, h));
        wire.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, c));

        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&wire).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut out = Vec::new();
        AuthorityFix::new(server)
            .read_to_end(&mut out)
            .await
            .expect("read");

        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let mut rest = &out[PREFACE.len()..];
        let mut dec = loona_hpack::Decoder::new();
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
            match kind {
                TYPE_HEADERS => {
                    assert_ne!(flags & FLAG_END_HEADERS, 0);
                    let block = if flags & FLAG_PRIORITY != 0 {
                        &payload[5..]
                    } else {
                        payload
                    };
                    let fields = dec.decode(block).expect("decodes");
                    let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
                        (b":method".to_vec(), b"POST".to_vec()),
                        (b":authority".to_vec(), b"127.0.0.1:2379".to_vec()),
                        (b"x-a".to_vec(), b"1".to_vec()),
                    ];
                    assert_eq!(fields, expected);
                    seen.push("headers");
                }
                0 => {
                    assert_eq!(payload, b"hello");
                    seen.push("data");
                }
                other => panic!("unexpected frame type {other}"),
            }
            rest = &rest[FRAME_HEADER_BYTES + len..];
        }
        assert_eq!(seen, ["headers", "data", "headers"]);
    }

    /// A client that writes a plain `:authority` gets its bytes through unchanged.
    #[tokio::test]
    async fn plain_authority_passes_untouched() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut enc = loona_hpack::Encoder::new();
        let req: [(&[u8], &[u8]); 2] = [(b":method", b"POST"), (b":authority", b"127.0.0.1:2379")];
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &enc.encode(req)));
        wire.extend(frame(0, 1, 1, b"hello"));
        wire.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &enc.encode(req)));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&wire).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut out = Vec::new();
        AuthorityFix::new(server)
            .read_to_end(&mut out)
            .await
            .expect("read");
        assert_eq!(out, wire);
    }

    #[tokio::test]
    async fn http1_passes_untouched() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(req).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut out = Vec::new();
        AuthorityFix::new(server)
            .read_to_end(&mut out)
            .await
            .expect("read");
        assert_eq!(out, req);
    }

    #[test]
    fn literal_round_trips_through_a_decoder() {
        let long = vec![b'v'; 300];
        let mut block = Vec::new();
        encode_literal(&mut block, b":authority", b"a:1");
        encode_literal(&mut block, b"x-long", &long);
        let mut d = loona_hpack::Decoder::new();
        let fields = d.decode(&block).expect("decodes");
        assert_eq!(
            fields,
            vec![
                (b":authority".to_vec(), b"a:1".to_vec()),
                (b"x-long".to_vec(), long)
            ]
        );
    }
}
