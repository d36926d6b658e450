//! Mutual TLS for every cluster connection (rustls, ring provider).
//!
//! - Servers present their node certificate and verify a client certificate against the
//!   cluster CA when one is offered. A client may connect *without* a certificate only to
//!   fetch the CA certificate or to join with a token; every other call checks for one
//!   ([`PeerIdentity`], filled in per connection).
//! - Clients verify the server against the CA (name [`crate::ca::SERVER_NAME`]) and
//!   present their own certificate. The one exception is the first contact of a joining
//!   node ([`insecure_client`]): it only downloads the CA certificate, whose digest it
//!   then checks against the token.

use crate::ca::SERVER_NAME;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| TlsError::Pem(e.to_string()))?;
        out.push(CertificateDer::from(p.contents));
    }
    if out.is_empty() {
        return Err(TlsError::Pem("no certificate".into()));
    }
    Ok(out)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    PrivateKeyDer::try_from(p.contents).map_err(|e| TlsError::Pem(e.to_string()))
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(ca_pem)? {
        r.add(c)?;
    }
    Ok(Arc::new(r))
}

/// A node's TLS identity.
#[derive(Clone)]
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&id.ca_pem)?, provider())
            .allow_unauthenticated()
            .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&id.cert_pem)?, key(&id.key_pem)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The Engine API port's server side: the handshake itself refuses a peer without a
/// certificate, with one from another CA, or with a node certificate (nodes never get
/// another node's Engine API); only [`crate::ca::CLIENT_OU`] certificates get through.
pub fn api_server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let inner =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&id.ca_pem)?, provider())
            .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(ClientsOnly(inner)))
        .with_single_cert(certs(&id.cert_pem)?, key(&id.key_pem)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// WebPKI verification against the cluster CA, then "is it a client certificate".
#[derive(Debug)]
struct ClientsOnly(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for ClientsOnly {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if crate::ca::client_name(end_entity.as_ref()).is_none() {
            tracing::info!("refused a node certificate on the Engine API port: clients only");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A client that verifies the server against `ca_pem` and presents `identity` if given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&Identity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    let mut cfg = match identity {
        Some(id) => b.with_client_auth_cert(certs(&id.cert_pem)?, key(&id.key_pem)?)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate: only for downloading the CA certificate, which the
/// caller then checks against the digest pinned in its join token.
pub fn insecure_client() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A lazily connecting gRPC channel to `addr` over TLS. Reconnects on its own.
pub fn channel(
    addr: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tonic::transport::Channel, TlsError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| TlsError::Connect {
            addr: addr.into(),
            source,
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let addr = addr.to_string();
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let (addr, cfg) = (addr.clone(), cfg.clone());
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })),
    )
}

/// Who is on the other end of a cluster connection; in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    pub addr: Option<SocketAddr>,
    /// The node ID from a verified node certificate, if one was presented.
    pub node_id: Option<String>,
    /// The name in a verified CLI client certificate ([`crate::ca::CLIENT_OU`]): such a
    /// peer has no node identity, so the cluster port's node-only RPCs refuse it.
    pub client: Option<String>,
    /// That client certificate's serial (lowercase hex), which revocation lists.
    pub client_serial: Option<String>,
}

/// An accepted TLS connection that tells tonic its peer's identity.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerIdentity,
}

impl TlsConn {
    pub async fn accept(
        acceptor: &tokio_rustls::TlsAcceptor,
        tcp: TcpStream,
    ) -> std::io::Result<TlsConn> {
        let addr = tcp.peer_addr().ok();
        tcp.set_nodelay(true)?;
        let inner = acceptor.accept(tcp).await?;
        let leaf = inner
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        let client_id = leaf.and_then(|c| crate::ca::client_identity(c.as_ref()));
        let client = client_id.as_ref().map(|c| c.name.clone());
        let node_id = leaf
            .filter(|_| client.is_none())
            .and_then(|c| crate::ca::cert_identity(c.as_ref()).ok())
            .map(|(cn, _)| cn);
        Ok(TlsConn {
            inner,
            peer: PeerIdentity {
                addr,
                node_id,
                client,
                client_serial: client_id.map(|c| c.serial),
            },
        })
    }
}

impl TlsConn {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerIdentity;
    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener`, completes TLS handshakes concurrently (a slow or
/// failing client never blocks others), and yields the established connections.
pub fn incoming(
    listener: tokio::net::TcpListener,
    cfg: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    serve_tls(listener, "cluster", move || Some(acceptor.clone()))
}

/// [`incoming`] for the Engine API port: each handshake uses [`api_server_config`] built
/// from `identity()` as it is at accept time, so a renewed node certificate is served
/// without a restart.
pub fn api_incoming(
    listener: tokio::net::TcpListener,
    identity: Arc<dyn Fn() -> Identity + Send + Sync>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let mut cached: Option<(String, tokio_rustls::TlsAcceptor)> = None;
    serve_tls(listener, "Engine API", move || {
        let id = identity();
        if let Some((pem, a)) = &cached {
            if *pem == id.cert_pem {
                return Some(a.clone());
            }
        }
        match api_server_config(&id) {
            Ok(cfg) => {
                let a = tokio_rustls::TlsAcceptor::from(cfg);
                cached = Some((id.cert_pem.clone(), a.clone()));
                Some(a)
            }
            Err(e) => {
                tracing::error!(error = %e, "Engine API TLS configuration");
                None
            }
        }
    })
}

/// [`incoming`] for a worker's image-share port: each handshake uses [`server_config`]
/// built from `identity()` as it is at accept time, so a renewed node certificate is
/// served without a restart.
pub fn node_incoming(
    listener: tokio::net::TcpListener,
    identity: Arc<dyn Fn() -> Identity + Send + Sync>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let mut cached: Option<(String, tokio_rustls::TlsAcceptor)> = None;
    serve_tls(listener, "image share", move || {
        let id = identity();
        if let Some((pem, a)) = &cached {
            if *pem == id.cert_pem {
                return Some(a.clone());
            }
        }
        match server_config(&id) {
            Ok(cfg) => {
                let a = tokio_rustls::TlsAcceptor::from(cfg);
                cached = Some((id.cert_pem.clone(), a.clone()));
                Some(a)
            }
            Err(e) => {
                tracing::error!(error = %e, "image share TLS configuration");
                None
            }
        }
    })
}

/// The accept loop the ports share: `acceptor()` gives the TLS acceptor for each new
/// connection (None: drop it); handshakes run off the loop, so a slow or silent peer
/// holds up no one, with a 10 s bound; failures are logged naming `port`.
fn serve_tls(
    listener: tokio::net::TcpListener,
    port: &'static str,
    mut acceptor: impl FnMut() -> Option<tokio_rustls::TlsAcceptor> + Send + 'static,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let Some(acceptor) = acceptor() else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), TlsConn::accept(&acceptor, tcp))
                    .await
                {
                    Ok(Ok(c)) => {
                        let _ = tx.send(Ok(c)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "refused {port} connection: TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::info!(%peer, "refused {port} connection: TLS handshake timed out")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
