//! Raw HTTP on a TCP stream, for the tests of the server's HTTP side.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// An upgrade request for `?identifier=raw`, with the key of RFC 6455's example
/// (its accept key is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`).
pub const RAW_UPGRADE: &str = "GET /?identifier=raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The value of header `name` in a raw answer (names compared without case).
pub fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Reads one answer whose body is `Content-Length` long (none: empty): its head and
/// its body, leaving the stream at the next answer (keep-alive) or the WebSocket.
pub async fn read_answer(tcp: &mut TcpStream) -> (String, String) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.expect("an answer"));
    }
    let head = String::from_utf8(head).expect("a UTF-8 head");
    let length: usize = header(&head, "content-length").map_or(0, |v| v.parse().expect("a length"));
    let mut body = vec![0; length];
    tcp.read_exact(&mut body).await.expect("the body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// A server whose handshake limit is `limit`, and a keep-alive connection to it whose
/// first request (`GET /healthz`) was answered: what is tested next is what the
/// connection does after it.
pub async fn kept_alive(
    limit: std::time::Duration,
) -> (
    state_sync_server::StateSyncer,
    state_sync_server::Server,
    TcpStream,
) {
    use tokio::io::AsyncWriteExt;
    let syncer = state_sync_server::StateSyncer::builder()
        .handshake_timeout(limit)
        .build();
    let (server, _) = crate::serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let (head, _) = read_answer(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (syncer, server, tcp)
}
