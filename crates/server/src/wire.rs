//! What goes on a connection's wire: frames encoded once for every connection they
//! are queued for, and the two halves of an upgraded connection.
//!
//! Server-to-client frames are not masked (RFC 6455 section 5.1), so a message's
//! complete frame, header and payload, is the same bytes for every receiver: it is
//! built once ([`Frame::text`]) and written as is to each socket (see
//! [`crate::outbox`]). tungstenite only reads; the few frames it writes itself (pongs,
//! the close frame) go through the same queue ([`Duplex`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::outbox::Outbox;

/// Longest WebSocket frame written: a longer message (a big state's snapshot) goes
/// out as fragments (RFC 6455 section 5.4; every client reassembles them), so that
/// the messages of other kinds (a pong) need not wait behind a megabyte at the
/// client's end, and so that a client's frame buffer need not grow to the size of
/// the biggest state.
pub(crate) const MAX_FRAGMENT: usize = 16 * 1024;

/// A text message as it goes on the wire: one frame, or fragments of at most
/// [`MAX_FRAGMENT`] bytes of payload (cut anywhere: only the whole message must be
/// UTF-8). Cloning it clones a reference count, not the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame(Bytes);

impl Frame {
    /// The frame (or fragments) of a text message.
    pub(crate) fn text(text: &str) -> Frame {
        let payload = text.as_bytes();
        let fragments = payload.len().div_ceil(MAX_FRAGMENT).max(1);
        let mut wire = BytesMut::with_capacity(payload.len() + fragments * 4 + 6);
        let mut chunks = payload.chunks(MAX_FRAGMENT).peekable();
        if payload.is_empty() {
            header(&mut wire, true, true, 0);
        }
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            header(&mut wire, first, chunks.peek().is_none(), chunk.len());
            wire.put_slice(chunk);
            first = false;
        }
        Frame(wire.freeze())
    }

    /// Bytes that are already frames (tungstenite's own, see [`Duplex`]).
    pub(crate) fn raw(bytes: &[u8]) -> Frame {
        Frame(Bytes::copy_from_slice(bytes))
    }

    /// Its length on the wire.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Its bytes on the wire.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text it carries (reassembled from its fragments).
    #[cfg(test)]
    pub(crate) fn text_of(&self) -> String {
        let mut text = Vec::new();
        let mut rest = &self.0[..];
        while let [_, len, tail @ ..] = rest {
            let (len, tail) = match len {
                126 => (
                    usize::from(u16::from_be_bytes([tail[0], tail[1]])),
                    &tail[2..],
                ),
                127 => (
                    usize::try_from(u64::from_be_bytes(tail[..8].try_into().unwrap())).unwrap(),
                    &tail[8..],
                ),
                len => (usize::from(*len), tail),
            };
            text.extend_from_slice(&tail[..len]);
            rest = &tail[len..];
        }
        String::from_utf8(text).unwrap()
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Frame {
        Frame::text(&text)
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Frame {
        Frame::text(text)
    }
}

/// Writes the header of an unmasked text frame (`first`) or continuation, final or
/// not, of `len` bytes of payload.
fn header(wire: &mut BytesMut, first: bool, last: bool, len: usize) {
    let opcode = if first { 0x1 } else { 0x0 };
    wire.put_u8(if last { 0x80 } else { 0 } | opcode);
    match len {
        0..=125 => wire.put_u8(len as u8),
        126..=0xFFFF => {
            wire.put_u8(126);
            wire.put_u16(len as u16);
        }
        _ => {
            wire.put_u8(127);
            wire.put_u64(len as u64);
        }
    }
}

/// The reading half of an upgraded connection.
pub(crate) enum ReadHalf {
    /// Plain TCP: reads and writes need no lock between them.
    Tcp(OwnedReadHalf),
    /// TLS, or a stream handed over by hyper (axum).
    #[cfg_attr(not(any(feature = "tls", feature = "axum")), allow(dead_code))]
    Other(Pin<Box<dyn AsyncRead + Send>>),
}

/// The writing half of an upgraded connection.
pub(crate) enum WriteHalf {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// TLS, or a stream handed over by hyper (axum).
    #[cfg_attr(not(any(feature = "tls", feature = "axum")), allow(dead_code))]
    Other(Pin<Box<dyn AsyncWrite + Send>>),
}

/// An upgraded connection: its two halves, and the bytes the client sent past its
/// upgrade request (read with it).
pub(crate) struct Halves {
    pub(crate) read: ReadHalf,
    pub(crate) write: WriteHalf,
    pub(crate) leftover: Vec<u8>,
}

/// Splits a plain TCP connection.
pub(crate) fn split_tcp(stream: tokio::net::TcpStream) -> (ReadHalf, WriteHalf) {
    let (read, write) = stream.into_split();
    (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
}

/// Splits any other stream (its halves share a lock).
#[cfg_attr(not(any(feature = "tls", feature = "axum")), allow(dead_code))]
pub(crate) fn split_other<S>(stream: S) -> (ReadHalf, WriteHalf)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    (
        ReadHalf::Other(Box::pin(read)),
        WriteHalf::Other(Box::pin(write)),
    )
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            ReadHalf::Other(read) => read.as_mut().poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_write(cx, buf),
            WriteHalf::Other(write) => write.as_mut().poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            WriteHalf::Other(write) => write.as_mut().poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(write) => write.is_write_vectored(),
            WriteHalf::Other(write) => write.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_flush(cx),
            WriteHalf::Other(write) => write.as_mut().poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_shutdown(cx),
            WriteHalf::Other(write) => write.as_mut().poll_shutdown(cx),
        }
    }
}

/// The stream tungstenite runs on: it reads the connection's reading half, and what
/// it writes (pongs, the close frame and its echo, always whole frames) is queued in
/// the connection's [`Outbox`] behind what is already there.
pub(crate) struct Duplex {
    pub(crate) read: ReadHalf,
    pub(crate) outbox: Outbox,
}

impl AsyncRead for Duplex {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Duplex {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outbox.push_control(Frame::raw(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc_6455() {
        assert_eq!(Frame::text("").bytes(), [0x81, 0]);
        assert_eq!(&Frame::text("hi").bytes()[..2], [0x81, 2]);
        let medium = Frame::text(&"x".repeat(300));
        assert_eq!(&medium.bytes()[..4], [0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let big = Frame::text(&"y".repeat(MAX_FRAGMENT * 2 + 1));
        let bytes = big.bytes();
        // Text, not final, 16 KiB.
        assert_eq!(&bytes[..4], [0x01, 126, 0x40, 0]);
        let second = 4 + MAX_FRAGMENT;
        // Continuation, not final.
        assert_eq!(&bytes[second..second + 4], [0x00, 126, 0x40, 0]);
        let third = second + 4 + MAX_FRAGMENT;
        // Continuation, final, 1 byte.
        assert_eq!(&bytes[third..], [0x80, 1, b'y']);
        assert_eq!(big.text_of(), "y".repeat(MAX_FRAGMENT * 2 + 1));
    }

    #[test]
    fn payloads_over_64_kib_in_one_frame_use_the_long_length() {
        let mut wire = BytesMut::new();
        header(&mut wire, true, true, 70_000);
        assert_eq!(&wire[..], [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
