//! A connection past `--max-connections` gets PostgreSQL's own answer, FATAL 53300 "sorry,
//! too many clients already", instead of a closed socket that clients report as a network
//! failure (and retry as one). As PostgreSQL does, the server reads the client's startup
//! packet first (after TLS, when the client asks for it and the server has it), so the
//! client is ready to read the error.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// Startup packets are small; anything larger is not a Postgres client.
const MAX_STARTUP_BYTES: usize = 10_000;
/// A refused client gets this long to say hello before the socket is dropped.
const DEADLINE: Duration = Duration::from_secs(5);

pub const MESSAGE: &str = "sorry, too many clients already";

/// Answer a refused client with FATAL 53300 and close; errors only end this connection.
pub async fn refuse(mut socket: TcpStream, tls: Option<TlsAcceptor>) {
    let _ = tokio::time::timeout(DEADLINE, async move {
        let Ok(code) = read_startup(&mut socket).await else {
            return;
        };
        match (code, tls) {
            (SSL_REQUEST, Some(tls)) => {
                if socket.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut stream) = tls.accept(socket).await else {
                    return;
                };
                if read_startup(&mut stream).await.is_ok() {
                    let _ = send_error(&mut stream).await;
                }
            }
            (SSL_REQUEST | GSSENC_REQUEST, None) => {
                if socket.write_all(b"N").await.is_ok() && read_startup(&mut socket).await.is_ok() {
                    let _ = send_error(&mut socket).await;
                }
            }
            (CANCEL_REQUEST, _) => {}
            _ => {
                let _ = send_error(&mut socket).await;
            }
        }
    })
    .await;
}

/// Reads one length-prefixed startup-phase packet and returns its request code.
async fn read_startup<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<i32> {
    let len = stream.read_i32().await?;
    let code = stream.read_i32().await?;
    let rest = (len as usize)
        .checked_sub(8)
        .filter(|n| *n <= MAX_STARTUP_BYTES)
        .ok_or_else(|| std::io::Error::other("not a startup packet"))?;
    let mut body = vec![0u8; rest];
    stream.read_exact(&mut body).await?;
    Ok(code)
}

async fn send_error<S: AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<()> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', MESSAGE),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    stream.write_all(&message).await?;
    stream.flush().await?;
    stream.shutdown().await
}
