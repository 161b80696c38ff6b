//! TLS for Tessera's gRPC ports and their clients, from PEM files an operator provides:
//!
//! ```toml
//! [security]
//! ca_path = "ca.pem"          # the CA every certificate of the cluster is signed by
//! cert_path = "server.pem"    # this process's certificate (a client's: optional)
//! key_path = "server-key.pem" # its private key
//! cert_allowed_cn = ["tessera-store"]  # peer port: the common names a store may present
//! client_cert_auth = true     # client gRPC ports ask for a client certificate too
//! ```
//!
//! With a CA set, servers speak TLS only, and clients verify the server's certificate against
//! the CA (its subject alternative names must hold the address dialled: an IP address or a DNS
//! name). The store's peer port requires a client certificate signed by the CA (mutual TLS) and,
//! when `cert_allowed_cn` is set, one of those common names.
//!
//! Files are read once, at start; a missing or malformed file is a clear error then.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind wanted.
    #[error("{path} holds no PEM {what}")]
    NoPem {
        /// The file.
        path: PathBuf,
        /// A certificate or a private key.
        what: &'static str,
    },
    /// The settings are incomplete.
    #[error("{0}")]
    Config(String),
    /// An address cannot be made into an endpoint.
    #[error("bad address {addr}: {reason}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// The `[security]` TLS settings, as paths.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsPaths {
    /// The CA certificate (PEM); TLS is on when set.
    pub ca_path: Option<PathBuf>,
    /// This process's certificate chain (PEM).
    pub cert_path: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_path: Option<PathBuf>,
    /// A server's gRPC port asks its clients for a certificate the CA signed too (mutual TLS;
    /// the stores' peer ports always do).
    pub client_cert_auth: bool,
}

impl TlsPaths {
    /// Loads the files: `None` when no CA is set (plain TCP).
    ///
    /// # Errors
    /// A file that cannot be read or holds no PEM of its kind; a certificate without its key or
    /// the other way round.
    pub fn load(&self) -> Result<Option<Tls>, Error> {
        let Some(ca) = &self.ca_path else {
            if self.cert_path.is_some() || self.key_path.is_some() {
                return Err(Error::Config(
                    "cert_path and key_path need ca_path (the CA they are checked against)".into(),
                ));
            }
            return Ok(None);
        };
        let ca_pem = read_pem(ca, "certificate")?;
        let identity_pem = match (&self.cert_path, &self.key_path) {
            (Some(cert), Some(key)) => Some((
                read_pem(cert, "certificate")?,
                read_pem(key, "private key")?,
            )),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "cert_path and key_path go together: set both or neither".into(),
                ))
            }
        };
        Ok(Some(Tls {
            ca: Certificate::from_pem(&ca_pem),
            identity: identity_pem.as_ref().map(|(c, k)| Identity::from_pem(c, k)),
            ca_pem,
            identity_pem,
        }))
    }
}

