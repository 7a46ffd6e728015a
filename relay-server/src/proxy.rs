//! The PROXY protocol (version 2) from trusted load balancers
//! (`--proxy-protocol-from`, decision 46).
//!
//! Behind a load balancer every connection comes from the balancer's
//! address, so what the relay keys by source address (the budget of new
//! identities and vaults, `--new-per-hour`) would count every client as
//! one. haproxy (`send-proxy-v2`), nginx, Envoy and the cloud balancers can
//! open each connection with a binary PROXY v2 header naming the client's
//! address. The relay reads it from the addresses it is told to trust, and
//! only from them:
//!
//! - a connection from a trusted address must begin with a valid v2
//!   header within [`HEADER_DEADLINE`], or it is closed before any HTTP is
//!   read (a misconfigured balancer fails loudly, and no one who can
//!   connect from that address can pass for another client without one);
//!   the header's source address is the client's. A `LOCAL` header (the
//!   balancer's own health check) keeps the balancer's address;
//! - a connection from any other address is served as before, keyed by
//!   its own address: its bytes are HTTP, and a PROXY header it sends is
//!   not read as one (the request is malformed and refused), so no client
//!   can claim another's address.
//!
//! Headers are parsed by the `ppp` crate; this module only reads exactly
//! the header's bytes off the socket (its length is in its first 16
//! bytes), so nothing of the HTTP stream behind it is consumed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// How long a trusted proxy has to send its header once connected.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);

/// Connections accepted but not yet handed to the server (their headers
/// are being read).
const QUEUE: usize = 256;

/// The 12 bytes every PROXY v2 header starts with.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Why a trusted proxy's connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection failed or closed before the header was complete.
    #[error("the connection closed before its PROXY protocol header was complete: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing came in time.
    #[error("no PROXY protocol header within {}s of connecting; configure the proxy to send one (haproxy: send-proxy-v2 on the server line) or remove its address from --proxy-protocol-from", HEADER_DEADLINE.as_secs())]
    Timeout,
    /// The bytes are not a PROXY v2 header.
    #[error("the connection does not begin with a PROXY protocol v2 header ({0}); configure the proxy to send version 2 (haproxy: send-proxy-v2, not send-proxy) or remove its address from --proxy-protocol-from")]
    Invalid(String),
}

/// Reads a PROXY v2 header off `stream`, consuming exactly its bytes.
/// `Some(client)` for a proxied TCP connection; `None` for a `LOCAL`
/// header or an address family without an IP (the proxy speaking for
/// itself).
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await?;
    if fixed[..12] != SIGNATURE {
        return Err(ProxyHeaderError::Invalid("wrong signature".into()));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await?;
    let mut whole = Vec::with_capacity(16 + len);
    whole.extend_from_slice(&fixed);
    whole.extend_from_slice(&rest);
    parse(&whole)
}

/// Parses a whole v2 header (see [`read_header`]).
pub fn parse(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(|e| ProxyHeaderError::Invalid(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

/// The relay's public listener: plain TCP, reading PROXY v2 headers from
/// the trusted addresses (see the module documentation). Headers are read
/// off the accept loop, each connection on its own task, so a slow proxy
/// connection delays no other.
pub struct RelayListener {
    connections: tokio::sync::mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for RelayListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl RelayListener {
    /// Serves `listener`, trusting PROXY v2 headers from `trusted` only
    /// (none: every connection is keyed by its own address, as without a
    /// proxy).
    pub fn new(listener: TcpListener, trusted: Vec<IpAddr>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let trusted: Vec<IpAddr> = trusted.into_iter().map(|ip| ip.to_canonical()).collect();
        let (tx, connections) = tokio::sync::mpsc::channel(QUEUE);
        let acceptor = tokio::spawn(async move {
            loop {
                let (mut stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                };
                if !trusted.contains(&peer.ip().to_canonical()) {
                    if tx.send((stream, peer)).await.is_err() {
                        return;
                    }
                    continue;
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    let header = tokio::time::timeout(HEADER_DEADLINE, read_header(&mut stream))
                        .await
                        .unwrap_or(Err(ProxyHeaderError::Timeout));
                    match header {
                        Ok(client) => {
                            let _ = tx.send((stream, client.unwrap_or(peer))).await;
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "closed a connection from a trusted proxy");
                        }
                    }
                });
            }
        });
        Ok(Self {
            connections,
            local,
            acceptor,
        })
    }
}

/// Accept errors: the peer's (it left before we took it) are skipped; the
/// others (out of file descriptors) are logged and waited out, as axum's
/// own listener does.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl axum::serve::Listener for RelayListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.connections.recv().await {
            Some(c) => c,
            // The acceptor never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap_or(0).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn headers_name_the_client_or_the_proxy_itself() {
        // PROXY, TCP over IPv4: 127.0.0.2:4000 -> 127.0.0.1:8788.
        let h = v2(
            1,
            0x11,
            &[127, 0, 0, 2, 127, 0, 0, 1, 0x0f, 0xa0, 0x22, 0x54],
        );
        assert_eq!(
            parse(&h).ok().flatten(),
            Some(SocketAddr::from(([127, 0, 0, 2], 4000)))
        );
        // LOCAL (a health check): no client.
        let h = v2(0, 0x00, &[]);
        assert_eq!(parse(&h).ok(), Some(None));
        // Truncated, or version 1 text: refused.
        let h = v2(1, 0x11, &[127, 0, 0, 2]);
        assert!(parse(&h).is_err());
        assert!(parse(b"PROXY TCP4 127.0.0.2 127.0.0.1 4000 8788\r\n").is_err());
    }
}
