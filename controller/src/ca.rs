//! The cluster CA and join tokens.
//!
//! The first manager creates a self-signed CA (ECDSA P-256). Its certificate and key live
//! in the replicated state, so whichever manager leads can sign. Node certificates carry
//! the node ID as common name and the SAN [`SERVER_NAME`], which every client expects;
//! a node's role is looked up in the state, not trusted from the certificate.
//!
//! A join token is `SWMTKN-1-<sha256 of the CA certificate, hex>-<secret>`: the digest
//! lets a joining node check it talks to the right cluster before it trusts anything; the
//! secret (one per role, rotatable) buys one certificate signing.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use sha2::Digest as _;
use std::time::Duration;

/// The DNS name in every node certificate; clients verify servers against it.
pub const SERVER_NAME: &str = "skiff-node";
/// The organizational unit that marks a client (CLI) certificate. Node certificates never
/// carry an OU ([`Ca::sign_csr`] replaces the whole subject), so a node cannot pass for a
/// client, and the cluster port treats a client as having no node identity.
pub const CLIENT_OU: &str = "skiff-client";
const TOKEN_PREFIX: &str = "SWMTKN";
const TOKEN_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid join token: {0}")]
    BadToken(&'static str),
    #[error("invalid certificate: {0}")]
    BadCert(String),
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

impl JoinToken {
    pub fn new(ca_digest: &str, secret: &str) -> JoinToken {
        JoinToken {
            ca_digest: ca_digest.into(),
            secret: secret.into(),
        }
    }

    pub fn parse(s: &str) -> Result<JoinToken, CaError> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        if parts.len() != 4 || parts[0] != TOKEN_PREFIX {
            return Err(CaError::BadToken("expected SWMTKN-1-<CA digest>-<secret>"));
        }
        if parts[1] != TOKEN_VERSION {
            return Err(CaError::BadToken("unsupported token version"));
        }
        if parts[2].len() != 64 || !parts[2].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CaError::BadToken("the CA digest must be 64 hex digits"));
        }
        if parts[3].len() < 16 || !parts[3].bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CaError::BadToken("the secret is too short or malformed"));
        }
        Ok(JoinToken {
            ca_digest: parts[2].to_ascii_lowercase(),
            secret: parts[3].into(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{}",
            self.ca_digest, self.secret
        )
    }
}

/// A fresh 25-character token secret.
pub fn new_secret() -> String {
    crate::model::new_id()
}

/// Compares secrets without leaking where they differ through timing.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 of a PEM certificate's DER, hex.
pub fn cert_digest(cert_pem: &str) -> Result<String, CaError> {
    let der = pem_to_der(cert_pem)?;
    Ok(hex::encode(sha2::Sha256::digest(der)))
}

pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, CaError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CaError::BadCert(e.to_string()))?;
    Ok(p.contents)
}

/// The common name (node ID) and expiry of a DER certificate.
pub fn cert_identity(der: &[u8]) -> Result<(String, time::OffsetDateTime), CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CaError::BadCert(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .ok_or_else(|| CaError::BadCert("no common name".into()))?
        .to_string();
    Ok((cn, cert.validity().not_after.to_datetime()))
}

/// The client name of a DER certificate that [`Ca::sign_client_csr`] issued; `None` for
/// node certificates (and anything unparsable).
pub fn client_name(der: &[u8]) -> Option<String> {
    client_identity(der).map(|c| c.name)
}

/// Who a client certificate names, and which certificate it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    pub name: String,
    /// The serial number, lowercase hex: what revocation lists.
    pub serial: String,
}

/// The client identity of a DER certificate that [`Ca::sign_client_csr`] issued; `None`
/// for node certificates (and anything unparsable).
pub fn client_identity(der: &[u8]) -> Option<ClientId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let is_client = subject
        .iter_organizational_unit()
        .any(|ou| ou.as_str() == Ok(CLIENT_OU));
    if !is_client {
        return None;
    }
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_string)?;
    Some(ClientId {
        name,
        serial: hex::encode(cert.raw_serial()),
    })
}

/// Checks a client certificate name: what `skiff cluster client-cert --name` accepts.
pub fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// The cluster CA (certificate + private key).
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
}

impl Ca {
    /// Creates a new CA, valid for 20 years.
    pub fn create(cluster_id: &str) -> Result<Ca, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "skiff-ca");
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365 * 20);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        Ok(Ca {
            cert,
            key,
            cert_pem,
        })
    }

    /// Loads the CA from the replicated state. The PEM served to nodes is the stored one.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        // Re-signing yields an issuer handle with the same name and key; signatures made
        // with it verify against the original certificate.
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert,
            key,
            cert_pem: cert_pem.into(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn digest(&self) -> Result<String, CaError> {
        cert_digest(&self.cert_pem)
    }

    /// Signs a node's CSR: the subject is replaced by the node ID the cluster assigned,
    /// whatever the CSR asked for.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node_id: &str,
        validity: Duration,
    ) -> Result<String, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = vec![rcgen::SanType::DnsName(SERVER_NAME.try_into()?)];
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now - time::Duration::minutes(5);
        csr.params.not_after = now
            + time::Duration::try_from(validity).map_err(|e| CaError::BadCert(e.to_string()))?;
        csr.params.serial_number = Some(random_serial());
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }
}

