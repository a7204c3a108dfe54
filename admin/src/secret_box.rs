//! Encryption of secrets at rest: AES-256-GCM (`ring::aead`) under the admin's secret key.
//!
//! **Sealed text.** [`SecretBox::seal`] turns bytes into
//! `plughost-enc:v1:<base64(nonce || ciphertext || tag)>` (standard base64 with padding):
//! a fresh random 96-bit nonce per value, and associated data that the caller chooses
//! (the config store binds each value to its job type, form and field, so a ciphertext
//! copied into another field does not open). The version names the algorithm and the
//! layout; another version is refused rather than guessed at.
//!
//! **The key** is 32 bytes ([`SecretKeySource`]): a key file (by default
//! `<data>/plugin/secret.key`, created with 32 random bytes, owner-only, at first start),
//! or the key itself as text (`PLUGHOST_SECRET_KEY`). As text a key is 64 hex digits or
//! standard base64 of 32 bytes (padding optional); a key file holds either exactly 32
//! raw bytes or that text. Neither the key nor anything sealed with it is ever printed:
//! `Debug` shows where the key came from, nothing else.
//!
//! Random nonces are safe for far more values than an admin ever stores under one key
//! (NIST's bound for random 96-bit nonces is 2^32 encryptions per key).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::fsutil;

/// The prefix every sealed text starts with, whatever its version: a value that starts
/// with it is ciphertext, and nothing else may.
pub const SEALED_MARK: &str = "plughost-enc:";
/// The prefix of a value sealed by this version.
pub const SEALED_V1: &str = "plughost-enc:v1:";
/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// The key file's name under `<data>/plugin`.
pub const KEY_FILE: &str = "secret.key";
/// The AES-GCM tag appended to each ciphertext.
const TAG_LEN: usize = 16;

/// Where the admin's secret key comes from.
#[derive(Clone, Default)]
pub enum SecretKeySource {
    /// `<data>/plugin/secret.key`, created with a random key if it does not exist.
    #[default]
    DataDir,
    /// A key file elsewhere, created with a random key if it does not exist.
    File(PathBuf),
    /// The key itself: 64 hex digits or base64 of 32 bytes (`PLUGHOST_SECRET_KEY`).
    Text(String),
}

impl fmt::Debug for SecretKeySource {
    /// Never the key itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretKeySource::DataDir => f.write_str("DataDir"),
            SecretKeySource::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretKeySource::Text(_) => f.write_str("Text(<redacted>)"),
        }
    }
}

/// Why the secret key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("cannot read or create the key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the key file {} holds no key: it must be 32 raw bytes, 64 hex digits or base64 of 32 bytes", path.display())]
    BadFile { path: PathBuf },
    #[error("PLUGHOST_SECRET_KEY holds no key: it must be 64 hex digits or base64 of 32 bytes")]
    BadText,
    #[error("the system random number generator failed")]
    Random,
}

/// Why a sealed text did not open. Neither says anything about the contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not an encrypted value")]
    NotSealed,
    #[error("encrypted with an unsupported format (this admin reads {SEALED_V1})")]
    UnknownVersion,
    #[error("the encrypted value is malformed")]
    Malformed,
    #[error("wrong secret key, or the encrypted value was altered or moved")]
    Unauthentic,
}

/// The system random number generator failed while sealing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encrypt: the system random number generator failed")]
pub struct SealError;

