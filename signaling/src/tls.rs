//! TLS termination (`wss://`): the server's certificate and key ([`ServerTls`]), loaded
//! from PEM files, and the stream of an accepted connection, plain or TLS.
//!
//! rustls runs with the ring provider, installed explicitly in every configuration built
//! here (never a process-wide default provider).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The crypto provider of every rustls configuration of peershare: ring.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    Pem {
        /// "certificate file" or "key file".
        what: &'static str,
        path: String,
        reason: String,
    },
    /// rustls refused the certificate chain or the key (e.g. they do not match).
    #[error("certificate and key refused: {0}")]
    Rustls(#[from] rustls::Error),
}

fn pem_error(what: &'static str, path: &Path, kind: &str, e: pem::Error) -> TlsConfigError {
    let reason = match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("no {kind} found in it (PEM expected)"),
        e => format!("invalid PEM: {e}"),
    };
    TlsConfigError::Pem {
        what,
        path: path.display().to_string(),
        reason,
    }
}

/// Every certificate (`CERTIFICATE` sections) of a PEM file; an error if there is none.
/// `what` names the file in errors ("certificate file", "CA file").
pub fn load_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let kind = "certificate";
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, kind, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, kind, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, kind, pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The TLS side of a server: its certificate chain and private key, ready to accept.
///
/// Equality is identity (two values are equal when they share one rustls configuration),
/// so that [`ServerConfig`](crate::ServerConfig) stays comparable.
#[derive(Debug, Clone)]
pub struct ServerTls(Arc<rustls::ServerConfig>);

impl ServerTls {
    /// Load the certificate chain (PEM, leaf first) and the private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1) from files.
    pub fn from_pem_files(cert_file: &Path, key_file: &Path) -> Result<Self, TlsConfigError> {
        let chain = load_certificates(cert_file, "certificate file")?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| pem_error("key file", key_file, "private key", e))?;
        Self::from_der(chain, key)
    }

    /// A certificate chain (leaf first) and its private key.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsConfigError> {
        let config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(ServerTls(Arc::new(config)))
    }

    /// A rustls configuration built by the caller (it chooses its own provider).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTls(config)
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.0
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.0))
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ServerTls {}

/// An accepted connection: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub(crate) enum ServerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(s) => s.is_write_vectored(),
            ServerStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn server_tls_pem_files_load_and_compare_by_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (cert, key) = self_signed();
        let c = write(dir, "c.pem", &cert);
        let k = write(dir, "k.pem", &key);
        let tls = ServerTls::from_pem_files(&c, &k).expect("load");
        assert_eq!(tls, tls.clone());
        assert_ne!(tls, ServerTls::from_pem_files(&c, &k).unwrap());
    }

    #[test]
    fn server_tls_bad_files_name_the_file_and_the_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (cert, key) = self_signed();
        let (other_cert, _) = self_signed();
        let c = write(dir, "c.pem", &cert);
        let k = write(dir, "k.pem", &key);
        let junk = write(dir, "junk.pem", "not pem at all\n");
        let missing = dir.join("missing.pem");
        let other = write(dir, "other.pem", &other_cert);

        let e = ServerTls::from_pem_files(&missing, &k)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("certificate file ") && e.contains("cannot read it"),
            "{e}"
        );
        let e = ServerTls::from_pem_files(&junk, &k)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no certificate found"), "{e}");
        let e = ServerTls::from_pem_files(&c, &junk)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("key file ") && e.contains("no private key"),
            "{e}"
        );
        // A key given as the certificate holds no certificate; a certificate as the key
        // holds no key.
        assert!(ServerTls::from_pem_files(&k, &k).is_err());
        assert!(ServerTls::from_pem_files(&c, &c).is_err());
        // The key of another certificate.
        let e = ServerTls::from_pem_files(&other, &k).unwrap_err();
        assert!(matches!(e, TlsConfigError::Rustls(_)), "{e}");
    }
}
