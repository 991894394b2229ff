//! TLS for OTLP over `https://`: the trust roots (the system's, plus the CA file of
//! OTEL_EXPORTER_OTLP_CERTIFICATE) and, for mTLS, the client's certificate chain and key.
//!
//! Every file is read and checked once, when the settings are resolved, so a missing file or a
//! key that does not belong to its certificate is a one-line error at start (and from
//! `--check-config`), not a failed export one interval later. The checked PEM is kept for
//! tonic's own TLS (gRPC) and turned into a rustls client config for hyper (HTTP): both
//! transports trust and present exactly the same things.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Why the TLS settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read, or holds nothing of the kind it should.
    #[error("OTLP {what} {}: {reason}", path.display())]
    File {
        /// Which setting names the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error(
        "OTLP mTLS needs both a client certificate and its key \
         (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)"
    )]
    HalfIdentity,
    /// Neither the system nor the settings give a root to verify the collector with.
    #[error(
        "OTLP over https: the system has no readable trust roots; give the collector's CA \
         with OTEL_EXPORTER_OTLP_CERTIFICATE or --otlp-certificate"
    )]
    NoRoots,
    /// rustls refused the combination (for example a key that is not the certificate's).
    #[error("OTLP TLS settings: {0}")]
    Rustls(#[source] rustls::Error),
}

/// The files the settings name (all optional: without any, the system roots alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) trusted besides the system's roots.
    pub certificate: Option<PathBuf>,
    /// Client certificate chain (PEM), for mTLS.
    pub client_certificate: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is named.
    pub fn any(&self) -> bool {
        self.certificate.is_some() || self.client_certificate.is_some() || self.client_key.is_some()
    }
}

/// Checked TLS material for both transports.
#[derive(Clone)]
pub struct Tls {
    /// For hyper (HTTP/protobuf): system roots, the CA file, the client identity.
    pub http: Arc<ClientConfig>,
    /// For tonic (gRPC), which adds the system roots itself: the CA file as PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// For tonic: the client certificate chain and key as PEM.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

// By hand: the derived form would print the private key into any debug log of the options.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.identity_pem.is_some())
            .finish()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

impl Tls {
    /// Reads and checks the files; the system roots come from the usual places
    /// (`SSL_CERT_FILE`, `SSL_CERT_DIR`, then the distribution's bundle).
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let mut roots = RootCertStore::empty();
        // Unreadable system bundles are not fatal: the CA file may be all that is needed.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        let ca_pem = match &files.certificate {
            Some(path) => {
                let pem = read("certificate", path)?;
                for cert in certificates("certificate", path, &pem)? {
                    roots.add(cert).map_err(|e| TlsError::File {
                        what: "certificate",
                        path: path.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                Some(pem)
            }
            None => None,
        };
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(TlsError::Rustls)?
                .with_root_certificates(roots);
        let (http, identity_pem) = match (&files.client_certificate, &files.client_key) {
            (None, None) => (builder.with_no_client_auth(), None),
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read("client certificate", cert_path)?;
                let chain = certificates("client certificate", cert_path, &cert_pem)?;
                let key_pem = read("client key", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
                    what: "client key",
                    path: key_path.clone(),
                    reason: format!("no PEM private key in it: {e}"),
                })?;
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(TlsError::Rustls)?;
                (config, Some((cert_pem, key_pem)))
            }
            _ => return Err(TlsError::HalfIdentity),
        };
        Ok(Tls {
            http: Arc::new(http),
            ca_pem,
            identity_pem,
        })
    }
}