/// AES-256-GCM under one key. Cheap to share (`Arc`); safe to use from any thread.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
    /// Where the key came from, for messages: "key file /data/plugin/secret.key".
    origin: String,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl SecretBox {
    /// A box over the given key; `origin` says where it came from (for messages).
    pub fn from_key(key: &[u8; KEY_LEN], origin: impl Into<String>) -> Self {
        // AES-256 takes any 32 bytes: the length is the only thing ring checks.
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        Self { key: LessSafeKey::new(unbound), rng: SystemRandom::new(), origin: origin.into() }
    }

    /// The admin's key from `source`; a key file that does not exist is created with 32
    /// random bytes, readable by its owner only.
    pub fn open_source(source: &SecretKeySource, data_dir: &Path) -> Result<Self, SecretKeyError> {
        match source {
            SecretKeySource::DataDir => key_from_file(&data_dir.join("plugin").join(KEY_FILE)),
            SecretKeySource::File(path) => key_from_file(path),
            SecretKeySource::Text(text) => {
                let key = decode_key_text(text).ok_or(SecretKeyError::BadText)?;
                Ok(Self::from_key(&key, "PLUGHOST_SECRET_KEY"))
            }
        }
    }

    /// Where the key came from: "key file <path>" or "PLUGHOST_SECRET_KEY".
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `plaintext` encrypted under a fresh random nonce, bound to `aad`, as sealed text.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
            .map_err(|_| SealError)?;
        out.extend_from_slice(&in_out);
        Ok(format!("{SEALED_V1}{}", STANDARD.encode(out)))
    }

    /// The plaintext of sealed text, if it was sealed under this key with this `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        if !is_sealed(sealed) {
            return Err(OpenError::NotSealed);
        }
        let body = sealed.strip_prefix(SEALED_V1).ok_or(OpenError::UnknownVersion)?;
        let bytes = STANDARD.decode(body).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad), &mut in_out).map_err(|_| OpenError::Unauthentic)?;
        Ok(plain.to_vec())
    }
}

/// Whether `text` is (or claims to be) sealed text of any version.
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_MARK)
}

