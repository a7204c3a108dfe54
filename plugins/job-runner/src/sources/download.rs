//! Downloading a `tarball_url` source: HTTPS only (rustls with the ring provider, the
//! system's CA bundle plus `--job-tarball-ca`), HTTP/1.1 over hyper, the host (and the
//! host of every redirect) on the allowlist, the size capped before and while reading,
//! the whole download under one timeout, and the SHA-256 computed while writing, so the
//! caller checks it before anything is unpacked.

use std::{path::Path, sync::Arc, time::Duration};

use http_body_util::BodyExt;
use hyper::{Request, StatusCode, Uri, body::Incoming};
use hyper_util::rt::TokioIo;
use ring::digest;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;

use crate::policy::allowlisted;

/// Redirects followed at most (each checked like the first address).
const MAX_REDIRECTS: usize = 5;

/// Where the system keeps its CA bundle, in the order tried (`SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// What a download is allowed to do.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    pub allowlist: Vec<String>,
    pub max_bytes: u64,
    pub timeout: Duration,
    pub extra_ca_file: Option<std::path::PathBuf>,
}

/// A finished download: its size and SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub bytes: u64,
    pub sha256: String,
}

/// The trust roots: the system bundle (when there is one) and the extra CA file.
fn roots(extra: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find(|p| p.is_file());
    let mut add = |path: &Path, required: bool| -> Result<(), String> {
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) if required => return Err(format!("CA file {}: {e}", path.display())),
            Err(_) => return Ok(()),
        };
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        if required && certs.is_empty() {
            return Err(format!("CA file {} holds no certificate", path.display()));
        }
        roots.add_parsable_certificates(certs);
        Ok(())
    };
    if let Some(system) = system {
        add(&system, false)?;
    }
    if let Some(extra) = extra {
        add(extra, true)?;
    }
    Ok(roots)
}

/// Checks that `url` may be fetched: HTTPS, a host, the host on the allowlist.
pub fn check_url(url: &str, allowlist: &[String]) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("tarball URL {url} is not https; only HTTPS downloads are allowed"));
    }
    let host = uri.host().ok_or_else(|| format!("tarball URL {url} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !allowlisted(allowlist, host) {
        return Err(format!("host {host} is not on the worker's --job-tarball-allowlist"));
    }
    Ok(uri)
}

/// Downloads `url` into `dest`, following allowlisted HTTPS redirects.
pub async fn download(url: &str, dest: &Path, policy: &DownloadPolicy) -> Result<Downloaded, String> {
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots(policy.extra_ca_file.as_deref())?)
            .with_no_client_auth(),
    );
    let work = async {
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let uri = check_url(&current, &policy.allowlist)?;
            match get(&uri, tls.clone(), dest, policy.max_bytes).await? {
                Fetched::Done(d) => return Ok(d),
                Fetched::Redirect(location) => {
                    // A relative Location is resolved against the current address.
                    current = if location.starts_with('/') {
                        format!("https://{}{location}", uri.authority().map(|a| a.as_str()).unwrap_or_default())
                    } else {
                        location
                    };
                }
            }
        }
        Err(format!("more than {MAX_REDIRECTS} redirects from {url}"))
    };
    match tokio::time::timeout(policy.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("download of {url} did not finish within {}s", policy.timeout.as_secs())),
    }
}

enum Fetched {
    Done(Downloaded),
    Redirect(String),
}

async fn get(uri: &Uri, tls: Arc<rustls::ClientConfig>, dest: &Path, max_bytes: u64) -> Result<Fetched, String> {
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|_| format!("{host} is not a valid server name"))?;
    let stream =
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP with {host}: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = Request::get(path)
        .header(hyper::header::HOST, uri.authority().map(|a| a.as_str()).unwrap_or(&host))
        .header(hyper::header::USER_AGENT, "plughost-job-runner")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("GET {uri}: {e}"))?;
    let result = read(uri, response, dest, max_bytes).await;
    conn.abort();
    result
}

async fn read(uri: &Uri, response: hyper::Response<Incoming>, dest: &Path, max_bytes: u64) -> Result<Fetched, String> {
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("GET {uri}: {status} without a Location"))?;
        return Ok(Fetched::Redirect(location.chars().take(2048).collect()));
    }
    if status != StatusCode::OK {
        return Err(format!("GET {uri}: {status}"));
    }
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max_bytes) {
        return Err(format!("tarball is {n} bytes, over the limit of {max_bytes} (--job-tarball-max-bytes)"));
    }
    let mut file = tokio::fs::File::create(dest).await.map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut bytes: u64 = 0;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("GET {uri}: {e}"))?;
        let Some(data) = frame.data_ref() else { continue };
        bytes += data.len() as u64;
        if bytes > max_bytes {
            return Err(format!("tarball is over the limit of {max_bytes} bytes (--job-tarball-max-bytes)"));
        }
        hash.update(data);
        file.write_all(data).await.map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    file.flush().await.map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(Fetched::Done(Downloaded { bytes, sha256: super::hex(hash.finish().as_ref()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_of_allowlisted_hosts_pass() {
        let list = vec!["example.org".to_string()];
        assert!(check_url("https://example.org/a.tgz", &list).is_ok());
        assert!(check_url("https://example.org:8443/a.tgz", &list).is_ok());
        assert!(check_url("http://example.org/a.tgz", &list).unwrap_err().contains("not https"));
        assert!(check_url("https://evil.org/a.tgz", &list).unwrap_err().contains("not on the worker's"));
        assert!(check_url("file:///etc/passwd", &list).is_err());
    }
}
