//! Keys: the ring of trusted public keys by key id, and the private keys that sign.
//!
//! On disk a key pair is `KID.private.pem` (PKCS#8, mode 0600) and `KID.public.pem` (SPKI);
//! the key id is taken from the file name, so a ring is simply a directory of public keys.
//! Rotation is adding a new pair and keeping the old public key in the ring for as long as
//! tokens signed under it should verify.
//!
//! Private key material is never logged: [`Signer`]'s `Debug` shows only its key id.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// File name ending of a private key.
pub const PRIVATE_SUFFIX: &str = ".private.pem";
/// File name ending of a public key.
pub const PUBLIC_SUFFIX: &str = ".public.pem";
/// The longest key id accepted.
pub const MAX_KID_LEN: usize = 64;

/// Why a key could not be loaded, written or named.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key id is empty, too long, or has characters other than `[A-Za-z0-9_-]`.
    #[error("invalid key id {0:?}: use 1 to {MAX_KID_LEN} characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidKid(String),
    /// A key file's name does not end in `.private.pem` / `.public.pem`, so it names no key id.
    #[error("{path}: a key file must be named KID{suffix}")]
    BadFileName { path: PathBuf, suffix: &'static str },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A key file exists where `keygen` would write; keys are never overwritten.
    #[error("{0} already exists: refusing to overwrite a key")]
    Exists(PathBuf),
    /// The file is not a PEM Ed25519 key of the expected kind (PKCS#8 private / SPKI public).
    #[error("{path}: not a PEM Ed25519 {what} key")]
    BadPem { path: PathBuf, what: &'static str },
    /// Two public keys in a ring share a key id with different key material.
    #[error("key id {0:?} appears twice in the key ring with different keys")]
    DuplicateKid(String),
}

/// Checks that `kid` is a valid key id.
pub fn validate_kid(kid: &str) -> Result<(), KeyError> {
    let ok = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidKid(kid.to_owned()))
    }
}

/// The set of public keys a verifier trusts, by key id.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: BTreeMap<String, VerifyingKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl KeyRing {
    /// An empty ring, which trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every `KID.public.pem` in `dir`; other files are ignored.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io { path: dir.to_owned(), source };
        let mut ring = KeyRing::new();
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(PUBLIC_SUFFIX)) {
                paths.push(path);
            }
        }
        // Sorted so that errors and listings come out the same on every platform.
        paths.sort();
        for path in paths {
            let kid = kid_from_path(&path, PUBLIC_SUFFIX)?;
            let pem = read_to_string(&path)?;
            let key = VerifyingKey::from_public_key_pem(&pem)
                .map_err(|_| KeyError::BadPem { path: path.clone(), what: "public" })?;
            ring.insert(kid, key)?;
        }
        Ok(ring)
    }

    /// Adds a key from its PEM (SPKI) text, e.g. one built into an application's binary.
    pub fn insert_pem(&mut self, kid: &str, pem: &str) -> Result<(), KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| KeyError::BadPem { path: PathBuf::from(format!("<{kid}>")), what: "public" })?;
        self.insert(kid.to_owned(), key)
    }

    /// Adds a key. The same key under the same id again is a no-op; a different one is an error.
    pub fn insert(&mut self, kid: String, key: VerifyingKey) -> Result<(), KeyError> {
        validate_kid(&kid)?;
        match self.keys.get(&kid) {
            Some(existing) if *existing != key => Err(KeyError::DuplicateKid(kid)),
            _ => {
                self.keys.insert(kid, key);
                Ok(())
            }
        }
    }

    /// Stops trusting a key id; tokens signed under it then get `unknown_key`.
    pub fn remove(&mut self, kid: &str) -> Option<VerifyingKey> {
        self.keys.remove(kid)
    }

    /// The key trusted under `kid`, if any.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// The key ids in the ring, in order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A private key with its key id: what signs license keys and leases.
pub struct Signer {
    kid: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh random key under `kid`, from the operating system's random source.
    pub fn generate(kid: &str) -> Result<Self, KeyError> {
        validate_kid(kid)?;
        Ok(Signer { kid: kid.to_owned(), key: SigningKey::generate(&mut rand::rngs::OsRng) })
    }

    /// Wraps an existing key.
    pub fn from_key(kid: &str, key: SigningKey) -> Result<Self, KeyError> {
        validate_kid(kid)?;
        Ok(Signer { kid: kid.to_owned(), key })
    }

    /// Loads `KID.private.pem`, taking the key id from the file name.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let kid = kid_from_path(path, PRIVATE_SUFFIX)?;
        let pem = zeroize::Zeroizing::new(read_to_string(path)?);
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| KeyError::BadPem { path: path.to_owned(), what: "PKCS#8 private" })?;
        Ok(Signer { kid, key })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key, for signing.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half as SPKI PEM text.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding an Ed25519 public key cannot fail")
    }

    /// Writes `KID.private.pem` (mode 0600) and `KID.public.pem` into `dir`, creating `dir`
    /// if needed. Refuses, writing nothing, when either file already exists.
    pub fn write_pair(&self, dir: &Path) -> Result<KeyPaths, KeyError> {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Io { path: dir.to_owned(), source })?;
        let paths = KeyPaths {
            private: dir.join(format!("{}{PRIVATE_SUFFIX}", self.kid)),
            public: dir.join(format!("{}{PUBLIC_SUFFIX}", self.kid)),
        };
        for path in [&paths.private, &paths.public] {
            if path.exists() {
                return Err(KeyError::Exists(path.clone()));
            }
        }
        let private =
            self.key.to_pkcs8_pem(LineEnding::LF).expect("encoding an Ed25519 private key cannot fail");
        write_new(&paths.private, private.as_bytes(), 0o600)?;
        if let Err(e) = write_new(&paths.public, self.public_pem().as_bytes(), 0o644) {
            // Leave no half-written pair behind.
            let _ = std::fs::remove_file(&paths.private);
            return Err(e);
        }
        Ok(paths)
    }
}

/// Where [`Signer::write_pair`] put a key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPaths {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// Takes the key id from a file named `KID<suffix>`.
pub fn kid_from_path(path: &Path, suffix: &'static str) -> Result<String, KeyError> {
    let bad = || KeyError::BadFileName { path: path.to_owned(), suffix };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    let kid = name.strip_suffix(suffix).ok_or_else(bad)?;
    validate_kid(kid)?;
    Ok(kid.to_owned())
}

fn read_to_string(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })
}

/// Creates `path` (failing if it exists) with `mode` from the first byte on, so a private key
/// is never readable by others, not even for an instant.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_owned())
        } else {
            io(e)
        }
    })?;
    // The mode given at creation is narrowed by the umask; set it exactly as well.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