impl Ca {
    /// Signs a CLI client's CSR: subject `CN=<name>, OU=`[`CLIENT_OU`], client
    /// authentication only (no server name: it can never serve as a node).
    pub fn sign_client_csr(
        &self,
        csr_pem: &str,
        name: &str,
        validity: Duration,
    ) -> Result<String, CaError> {
        if !valid_client_name(name) {
            return Err(CaError::BadCert(format!(
                "client name {name:?}: use 1-64 letters, digits, '.', '_', '-' or '@'"
            )));
        }
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, CLIENT_OU);
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = vec![];
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now - time::Duration::minutes(5);
        csr.params.not_after = now
            + time::Duration::try_from(validity).map_err(|e| CaError::BadCert(e.to_string()))?;
        csr.params.serial_number = Some(random_serial());
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }
}

/// A random 128-bit serial: unique per certificate, so revoking one client certificate
/// never touches another issued for the same key (RFC 5280 asks for uniqueness anyway).
fn random_serial() -> rcgen::SerialNumber {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // positive, as DER integers must be
    rcgen::SerialNumber::from_slice(&serial)
}

/// A node's new private key and the CSR to send for signing.
pub fn new_key_and_csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_rejects() {
        let t = JoinToken::new(&"ab".repeat(32), "0123456789abcdefghijklmno");
        let s = t.to_string();
        assert!(s.starts_with("SWMTKN-1-abab"));
        assert_eq!(JoinToken::parse(&s).expect("parse"), t);
        for bad in [
            "",
            "SWMTKN-1-abc-0123456789abcdefghij",
            &format!("SWMTKN-2-{}-0123456789abcdefghij", "ab".repeat(32)),
            &format!("TOKEN-1-{}-0123456789abcdefghij", "ab".repeat(32)),
            &format!("SWMTKN-1-{}-short", "ab".repeat(32)),
            &format!("SWMTKN-1-{}-0123456789abcdefghij-extra", "ab".repeat(32)),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            secrets_equal("abc", "abc")
                && !secrets_equal("abc", "abd")
                && !secrets_equal("abc", "ab")
        );
    }

    #[test]
    fn client_certs_are_told_apart_from_node_certs() {
        let ca = Ca::create("cluster-1").expect("ca");
        let (_key, csr) = new_key_and_csr().expect("csr");
        let client = ca
            .sign_client_csr(&csr, "alice@laptop", Duration::from_secs(3600))
            .expect("sign");
        let node = ca
            .sign_csr(&csr, "node-abc", Duration::from_secs(3600))
            .expect("sign");
        let der = pem_to_der(&client).expect("der");
        assert_eq!(client_name(&der).as_deref(), Some("alice@laptop"));
        assert_eq!(client_name(&pem_to_der(&node).expect("der")), None);
        // Two certificates for one key still differ in serial (revocation tells them apart).
        let again = ca
            .sign_client_csr(&csr, "alice@laptop", Duration::from_secs(3600))
            .expect("sign");
        let (a, b) = (
            client_identity(&der).expect("id"),
            client_identity(&pem_to_der(&again).expect("der")).expect("id"),
        );
        assert_eq!(a.serial.len(), 32);
        assert_ne!(a.serial, b.serial);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert!(
            parsed.subject_alternative_name().expect("ext").is_none(),
            "a client certificate names no server"
        );
        for bad in ["", "a b", "x/y", &"n".repeat(65)] {
            assert!(ca
                .sign_client_csr(&csr, bad, Duration::from_secs(60))
                .is_err());
        }
    }

    #[test]
    fn ca_signs_csrs_that_verify_and_survive_reload() {
        let ca = Ca::create("cluster-1").expect("ca");
        let digest = ca.digest().expect("digest");
        assert_eq!(digest.len(), 64);
        let (_key, csr) = new_key_and_csr().expect("csr");
        let cert = ca
            .sign_csr(&csr, "node-abc", Duration::from_secs(3600))
            .expect("sign");
        let der = pem_to_der(&cert).expect("der");
        let (cn, not_after) = cert_identity(&der).expect("identity");
        assert_eq!(cn, "node-abc");
        assert!(not_after > time::OffsetDateTime::now_utc() + time::Duration::minutes(50));
        // A reloaded CA (another manager) signs certificates that chain to the same root.
        let again = Ca::load(ca.cert_pem(), &ca.key_pem()).expect("load");
        assert_eq!(again.digest().expect("digest"), digest);
        let cert2 = again
            .sign_csr(&csr, "node-def", Duration::from_secs(3600))
            .expect("sign");
        let root_der = pem_to_der(ca.cert_pem()).expect("der");
        let (_, root) = x509_parser::parse_x509_certificate(&root_der).expect("parse");
        for c in [&cert, &cert2] {
            let der = pem_to_der(c).expect("der");
            let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
            parsed
                .verify_signature(Some(root.public_key()))
                .expect("signed by the CA");
        }
        // Another CA's key does not verify.
        let other = Ca::create("cluster-2").expect("ca");
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let root2_der = pem_to_der(other.cert_pem()).expect("der");
        let (_, root2) = x509_parser::parse_x509_certificate(&root2_der).expect("parse");
        assert!(parsed.verify_signature(Some(root2.public_key())).is_err());
    }
}
