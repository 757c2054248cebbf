//! TLS on the client and peer ports, with etcd 3.4's flags and meaning.
//!
//! - [`TlsFlags`]: one side's flags (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//!   `--client-cert-auth`, `--auto-tls`, or their `--peer-` twins).
//! - [`ServerTls`]: what a listener with an `https://` URL hands connections to: the rustls
//!   server configuration those flags describe, loaded (and checked) once at start.
//! - [`incoming`]: accepted TCP connections, handshaken concurrently, as tonic's incoming
//!   stream; [`peer_common_name`]: the CN of a request's verified client certificate.
//! - [`auto`]: `--auto-tls`'s self-signed certificate.
//!
//! As in etcd, a trusted CA file alone already requires and verifies client certificates;
//! `--client-cert-auth` without one is refused (etcd would verify against the system roots,
//! which no client certificate of a private CA passes). Peers dial each other with the peer
//! certificate as client certificate and the peer CA as roots; with `--peer-auto-tls`
//! they skip verifying each other's self-signed certificates, as etcd does.

pub mod auto;
pub mod incoming;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use minietcd_client::tls::{crypto_provider, mismatch, read_certs, read_key, read_roots};
pub use minietcd_client::tls::{TlsConnector, TlsError, TlsOptions};

/// ALPN protocols a TLS listener offers: gRPC's HTTP/2, and HTTP/1.1 for `/health` etc.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One side's TLS flags (client or peer), as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// `--cert-file` / `--peer-cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--key-file` / `--peer-key-file`.
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--auto-tls` / `--peer-auto-tls`: a self-signed certificate when none is given.
    pub auto_tls: bool,
}

impl TlsFlags {
    /// etcd's `TLSInfo.Empty()`: neither certificate nor key given.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Whether a certificate will be there: given, or made by auto TLS.
    pub fn has_certificate(&self) -> bool {
        !self.is_empty() || self.auto_tls
    }

    /// Whether the certificate is auto TLS's (no files given).
    fn self_signed(&self) -> bool {
        self.is_empty() && self.auto_tls
    }
}

/// Why a side's TLS cannot be set up: one line naming the flag.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate, key or CA file is missing, unreadable, malformed or mismatched.
    #[error("--{prefix}{flag}: {source}")]
    File {
        prefix: &'static str,
        flag: &'static str,
        source: TlsError,
    },
    /// The flags do not make a configuration.
    #[error("{0}")]
    Flags(String),
    /// The self-signed certificate could not be made.
    #[error("--{prefix}auto-tls: cannot make a self-signed certificate: {reason}")]
    Auto {
        prefix: &'static str,
        reason: String,
    },
}

/// A side's server configuration, and the client configuration members use to dial it.
#[derive(Clone)]
pub struct ServerTls {
    /// What each listener's handshakes use.
    pub server: Arc<ServerConfig>,
    /// How this member dials the same side of other members (peers only).
    pub dialer: TlsConnector,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads one side's certificates. `peer` names the flags (`--peer-...`); `hosts` are the
    /// listen URLs' hosts, the names of an auto TLS certificate.
    pub fn load(
        flags: &TlsFlags,
        peer: bool,
        hosts: &[String],
    ) -> Result<ServerTls, TlsSetupError> {
        let prefix = if peer { "peer-" } else { "" };
        let file_err = |flag: &'static str| {
            move |source| TlsSetupError::File {
                prefix,
                flag,
                source,
            }
        };
        let (chain, key, cert_path, key_path) = match (&flags.cert_file, &flags.key_file) {
            (Some(cert), Some(key)) => (
                read_certs("certificate", cert).map_err(file_err("cert-file"))?,
                read_key(key).map_err(file_err("key-file"))?,
                Some(cert.clone()),
                Some(key.clone()),
            ),
            (None, None) if flags.auto_tls => {
                let made = auto::self_signed(hosts)
                    .map_err(|reason| TlsSetupError::Auto { prefix, reason })?;
                (vec![made.cert], made.key, None, None)
            }
            _ => {
                return Err(TlsSetupError::Flags(format!(
                    "--{prefix}cert-file and --{prefix}key-file must both be given"
                )))
            }
        };
        let server = server_config(flags, prefix, chain.clone(), key.clone_key())?;
        let dialer = TlsOptions {
            ca_file: flags.trusted_ca_file.clone(),
            cert_file: cert_path,
            key_file: key_path,
            insecure_skip_verify: flags.self_signed(),
        };
        // Auto TLS's certificate is in memory: presented as the client certificate too.
        let presented = flags
            .self_signed()
            .then(|| (chain.clone(), key.clone_key()));
        let client = dialer
            .client_config_presenting(presented)
            .map_err(|e| TlsSetupError::Flags(format!("--{prefix}trusted-ca-file: {e}")))?;
        Ok(ServerTls {
            server,
            dialer: TlsConnector::new(client),
        })
    }
}

/// The rustls server configuration of one side.
fn server_config(
    flags: &TlsFlags,
    prefix: &'static str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Flags(e.to_string()))?;
    let builder = match &flags.trusted_ca_file {
        Some(ca) => {
            let roots = read_roots(ca).map_err(|source| TlsSetupError::File {
                prefix,
                flag: "trusted-ca-file",
                source,
            })?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                    .build()
                    .map_err(|e| {
                        TlsSetupError::Flags(format!("--{prefix}trusted-ca-file: {e}"))
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None if flags.client_cert_auth => {
            return Err(TlsSetupError::Flags(format!(
                "--{prefix}client-cert-auth needs --{prefix}trusted-ca-file (the CA that signs client certificates)"
            )))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsSetupError::Flags(format!(
            "--{prefix}cert-file and --{prefix}key-file: {}",
            mismatch(e)
        ))
    })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The subject common name of the verified client certificate a request came with, if its
/// connection is TLS with a client certificate. etcd takes the user name from it when
/// `--client-cert-auth` and auth are on; an auth layer reads it through this (tonic puts the
/// connection's certificates in every request's extensions).
pub fn peer_common_name<T>(req: &tonic::Request<T>) -> Option<String> {
    let certs = req.peer_certs()?;
    common_name(certs.first()?)
}

/// The subject common name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

/// A member's TLS, both sides, loaded once at start from its configuration.
#[derive(Debug, Clone, Default)]
pub struct MemberTls {
    /// For the `https://` client listeners; `None` when there is none.
    pub client: Option<ServerTls>,
    /// For the `https://` peer listeners and for dialling `https://` peers; `None` without
    /// peer certificates.
    pub peer: Option<ServerTls>,
}

