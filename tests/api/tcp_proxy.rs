//! A TCP proxy a test puts in front of something (Tessera as a verifier's issuer, the shared
//! Redis) to take it away and bring it back: `cut` drops every connection through it and refuses
//! new ones; `restore` lets them through again, on the same port.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    port: u16,
    listener: Option<TcpListener>,
    upstream: String,
    running: Option<CancellationToken>,
}

impl Proxy {
    /// A proxy with an address, not yet forwarding.
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        Self { port, listener: Some(listener), upstream: String::new(), running: None }
    }

    /// `scheme://127.0.0.1:port`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Forwards to `upstream` (`host:port`).
    pub fn start(&mut self, upstream: &str) {
        self.upstream = upstream.to_owned();
        let listener = self.listener.take().unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.running = Some(stop.clone());
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut client, _)) = accepted else { continue };
                let (stop, upstream) = (stop.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
    }

    /// Cuts every connection and refuses new ones.
    pub async fn cut(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Forwards again, on the same address.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
    }
}
