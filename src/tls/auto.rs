//! `--auto-tls` / `--peer-auto-tls`: a self-signed certificate made at start, as etcd's
//! `transport.SelfCert` makes it: organization "etcd", valid for a year, server (and
//! client) use, naming the hosts of the listen URLs (IP addresses as IP SANs).
//!
//! etcd keeps its certificate under the data dir and reuses it; minietcd holds it in memory
//! and makes a new one each start: clients of an auto TLS member skip verification anyway
//! (`--insecure-skip-tls-verify`), as do its peers.

use std::net::IpAddr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long an auto TLS certificate is valid (etcd: 365 days).
const VALIDITY_DAYS: i64 = 365;

/// A certificate and its key, made in memory.
pub struct SelfSigned {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

/// A self-signed certificate for `hosts` (`host` or `host:port`).
pub fn self_signed(hosts: &[String]) -> Result<SelfSigned, String> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "etcd");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    for host in hosts {
        let h = host_of(host);
        let san = match h.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.try_into().map_err(|e| format!("{h}: {e}"))?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(SelfSigned {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(host_port: &str) -> &str {
    let h = match host_port.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    };
    h.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_listen_hosts() {
        let made = self_signed(&[
            "127.0.0.1:2379".into(),
            "localhost:2379".into(),
            "[::1]:1".into(),
        ])
        .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(made.cert.as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        assert!(
            cert.subject().to_string().contains("O=etcd"),
            "{}",
            cert.subject()
        );
    }
}
