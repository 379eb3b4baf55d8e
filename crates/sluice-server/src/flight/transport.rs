//! The Flight SQL listener: gRPC over plain TCP, or over TLS with the same certificate as
//! the Postgres port. TLS is done here with tokio-rustls (the project's one TLS stack)
//! rather than tonic's own TLS features, which would bring a second one.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::FlightServiceServer;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tonic::transport::Server;

use super::FlightSql;

/// Flight messages can be large (a batch of wide rows, a parameter set): allow 64 MiB.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub async fn serve(listener: TcpListener, service: FlightSql, tls: Option<Arc<ServerConfig>>) {
    let service = FlightServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let router = Server::builder().add_service(service);
    let outcome = match tls {
        None => router.serve_with_incoming(plain(listener)).await,
        Some(config) => {
            // gRPC over TLS is HTTP/2 chosen by ALPN.
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            router
                .serve_with_incoming(secured(listener, TlsAcceptor::from(Arc::new(config))))
                .await
        }
    };
    if let Err(e) = outcome {
        crate::log(&format!("Flight SQL listener stopped: {e}"));
    }
}

fn plain(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(socket, _)| {
            let _ = socket.set_nodelay(true);
            socket
        });
        Some((accepted, listener))
    })
}

/// Connections whose TLS handshake succeeded; handshakes run beside the accept loop, so a
/// slow or silent client does not hold up the others.
fn secured(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = std::io::Result<Secured>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Secured>(64);
    tokio::spawn(async move {
        loop {
            let Ok((socket, peer)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(socket),
                );
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Secured(stream)).await;
                    }
                    Ok(Err(e)) => crate::log(&format!("flight: TLS with {peer} failed: {e}")),
                    Err(_) => crate::log(&format!("flight: TLS with {peer} timed out")),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|stream| (Ok(stream), rx))
    })
}

/// A TLS connection as tonic takes it.
pub struct Secured(TlsStream<TcpStream>);

impl Connected for Secured {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Secured {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Secured {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
