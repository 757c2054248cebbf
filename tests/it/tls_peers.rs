//! TLS between members, against real etcd 3.4 and minietcd started with the same certificates
//! (see `tls`): three members with peer TLS (certificate files, or `--peer-auto-tls`) serve
//! writes on every member, and the peer port refuses a peer certificate of another CA, none,
//! and plaintext.

use std::time::Duration;

use crate::etcd_cluster::{Cluster, ClusterConfig, ClusterTls, ServerKind};
use crate::tls::{ctl_ok, Certs, TEST_TIMEOUT};

/// Three members with TLS between peers (and to clients): each serves a write and reads
/// every write back; the minietcd client library dials them with the harness's certificate.
#[tokio::test]
async fn three_members_with_peer_tls_serve_writes_on_every_member() {
    let certs = Certs::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
            let cluster =
                Cluster::start(ClusterConfig::new(kind, 3).tls(certs.cluster_tls(true, true)));
            cluster.wait_ready().await;
            for i in 0..3 {
                let client = cluster.client_for(i).await.expect("client");
                client
                    .kv()
                    .put(
                        format!("peer-tls/{i}"),
                        "v",
                        minietcd_client::PutOptions::new(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?} member {i}: {e}"));
            }
            for i in 0..3 {
                let client = cluster.client_for(i).await.expect("client");
                let got = client
                    .kv()
                    .get("peer-tls/", minietcd_client::GetOptions::new().prefix())
                    .await
                    .unwrap();
                assert_eq!(got.kvs.len(), 3, "{kind:?} member {i}");
            }
            // The member list advertises the https:// URLs.
            let url = cluster.members[0].client_url();
            let tls = cluster.tls.as_ref().unwrap().etcdctl_flags();
            let list = ctl_ok(&url, &tls, &["member", "list"]);
            assert_eq!(
                list.matches("https://127.0.0.1:").count(),
                6,
                "{kind:?}: {list}"
            );
        }
    })
    .await
    .expect("test timed out");
}

/// Three members with `--peer-auto-tls` (and `--auto-tls`): peers talk TLS with certificates
/// made at start, which they do not verify (as etcd's members do not); writes on every member.
#[tokio::test]
async fn three_members_with_peer_auto_tls_serve_writes() {
    let certs = Certs::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let tls = ClusterTls {
            auto: true,
            ..certs.cluster_tls(true, true)
        };
        let cluster = Cluster::start(ClusterConfig::new(ServerKind::Minietcd, 3).tls(tls));
        cluster.wait_ready().await;
        for i in 0..3 {
            let client = cluster.client_for(i).await.expect("client");
            client
                .kv()
                .put(format!("auto/{i}"), "v", minietcd_client::PutOptions::new())
                .await
                .unwrap_or_else(|e| panic!("member {i}: {e}"));
        }
        let client = cluster.client_for(2).await.expect("client");
        let got = client
            .kv()
            .get("auto/", minietcd_client::GetOptions::new().prefix())
            .await
            .unwrap();
        assert_eq!(got.kvs.len(), 3);
        assert!(cluster.members[0]
            .advertised_peer_url()
            .starts_with("https://"));
    })
    .await
    .expect("test timed out");
}

/// The first bytes a peer port answers with over TLS on `port`, presenting `opts`'s client
/// certificate: a server that refuses the certificate fails it (with TLS 1.3 the refusal
/// arrives after the client's side of the handshake). minietcd's peer port speaks gRPC
/// (HTTP/2: its SETTINGS frame); etcd 3.4's peer traffic is HTTP/1.1 (`GET /version`).
async fn peer_over_tls(
    kind: ServerKind,
    port: u16,
    opts: &minietcd_client::tls::TlsOptions,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = opts.client_config().map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request: &[u8] = match kind {
        ServerKind::Minietcd => H2_PREFACE_AND_SETTINGS,
        ServerKind::Etcd => b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    };
    tls.write_all(request).await.map_err(|e| e.to_string())?;
    let mut first = [0u8; 9];
    tls.read_exact(&mut first)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// HTTP/2's connection preface and an empty SETTINGS frame.
const H2_PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// `--peer-client-cert-auth`: the peer port takes members with a certificate of the peer CA
/// and refuses one of another CA, and plaintext; the same on both servers.
#[tokio::test]
async fn peer_port_refuses_untrusted_and_plaintext_peers() {
    let certs = Certs::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
            let cluster =
                Cluster::start(ClusterConfig::new(kind, 1).tls(certs.cluster_tls(false, true)));
            cluster.wait_ready().await;
            let port = cluster.members[0].peer_port.port;
            let trusted = minietcd_client::tls::TlsOptions {
                ca_file: Some(certs.ca.clone()),
                cert_file: Some(certs.server.cert.clone()),
                key_file: Some(certs.server.key.clone()),
                insecure_skip_verify: false,
            };
            peer_over_tls(kind, port, &trusted)
                .await
                .unwrap_or_else(|e| panic!("{kind:?}: a trusted peer was refused: {e}"));
            let untrusted = minietcd_client::tls::TlsOptions {
                cert_file: Some(certs.untrusted.cert.clone()),
                key_file: Some(certs.untrusted.key.clone()),
                ..trusted.clone()
            };
            assert!(
                peer_over_tls(kind, port, &untrusted).await.is_err(),
                "{kind:?}: a peer with another CA's certificate was served"
            );
            let anonymous = minietcd_client::tls::TlsOptions {
                cert_file: None,
                key_file: None,
                ..trusted.clone()
            };
            assert!(
                peer_over_tls(kind, port, &anonymous).await.is_err(),
                "{kind:?}: a peer without a certificate was served"
            );
            // Plaintext HTTP/2 gets no HTTP/2 answer.
            let plain = tokio::time::timeout(Duration::from_secs(5), async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                tcp.write_all(H2_PREFACE_AND_SETTINGS).await?;
                let mut frame_header = [0u8; 9];
                tcp.read_exact(&mut frame_header).await?;
                Ok::<_, std::io::Error>(frame_header)
            })
            .await;
            assert!(
                !matches!(plain, Ok(Ok(h)) if h[3] == 4),
                "{kind:?}: plaintext HTTP/2 got a SETTINGS frame on the peer port"
            );
        }
    })
    .await
    .expect("test timed out");
}
