//! Sources for the job runner's tests: tarballs built here (well-formed ones, and
//! hostile ones whose headers are written byte by byte: `../`, absolute paths,
//! escaping links, device files), local git repositories with tags and branches made
//! with the `git` binary, and an HTTPS server on loopback with a test CA.

use std::{collections::HashMap, net::SocketAddr, path::Path, process::Command, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

use crate::certs::TestPki;

/// One entry of a tarball.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    /// An executable file.
    Exec(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
}

/// A gzip-compressed tarball of `entries`, with names written into the headers as
/// given (nothing checks or normalises them here).
pub fn tarball(entries: &[Entry<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_old();
        let (name, kind, data, mode): (&str, tar::EntryType, &[u8], u32) = match entry {
            Entry::File(n, d) => (n, tar::EntryType::Regular, d, 0o644),
            Entry::Exec(n, d) => (n, tar::EntryType::Regular, d, 0o755),
            Entry::Dir(n) => (n, tar::EntryType::Directory, b"", 0o755),
            Entry::Symlink(n, target) => {
                let bytes = target.as_bytes();
                header.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
                (n, tar::EntryType::Symlink, b"", 0o777)
            }
            Entry::Hardlink(n, target) => {
                let bytes = target.as_bytes();
                header.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
                (n, tar::EntryType::Link, b"", 0o644)
            }
            Entry::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o644),
        };
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).expect("append to a tarball in memory");
    }
    builder.into_inner().and_then(|gz| gz.finish()).expect("finish the tarball")
}

/// SHA-256 of `data`, hex.
pub fn sha256(data: &[u8]) -> String {
    job_runner::sources::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Runs git in `dir` with a fixed identity; panics with its stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=plughost-test",
            "-c",
            "user.email=test@plughost.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git is installed (scripts/test installs it)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A bare repository at `bare` whose tag `v1` has `files_v1`, whose branch `release`
/// (committed after the tag) has `files_release` too, and whose `main` is the tag.
pub fn repository_with_tag_and_branch(
    scratch: &Path,
    bare: &Path,
    files_v1: &[(&str, &str)],
    files_release: &[(&str, &str)],
) {
    let work = scratch.join("repo-work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    for (name, text) in files_v1 {
        std::fs::write(work.join(name), text).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["tag", "-a", "v1", "-m", "version 1"]);
    git(&work, &["checkout", "-q", "-b", "release"]);
    for (name, text) in files_release {
        std::fs::write(work.join(name), text).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "release"]);
    git(scratch, &["init", "-q", "--bare", &bare.to_string_lossy()]);
    git(&work, &["push", "-q", "--tags", &bare.to_string_lossy(), "main", "release"]);
}

/// How the HTTPS server answers one path.
#[derive(Clone)]
pub enum Answer {
    /// 200 with a Content-Length.
    Body(Vec<u8>),
    /// 200 without a Content-Length: the body ends when the connection closes.
    Unsized(Vec<u8>),
}

/// An HTTPS server on 127.0.0.1 with a certificate of a test CA, serving fixed answers.
pub struct TarballServer {
    pub addr: SocketAddr,
    /// The CA certificate, PEM, in a file (for `--job-tarball-ca`).
    pub ca_file: std::path::PathBuf,
    task: JoinHandle<()>,
}

impl TarballServer {
    pub async fn start(dir: &Path, answers: HashMap<String, Answer>) -> TarballServer {
        let pki = TestPki::generate();
        let ca_file = dir.join("tarball-ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let certs: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut pki.server.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut pki.server.key_pem.as_bytes()).unwrap().unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answers = Arc::new(answers);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (head, body) = match answers.get(&path) {
                        Some(Answer::Body(b)) => (
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len()),
                            b.clone(),
                        ),
                        Some(Answer::Unsized(b)) => {
                            ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string(), b.clone())
                        }
                        None => (
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                            Vec::new(),
                        ),
                    };
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TarballServer { addr, ca_file, task }
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

impl Drop for TarballServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
