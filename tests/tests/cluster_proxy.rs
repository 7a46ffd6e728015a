//! Per-source limits behind the load balancer: `scripts/cluster`'s haproxy
//! names each client to the relays in a PROXY protocol v2 header
//! (`send-proxy-v2`, from 127.0.0.9, the one address the relays trust:
//! `--proxy-protocol-from`), so clients on different addresses get
//! separate budgets of new identities (`--new-per-hour`) through one
//! load balancer. A connection from the trusted address without a header
//! is closed; a client connecting directly from elsewhere is served under
//! its own address, and a PROXY header it sends is not believed.
//!
//! Needs PostgreSQL, SeaweedFS and haproxy (`scripts/services install`)
//! and a relay-server built with the `postgres` and `s3` features.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use vault_client::{ClientError, RelayClient, RetryPolicy};
use vault_core::{IdentityInfo, Role, SecretIdentity};
use vault_tests::cluster::Cluster;

/// New identities and vaults per source address per hour, per instance.
const BUDGET: u32 = 2;

fn from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn fresh(seed: u64) -> Arc<SecretIdentity> {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    let info = IdentityInfo {
        display_name: format!("client {seed}"),
        role: Role::Patient,
        registration: None,
        created_at: vault_tests::now().saturating_sub(1000),
    };
    Arc::new(SecretIdentity::from_seed(&s, &info).unwrap())
}

/// Publishes a new identity from `http`'s address: `Ok(())` when created,
/// `Err(code)` when refused.
async fn publish(url: &str, http: &reqwest::Client, seed: u64) -> Result<(), String> {
    let c = RelayClient::with_http_client(url, fresh(seed), http.clone())
        .unwrap()
        .with_retry_policy(RetryPolicy::none());
    match c.publish_identity().await {
        Ok(created) => {
            assert!(created, "identity {seed} was already published");
            Ok(())
        }
        Err(ClientError::Relay { code, .. }) => Err(code),
        Err(e) => panic!("publishing identity {seed} failed: {e}"),
    }
}

/// Sends `bytes` on a fresh connection from `ip` to `to` and returns
/// what came back before the connection closed.
async fn raw(to: &str, ip: [u8; 4], bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let to: SocketAddr = to.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((Ipv4Addr::from(ip), 0)))
        .unwrap();
    let mut s = socket.connect(to).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A PROXY v2 header claiming a TCP connection from `client`.
fn proxy_header(client: [u8; 4]) -> Vec<u8> {
    let mut h = vec![
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12,
    ];
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1, 0x10, 0x00, 0x22, 0x54]);
    h
}

#[test]
fn clients_behind_haproxy_have_their_own_budgets() {
    let budget = BUDGET.to_string();
    let cluster = Cluster::start(&["--new-per-hour", &budget, "--new-per-hour-loopback", "true"]);
    let instances = cluster.instances.len();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = cluster.url.clone();
    rt.block_on(async {
        let (two, three) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
        // 127.0.0.2 through haproxy spends its budget on every instance
        // (round robin): refused as many times in a row as there are
        // instances, after at least one budget's worth.
        let (mut created, mut refused_in_a_row, mut seed) = (0u32, 0usize, 1000u64);
        while refused_in_a_row < instances {
            seed += 1;
            assert!(
                seed < 1100,
                "127.0.0.2 was never refused: no budget applies"
            );
            match publish(&url, &two, seed).await {
                Ok(()) => {
                    created += 1;
                    refused_in_a_row = 0;
                }
                Err(code) => {
                    assert_eq!(code, "creation_limited");
                    refused_in_a_row += 1;
                }
            }
        }
        assert!(
            (BUDGET..=BUDGET * instances as u32).contains(&created),
            "127.0.0.2 created {created} identities"
        );
        // 127.0.0.3, through the same haproxy, has budgets of its own on
        // every instance; behind a proxy without the header both would be
        // the proxy's one address, already spent.
        for i in 0..instances as u64 {
            publish(&url, &three, 2000 + i)
                .await
                .unwrap_or_else(|code| {
                    panic!("127.0.0.3 was refused ({code}): budgets are shared")
                });
        }
        // A client connecting to an instance directly (not from the
        // trusted address) is served under its own address.
        let four = from([127, 0, 0, 4]);
        publish(&cluster.instances[0], &four, 3000).await.unwrap();
        // The trusted address without a header: closed before any HTTP.
        let nine = from([127, 0, 0, 9]);
        let c = RelayClient::with_http_client(&cluster.instances[0], fresh(4000), nine)
            .unwrap()
            .with_retry_policy(RetryPolicy::none());
        match c.publish_identity().await {
            Err(ClientError::Relay { status, .. }) => {
                panic!("a headerless connection from the trusted address was answered {status}")
            }
            Err(_) => {}
            Ok(_) => panic!("a headerless connection from the trusted address was served"),
        }
        // A PROXY header from an untrusted address is not believed: it is
        // not HTTP, so the request is refused (400), and nothing is served.
        let mut forged = proxy_header([127, 0, 0, 5]);
        forged.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw(&cluster.instances[0], [127, 0, 0, 1], &forged).await;
        assert!(
            !answer.starts_with("HTTP/1.1 200"),
            "a forged PROXY header was accepted: {answer}"
        );
        // The same header from the trusted address is read, and the request
        // behind it served.
        let answer = raw(&cluster.instances[0], [127, 0, 0, 9], &forged).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "a PROXY header from the trusted address was not read: {answer:?}"
        );
    });
    drop(cluster);
}
