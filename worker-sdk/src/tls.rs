//! TLS settings for reaching the admin: the CA that signed the admin's certificate and,
//! for mutual TLS, this worker's client certificate. Checked once at start so that a
//! broken PEM is a fatal configuration error rather than an endless reconnect loop.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::Error;

/// PEM material for TLS to the admin (gRPC, and the HTTP status lookup for `https://`).
#[derive(Clone)]
pub struct TlsConfig {
    /// One or more CA certificates that the admin's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// This worker's certificate chain, for admins that require client certificates.
    pub client_cert_pem: Option<Vec<u8>>,
    /// The private key of `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
    /// The name to verify the admin's certificate against; defaults to the host of the
    /// admin address.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("client_key", &self.client_key_pem.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConfig {
    /// Server-authenticated TLS trusting `ca_pem`.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        TlsConfig { ca_pem: ca_pem.into(), client_cert_pem: None, client_key_pem: None, server_name: None }
    }

    /// Adds a client certificate and key (mutual TLS).
    pub fn client_identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.client_cert_pem = Some(cert_pem.into());
        self.client_key_pem = Some(key_pem.into());
        self
    }

    /// Verifies the admin's certificate against this name instead of the address host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the CA and, optionally, a client certificate and key from PEM files.
    pub fn from_files(
        ca: impl AsRef<Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, Error> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(format!("cannot read {}", p.display()), e));
        let mut tls = TlsConfig::new(read(ca.as_ref())?);
        match (client_cert, client_key) {
            (Some(cert), Some(key)) => tls = tls.client_identity(read(cert)?, read(key)?),
            (None, None) => {}
            _ => {
                return Err(Error::Tls("a client certificate needs its key and a key needs its certificate".into()));
            }
        }
        Ok(tls)
    }

    /// Parses every PEM so that mistakes show up before the first dial.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.parts().map(|_| ())
    }

    /// The tonic client TLS settings; `host` is the admin host, used when no
    /// `server_name` is set.
    pub(crate) fn tonic(&self, host: &str) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(self.server_name.clone().unwrap_or_else(|| unbracket(host).to_string()));
        if let (Some(cert), Some(key)) = (&self.client_cert_pem, &self.client_key_pem) {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        tls
    }

    /// A rustls connector setup (ring provider) for the `https://` status lookup.
    pub(crate) fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let (cas, identity) = self.parts()?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| Error::Tls(format!("unusable ca certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Tls(format!("unusable client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The name to check the admin's certificate against, as rustls wants it.
    pub(crate) fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, Error> {
        let name = self.server_name.clone().unwrap_or_else(|| unbracket(host).to_string());
        ServerName::try_from(name.clone()).map_err(|_| Error::Tls(format!("invalid server name {name:?}")))
    }

    #[allow(clippy::type_complexity)]
    fn parts(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>), Error>
    {
        let cas = certs(&self.ca_pem, "ca")?;
        let identity = match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(cert), Some(key)) => {
                let chain = certs(cert, "client")?;
                let key = rustls_pemfile::private_key(&mut key.as_slice())
                    .map_err(|e| Error::Tls(format!("unreadable client key pem: {e}")))?
                    .ok_or_else(|| Error::Tls("the client key pem holds no private key".into()))?;
                Some((chain, key))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Tls("a client certificate needs its key and a key needs its certificate".into()));
            }
        };
        Ok((cas, identity))
    }
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("unreadable {what} certificate pem: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("the {what} certificate pem holds no certificate")));
    }
    Ok(certs)
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_a_tls_error() {
        let err = TlsConfig::new("not a certificate").validate().unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err}");
        assert!(err.is_fatal());
    }

    #[test]
    fn a_certificate_without_its_key_is_a_tls_error() {
        let tls = TlsConfig { client_cert_pem: Some(b"x".to_vec()), ..TlsConfig::new("x") };
        assert!(matches!(tls.parts(), Err(Error::Tls(_))));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let tls = TlsConfig::new("ca").client_identity("cert", "SECRET KEY");
        assert!(!format!("{tls:?}").contains("SECRET"));
    }
}