fn key_from_file(path: &Path) -> Result<SecretBox, SecretKeyError> {
    let origin = format!("key file {}", path.display());
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_shared(path);
            let key = decode_key_file(&bytes).ok_or_else(|| SecretKeyError::BadFile { path: path.to_path_buf() })?;
            Ok(SecretBox::from_key(&key, origin))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut key = [0u8; KEY_LEN];
            SystemRandom::new().fill(&mut key).map_err(|_| SecretKeyError::Random)?;
            fsutil::write_atomic_private(path, &key)
                .map_err(|source| SecretKeyError::Io { path: path.to_path_buf(), source })?;
            tracing::info!(path = %path.display(), "created a new secret key for sensitive config values");
            Ok(SecretBox::from_key(&key, origin))
        }
        Err(source) => Err(SecretKeyError::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the secret key file is readable by others than its owner");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

/// A key file: exactly 32 raw bytes, or the key as text.
fn decode_key_file(bytes: &[u8]) -> Option<[u8; KEY_LEN]> {
    if let Ok(key) = <[u8; KEY_LEN]>::try_from(bytes) {
        return Some(key);
    }
    decode_key_text(std::str::from_utf8(bytes).ok()?)
}

/// 64 hex digits, or standard base64 (padding optional) of 32 bytes; surrounding
/// whitespace is ignored.
pub fn decode_key_text(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.trim();
    let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_LEN).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16)).collect::<Result<Vec<u8>, _>>().ok()?
    } else {
        STANDARD.decode(text).or_else(|_| STANDARD_NO_PAD.decode(text)).ok()?
    };
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    const KEY: [u8; KEY_LEN] = [7; KEY_LEN];

    fn sealed_bytes(sealed: &str) -> Vec<u8> {
        STANDARD.decode(sealed.strip_prefix(SEALED_V1).unwrap()).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_to_its_plaintext() {
        let b = SecretBox::from_key(&KEY, "test");
        let sealed = b.seal(b"hunter2", b"job/field").unwrap();
        assert!(sealed.starts_with(SEALED_V1) && is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(sealed_bytes(&sealed).len(), NONCE_LEN + 7 + TAG_LEN);
        assert_eq!(b.open(&sealed, b"job/field").unwrap(), b"hunter2");
        assert_eq!(b.open(&b.seal(b"", b"").unwrap(), b"").unwrap(), b"");
    }

    #[test]
    fn another_key_cannot_open_a_sealed_value() {
        let sealed = SecretBox::from_key(&KEY, "a").seal(b"hunter2", b"aad").unwrap();
        let other = SecretBox::from_key(&[8; KEY_LEN], "b");
        assert_eq!(other.open(&sealed, b"aad"), Err(OpenError::Unauthentic));
    }

    #[test]
    fn a_tampered_ciphertext_does_not_open() {
        let b = SecretBox::from_key(&KEY, "test");
        let sealed = b.seal(b"hunter2", b"aad").unwrap();
        let bytes = sealed_bytes(&sealed);
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[i] ^= 1;
            let text = format!("{SEALED_V1}{}", STANDARD.encode(&altered));
            assert_eq!(b.open(&text, b"aad"), Err(OpenError::Unauthentic), "byte {i} flipped");
        }
        let short = format!("{SEALED_V1}{}", STANDARD.encode(&bytes[..NONCE_LEN + TAG_LEN - 1]));
        assert_eq!(b.open(&short, b"aad"), Err(OpenError::Malformed));
        assert_eq!(b.open(&format!("{SEALED_V1}not base64!"), b"aad"), Err(OpenError::Malformed));
        assert_eq!(b.open("plughost-enc:v9:AAAA", b"aad"), Err(OpenError::UnknownVersion));
        assert_eq!(b.open("hunter2", b"aad"), Err(OpenError::NotSealed));
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let b = SecretBox::from_key(&KEY, "test");
        let first = b.seal(b"same", b"aad").unwrap();
        let second = b.seal(b"same", b"aad").unwrap();
        assert_ne!(first, second);
        assert_ne!(sealed_bytes(&first)[..NONCE_LEN], sealed_bytes(&second)[..NONCE_LEN]);
    }

    #[test]
    fn the_associated_data_binds_a_value_to_its_field() {
        let b = SecretBox::from_key(&KEY, "test");
        let sealed = b.seal(b"hunter2", b"vacuum/admin/api_key").unwrap();
        assert_eq!(b.open(&sealed, b"vacuum/admin/other"), Err(OpenError::Unauthentic));
        assert_eq!(b.open(&sealed, b"vacuum/admin/api_key").unwrap(), b"hunter2");
    }

    #[test]
    fn key_text_is_hex_or_base64_of_32_bytes() {
        let hex: String = (0..32u8).map(|b| format!("{b:02x}")).collect();
        let expected: Vec<u8> = (0..32u8).collect();
        assert_eq!(decode_key_text(&hex).unwrap().as_slice(), expected.as_slice());
        assert_eq!(decode_key_text(&format!(" {} \n", hex.to_uppercase())).unwrap().as_slice(), expected.as_slice());
        let b64 = STANDARD.encode(&expected);
        assert_eq!(decode_key_text(&b64).unwrap().as_slice(), expected.as_slice());
        assert_eq!(decode_key_text(b64.trim_end_matches('=')).unwrap().as_slice(), expected.as_slice());
        for bad in ["", "abc", &hex[..62], &STANDARD.encode([1u8; 31]), &STANDARD.encode([1u8; 33])] {
            assert!(decode_key_text(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_key_file_is_created_owner_only_and_read_back_at_the_next_start() {
        let tmp = TempDir::new("key-file");
        let first = SecretBox::open_source(&SecretKeySource::DataDir, &tmp.0).unwrap();
        let path = tmp.0.join("plugin").join(KEY_FILE);
        assert_eq!(fs::read(&path).unwrap().len(), KEY_LEN);
        assert_eq!(first.origin(), format!("key file {}", path.display()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let sealed = first.seal(b"kept", b"aad").unwrap();
        let again = SecretBox::open_source(&SecretKeySource::File(path.clone()), &tmp.0).unwrap();
        assert_eq!(again.open(&sealed, b"aad").unwrap(), b"kept");
    }

    #[test]
    fn a_key_file_may_hold_the_key_as_text_and_a_bad_one_is_refused() {
        let tmp = TempDir::new("key-text");
        let path = tmp.0.join("key.txt");
        fs::write(&path, format!("{}\n", STANDARD.encode(KEY))).unwrap();
        let from_file = SecretBox::open_source(&SecretKeySource::File(path.clone()), &tmp.0).unwrap();
        let sealed = SecretBox::from_key(&KEY, "raw").seal(b"x", b"").unwrap();
        assert_eq!(from_file.open(&sealed, b"").unwrap(), b"x");

        fs::write(&path, b"too short").unwrap();
        let err = SecretBox::open_source(&SecretKeySource::File(path.clone()), &tmp.0).unwrap_err();
        assert!(matches!(err, SecretKeyError::BadFile { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
        let err = SecretBox::open_source(&SecretKeySource::Text("nope".into()), &tmp.0).unwrap_err();
        assert!(matches!(err, SecretKeyError::BadText));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
        let source = SecretKeySource::Text(hex.clone());
        let b = SecretBox::open_source(&source, Path::new("/nonexistent")).unwrap();
        let printed = format!("{source:?} {b:?}");
        assert!(!printed.contains(&hex) && printed.contains("PLUGHOST_SECRET_KEY"), "{printed}");
    }
}
