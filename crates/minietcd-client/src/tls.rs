//! TLS to `https://` endpoints, with etcdctl's options: a CA bundle to trust (`--cacert`,
//! else the system's roots), a client certificate and key to present (`--cert`, `--key`),
//! and `--insecure-skip-tls-verify`.
//!
//! tonic, built with TLS, insists on doing the handshake itself for an `https://` URI, with
//! no way to skip verification (which etcdctl and etcd's `--peer-auto-tls` need). So a
//! channel to an `https://` endpoint is dialled at the same address with `http://`, through
//! [`TlsConnector`] (TCP, then the rustls handshake), and its requests still say `https` (the
//! endpoint's origin). The server's own code uses the same dialler for peers.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// ALPN protocol of gRPC (HTTP/2).
const ALPN_H2: &[u8] = b"h2";

/// A certificate, key or CA file that cannot be used: one line for the operator.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        /// Which file ("certificate", "key", "CA").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file holds no usable PEM of the expected kind.
    #[error("{what} {path}: {reason}")]
    Parse {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match its certificate, ...).
    #[error("{0}")]
    Config(String),
}

/// The crypto provider of every TLS config in minietcd: ring (tonic's `tls-ring`).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a chain, or a CA bundle).
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Parse {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Parse {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read {
        what: "key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Parse {
        what: "key",
        path: path.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key found".into(),
            e => e.to_string(),
        },
    })
}

/// A root store holding every certificate of the PEM file `path`.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("CA", path)? {
        roots.add(cert).map_err(|e| TlsError::Parse {
            what: "CA",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// etcdctl's TLS flags.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--cacert`: the CAs that sign the servers' certificates; the system's roots if unset.
    pub ca_file: Option<PathBuf>,
    /// `--cert`: the client certificate presented to servers that ask for one.
    pub cert_file: Option<PathBuf>,
    /// `--key`: the key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// `--insecure-skip-tls-verify`: accept any server certificate.
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// The rustls client configuration these options describe.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.client_config_presenting(None)
    }

    /// Like [`TlsOptions::client_config`], presenting `identity` (a chain and its key held
    /// in memory) instead of the certificate files.
    pub fn client_config_presenting(
        &self,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(crypto_provider())))
        } else {
            let roots = match &self.ca_file {
                Some(ca) => read_roots(ca)?,
                None => system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let identity = match (&self.cert_file, &self.key_file) {
            _ if identity.is_some() => identity,
            (Some(cert), Some(key)) => Some((read_certs("certificate", cert)?, read_key(key)?)),
            (None, None) => None,
            _ => {
                return Err(TlsError::Config(
                    "a client certificate needs both its certificate and its key file".into(),
                ))
            }
        };
        let mut config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                TlsError::Config(format!("client certificate and key: {}", mismatch(e)))
            })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// rustls' error for a certificate and key that do not belong together, in words.
pub fn mismatch(e: rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".into(),
        e => e.to_string(),
    }
}

/// The platform's trusted roots; unreadable ones are skipped (as Go's loader does).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "cannot load a system root certificate");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

/// `--insecure-skip-tls-verify` (and etcd's peers with self-signed certificates): any
/// server certificate is accepted; the handshake's signatures are still checked, so the
/// connection is encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Dials TCP, then TLS with a rustls client configuration: tonic's connector for
/// `https://` endpoints (see the module doc).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    /// A connector using `config`.
    pub fn new(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector { config }
    }

    /// A lazy channel to `endpoint` (built by [`tls_endpoint`]) through this connector.
    pub fn channel_lazy(&self, endpoint: &Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.clone())
    }

    /// A channel to `endpoint` (built by [`tls_endpoint`]), connected now.
    pub async fn channel(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.clone()).await
    }
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

/// The connection [`TlsConnector`] makes.
pub type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let bad =
                |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {why}"));
            let host = uri.host().ok_or_else(|| bad("no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
            let name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// An endpoint for `url` (`https://host:port`) to dial with a [`TlsConnector`]: it connects
/// to `http://host:port` and sends `https` as the scheme of its requests.
pub fn tls_endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    let plain = match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_string(),
    };
    let origin = Endpoint::from_shared(url.to_string())?.uri().clone();
    Ok(Endpoint::from_shared(plain)?.origin(origin))
}