/// Reads `path` and checks it holds a PEM item of kind `what` ("certificate" or "private
/// key").
fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = bytes.as_slice();
    let found = rustls_pemfile::read_all(&mut reader).flatten().any(|item| {
        use rustls_pemfile::Item;
        match item {
            Item::X509Certificate(_) => what == "certificate",
            Item::Pkcs1Key(_) | Item::Pkcs8Key(_) | Item::Sec1Key(_) => what == "private key",
            _ => false,
        }
    });
    if !found {
        return Err(Error::NoPem {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(bytes)
}

/// Loaded TLS material: the CA, and this process's identity if it has one.
#[derive(Clone, Debug)]
pub struct Tls {
    ca: Certificate,
    identity: Option<Identity>,
    /// The same, as PEM, for the HTTP ports' rustls settings.
    ca_pem: Vec<u8>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl Tls {
    /// The TLS a server port speaks: its identity; with `require_client_cert`, clients must
    /// present a certificate signed by the CA.
    ///
    /// # Errors
    /// [`Error::Config`] when this process has no certificate of its own.
    pub fn server(&self, require_client_cert: bool) -> Result<ServerTlsConfig, Error> {
        let identity = self.identity.clone().ok_or_else(|| {
            Error::Config("a server needs cert_path and key_path as well as ca_path".into())
        })?;
        let config = ServerTlsConfig::new().identity(identity);
        Ok(if require_client_cert {
            config.client_ca_root(self.ca.clone())
        } else {
            config
        })
    }

    /// The TLS a client speaks: the server's certificate checked against the CA; this
    /// process's certificate presented when it has one.
    pub fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(self.ca.clone());
        match &self.identity {
            Some(id) => config.identity(id.clone()),
            None => config,
        }
    }
}

impl Tls {
    /// The rustls settings of an HTTPS server port: this process's certificate, no client
    /// certificate asked for.
    ///
    /// # Errors
    /// [`Error::Config`] without a certificate of its own, or when rustls refuses it.
    pub fn https_server(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let (cert, key) = self.identity_pem.as_ref().ok_or_else(|| {
            Error::Config("a server needs cert_path and key_path as well as ca_path".into())
        })?;
        let bad = |e: String| Error::Config(format!("the certificate cannot serve HTTPS: {e}"));
        let chain = certs_of(cert);
        let key = key_of(key)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("no private key".into()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The rustls settings of an HTTPS client: servers checked against the CA, this
    /// process's certificate presented when it has one.
    ///
    /// # Errors
    /// [`Error::Config`] when rustls refuses the CA or the certificate.
    pub fn https_client(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let bad = |e: String| Error::Config(format!("TLS client settings: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        for c in certs_of(&self.ca_pem) {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.identity_pem {
            Some((cert, key)) => {
                let key = key_of(key)
                    .map_err(|e| bad(e.to_string()))?
                    .ok_or_else(|| bad("no private key".into()))?;
                builder
                    .with_client_auth_cert(certs_of(cert), key)
                    .map_err(|e| bad(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The ring crypto provider (the one the gRPC ports use too): it builds with a C compiler
/// only, where the alternative needs cmake.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, in order.
fn certs_of(mut pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem).flatten().collect()
}

/// The private key of a PEM file.
fn key_of(mut pem: &[u8]) -> std::io::Result<Option<rustls::pki_types::PrivateKeyDer<'static>>> {
    rustls_pemfile::private_key(&mut pem)
}

/// An endpoint for `addr` (`host:port`): `https` with `tls`, `http` without.
///
/// # Errors
/// [`Error::Address`] when `addr` makes no URI or the TLS settings do not apply.
pub fn endpoint(addr: &str, tls: Option<&Tls>) -> Result<Endpoint, Error> {
    let bad = |reason: String| Error::Address {
        addr: addr.to_string(),
        reason,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint =
        Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| bad(e.to_string()))?;
    match tls {
        Some(t) => endpoint
            .tls_config(t.client())
            .map_err(|e| bad(e.to_string())),
        None => Ok(endpoint),
    }
}

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Whether the certificates a client presented on `request` satisfy `allowed` common names:
/// any certificate will do when `allowed` is empty (the handshake already checked it against
/// the CA); else the first (the client's own) must carry one of them.
///
/// # Errors
/// `PermissionDenied` saying which name was refused.
pub fn check_common_name<T>(
    request: &tonic::Request<T>,
    allowed: &[String],
) -> Result<(), tonic::Status> {
    if allowed.is_empty() {
        return Ok(());
    }
    let certs = request.peer_certs();
    let cn = certs
        .as_deref()
        .and_then(|c| c.first())
        .and_then(|c| common_name(c.as_ref()));
    match cn {
        Some(cn) if allowed.contains(&cn) => Ok(()),
        Some(cn) => Err(tonic::Status::permission_denied(format!(
            "certificate common name {cn:?} is not in cert_allowed_cn"
        ))),
        None => Err(tonic::Status::permission_denied(
            "no client certificate with a common name",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn files_are_checked_when_loaded_1() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let ca_pem = write(dir.path(), "ca.pem", &ca.cert.pem());
        let key_pem = write(dir.path(), "key.pem", &ca.key_pair.serialize_pem());
        let junk = write(dir.path(), "junk.pem", "not pem");
        let paths =
            |ca: Option<&PathBuf>, cert: Option<&PathBuf>, key: Option<&PathBuf>| TlsPaths {
                ca_path: ca.cloned(),
                cert_path: cert.cloned(),
                key_path: key.cloned(),
                client_cert_auth: false,
            };
        assert!(paths(None, None, None).load().unwrap().is_none());
        let full = paths(Some(&ca_pem), Some(&ca_pem), Some(&key_pem))
            .load()
            .unwrap();
        assert!(full.unwrap().server(true).is_ok());
        let client_only = paths(Some(&ca_pem), None, None).load().unwrap().unwrap();
        assert!(matches!(client_only.server(false), Err(Error::Config(_))));
        let e = paths(Some(&junk), None, None).load().unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let e = paths(Some(&ca_pem), Some(&ca_pem), Some(&ca_pem))
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("holds no PEM private key"), "{e}");
        let e = paths(Some(&ca_pem), Some(&ca_pem), None)
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let e = paths(None, Some(&ca_pem), Some(&key_pem))
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("need ca_path"), "{e}");
        let missing = dir.path().join("nope.pem");
        let e = paths(Some(&missing), None, None).load().unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn common_names_are_read_from_certificates_1() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tessera-store");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("tessera-store"));
        assert_eq!(common_name(b"garbage"), None);
    }
}