impl MemberTls {
    /// Reads the certificates the flags name (or makes auto TLS's): a missing, unreadable or
    /// mismatched file is an error here, before anything is created.
    pub fn load(cfg: &crate::config::Config) -> Result<MemberTls, TlsSetupError> {
        let hosts = |addrs: &[std::net::SocketAddr]| -> Vec<String> {
            addrs.iter().map(|a| a.to_string()).collect()
        };
        let client = if cfg.listen_client_secure.iter().any(|s| *s) {
            Some(ServerTls::load(
                &cfg.client_tls,
                false,
                &hosts(&cfg.listen_client_addrs),
            )?)
        } else {
            None
        };
        let peer = if cfg.peer_tls.has_certificate() {
            Some(ServerTls::load(
                &cfg.peer_tls,
                true,
                &hosts(&cfg.listen_peer_addrs),
            )?)
        } else {
            None
        };
        for (side, flags, tls) in [
            ("client", &cfg.client_tls, &client),
            ("peer", &cfg.peer_tls, &peer),
        ] {
            if tls.is_some() {
                tracing::info!(
                    cert = ?flags.cert_file,
                    key = ?flags.key_file,
                    trusted_ca = ?flags.trusted_ca_file,
                    client_cert_auth = flags.client_cert_auth || flags.trusted_ca_file.is_some(),
                    self_signed = flags.self_signed(),
                    "starting with {side} TLS"
                );
            }
        }
        Ok(MemberTls { client, peer })
    }

    /// How this member dials `https://` peers.
    pub fn peer_dialer(&self) -> Option<TlsConnector> {
        self.peer.as_ref().map(|p| p.dialer.clone())
    }

    /// For each client listener (`--listen-client-urls` order): its TLS configuration if
    /// its URL is `https://`.
    pub fn client_listeners(&self, cfg: &crate::config::Config) -> Vec<Option<Arc<ServerConfig>>> {
        per_listener(&cfg.listen_client_secure, self.client.as_ref())
    }

    /// For each peer listener (`--listen-peer-urls` order): its TLS configuration if its URL
    /// is `https://`.
    pub fn peer_listeners(&self, cfg: &crate::config::Config) -> Vec<Option<Arc<ServerConfig>>> {
        per_listener(&cfg.listen_peer_secure, self.peer.as_ref())
    }
}

fn per_listener(secure: &[bool], tls: Option<&ServerTls>) -> Vec<Option<Arc<ServerConfig>>> {
    secure
        .iter()
        .map(|s| tls.filter(|_| *s).map(|t| t.server.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("alice"));
        let made = auto::self_signed(&["127.0.0.1:1".into()]).unwrap();
        assert_eq!(
            common_name(&made.cert),
            None,
            "auto TLS names no CN, as etcd's"
        );
    }

    #[test]
    fn auto_tls_loads_and_listeners_follow_their_urls() {
        let flags = TlsFlags {
            auto_tls: true,
            ..TlsFlags::default()
        };
        let tls = ServerTls::load(&flags, true, &["127.0.0.1:2380".into()]).unwrap();
        assert_eq!(tls.server.alpn_protocols[0], b"h2");
        let per = per_listener(&[true, false], Some(&tls));
        assert!(per[0].is_some() && per[1].is_none());
        let e = ServerTls::load(
            &TlsFlags {
                cert_file: Some("/c.pem".into()),
                ..TlsFlags::default()
            },
            true,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--peer-cert-file and --peer-key-file must both be given"
        );
    }
}
