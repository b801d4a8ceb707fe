//! Keys: the ring of trusted public keys by key id, and the private keys that sign.
//!
//! One key, one role: every key is either a *license* key (the vendor's, signing `LIC1.`
//! license keys) or a *lease* key (the license server's, signing `LEASE1.` answers). A ring
//! trusts each key for its role only, so the lease key, which lives on an internet-facing
//! server, can never mint a license, and the vendor's key never signs an answer.
//!
//! On disk a key pair is `KID.ROLE.private.pem` (PKCS#8 v1, mode 0600, which OpenSSL and
//! Python's `cryptography` read) and `KID.ROLE.public.pem` (SPKI), with `ROLE` `license` or
//! `lease`; key id and role are taken from the file name, so a ring is simply a directory of
//! public keys. A file of the old layout (`KID.public.pem`, no role) is refused with a message
//! saying how to rename it: trusting it for both roles is what this layout exists to prevent.
//! Rotation is adding a new pair and keeping the old public key in the ring for as long as
//! tokens signed under it should verify.
//!
//! Private key material is never logged: [`Signer`]'s `Debug` shows only its key id and role.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// File name ending of a private key (after `KID.ROLE`).
pub const PRIVATE_SUFFIX: &str = ".private.pem";
/// File name ending of a public key (after `KID.ROLE`).
pub const PUBLIC_SUFFIX: &str = ".public.pem";

/// What a key is trusted to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The vendor's issuing key: signs license keys (`LIC1.`).
    License,
    /// The license server's key: signs its answers (`LEASE1.`).
    Lease,
}

impl Role {
    /// Both roles.
    pub const ALL: [Role; 2] = [Role::License, Role::Lease];

    /// The role's name, as file names and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::License => "license",
            Role::Lease => "lease",
        }
    }

    /// Reads a role from its name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
/// The longest key id accepted.
pub const MAX_KID_LEN: usize = 64;

/// Why a key could not be loaded, written or named.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key id is empty, too long, or has characters other than `[A-Za-z0-9_-]`.
    #[error("invalid key id {0:?}: use 1 to {MAX_KID_LEN} characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidKid(String),
    /// A key file's name is not `KID.ROLE.private.pem` / `KID.ROLE.public.pem`.
    #[error("{path}: a key file must be named KID.ROLE{suffix}, with ROLE license or lease")]
    BadFileName { path: PathBuf, suffix: &'static str },
    /// A key file of the old layout, `KID.public.pem` or `KID.private.pem`, which names no
    /// role. It is never trusted for both: the operator renames it to say which one.
    #[error(
        "{path}: this key file names no role (the layout before roles). Rename it to {kid}.license{suffix} \
         if it signs license keys (the vendor's issuing key), or to {kid}.lease{suffix} if it signs the \
         license server's answers (its lease key); see keys/README.md"
    )]
    NoRole { path: PathBuf, kid: String, suffix: &'static str },
    /// The same key material is in the ring under two roles: one key, one role.
    #[error("key {0:?} and key {1:?} are the same key under two roles; a key has exactly one role")]
    TwoRoles(String, String),
    /// A key of one role was given where the other is needed.
    #[error("key {kid:?} is a {found} key, but a {expected} key is needed here")]
    WrongRole { kid: String, expected: Role, found: Role },
    /// A file or directory could not be read or written.
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A key file exists where `keygen` would write; keys are never overwritten.
    #[error("{0} already exists: refusing to overwrite a key")]
    Exists(PathBuf),
    /// The file is not a PEM Ed25519 key of the expected kind (PKCS#8 private / SPKI public).
    #[error("{path}: not a PEM Ed25519 {what} key")]
    BadPem { path: PathBuf, what: &'static str },
    /// Two public keys in a ring share a key id with different key material or roles.
    #[error("key id {0:?} appears twice in the key ring with different keys or roles")]
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

/// The set of public keys a verifier trusts, by key id, each for one role.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: BTreeMap<String, (VerifyingKey, Role)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<String> = self.keys.iter().map(|(kid, (_, role))| format!("{kid} ({role})")).collect();
        f.debug_struct("KeyRing").field("kids", &kids).finish()
    }
}

impl KeyRing {
    /// An empty ring, which trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every `KID.ROLE.public.pem` in `dir`; other files are ignored, and a public key
    /// of the old layout (`KID.public.pem`) is an error naming the file.
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
            let (kid, role) = kid_and_role_from_path(&path, PUBLIC_SUFFIX)?;
            let pem = read_to_string(&path)?;
            let key = VerifyingKey::from_public_key_pem(&pem)
                .map_err(|_| KeyError::BadPem { path: path.clone(), what: "public" })?;
            ring.insert(kid, role, key)?;
        }
        Ok(ring)
    }

    /// Adds a key from its PEM (SPKI) text, e.g. one built into an application's binary.
    pub fn insert_pem(&mut self, kid: &str, role: Role, pem: &str) -> Result<(), KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| KeyError::BadPem { path: PathBuf::from(format!("<{kid}>")), what: "public" })?;
        self.insert(kid.to_owned(), role, key)
    }

    /// Adds a key for `role`. The same key under the same id and role again is a no-op; a
    /// different key or role under that id is an error, and so is the same key material under
    /// another role.
    pub fn insert(&mut self, kid: String, role: Role, key: VerifyingKey) -> Result<(), KeyError> {
        validate_kid(&kid)?;
        if let Some((other, _)) = self.keys.iter().find(|(k, (v, r))| *v == key && *r != role && **k != kid) {
            return Err(KeyError::TwoRoles(other.clone(), kid));
        }
        match self.keys.get(&kid) {
            Some(existing) if *existing != (key, role) => Err(KeyError::DuplicateKid(kid)),
            _ => {
                self.keys.insert(kid, (key, role));
                Ok(())
            }
        }
    }

    /// Stops trusting a key id; tokens signed under it then get `unknown_key`.
    pub fn remove(&mut self, kid: &str) -> Option<VerifyingKey> {
        self.keys.remove(kid).map(|(key, _)| key)
    }

    /// The key trusted under `kid` for `role`, if any: a key of the other role is not
    /// returned, so it can never verify a token of this role.
    pub fn get(&self, kid: &str, role: Role) -> Option<&VerifyingKey> {
        self.keys.get(kid).filter(|(_, r)| *r == role).map(|(key, _)| key)
    }

    /// The role `kid` is trusted for, if it is in the ring.
    pub fn role(&self, kid: &str) -> Option<Role> {
        self.keys.get(kid).map(|(_, role)| *role)
    }

    /// The key ids in the ring, in order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Every key with its id and role, the key as SPKI PEM text, in id order: what a ring
    /// built into an application looks like written down (a deployment records the ring it
    /// trusted, for its operator's commands to show).
    pub fn to_pem(&self) -> Vec<(String, Role, String)> {
        self.keys
            .iter()
            .map(|(kid, (key, role))| {
                let pem = key
                    .to_public_key_pem(LineEnding::LF)
                    .expect("encoding an Ed25519 public key cannot fail");
                (kid.clone(), *role, pem)
            })
            .collect()
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

/// A private key with its key id and role: what signs license keys (role `license`) or the
/// server's answers (role `lease`).
pub struct Signer {
    kid: String,
    role: Role,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh random key under `kid` for `role`, from the operating system's random source.
    pub fn generate(kid: &str, role: Role) -> Result<Self, KeyError> {
        validate_kid(kid)?;
        Ok(Signer { kid: kid.to_owned(), role, key: SigningKey::generate(&mut rand::rngs::OsRng) })
    }

    /// Wraps an existing key.
    pub fn from_key(kid: &str, role: Role, key: SigningKey) -> Result<Self, KeyError> {
        validate_kid(kid)?;
        Ok(Signer { kid: kid.to_owned(), role, key })
    }

    /// Loads `KID.ROLE.private.pem`, taking the key id and role from the file name.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let (kid, role) = kid_and_role_from_path(path, PRIVATE_SUFFIX)?;
        let pem = zeroize::Zeroizing::new(read_to_string(path)?);
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| KeyError::BadPem { path: path.to_owned(), what: "PKCS#8 private" })?;
        Ok(Signer { kid, role, key })
    }

    /// Loads a key that must have `role`.
    pub fn load_for(path: &Path, role: Role) -> Result<Self, KeyError> {
        let signer = Signer::load(path)?;
        signer.require(role)?;
        Ok(signer)
    }

    /// Checks that this key has `role`.
    pub fn require(&self, role: Role) -> Result<(), KeyError> {
        if self.role == role {
            Ok(())
        } else {
            Err(KeyError::WrongRole { kid: self.kid.clone(), expected: role, found: self.role })
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// What this key signs.
    pub fn role(&self) -> Role {
        self.role
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

    /// Writes `KID.ROLE.private.pem` (mode 0600) and `KID.ROLE.public.pem` into `dir`,
    /// creating `dir` if needed. Refuses, writing nothing, when either file already exists.
    pub fn write_pair(&self, dir: &Path) -> Result<KeyPaths, KeyError> {
        self.write_split(dir, dir)
    }

    /// Writes the private key into `private_dir` (created 0700 if needed) and the public key
    /// into `public_dir`, so that a directory of trusted public keys holds no secret.
    pub fn write_split(&self, private_dir: &Path, public_dir: &Path) -> Result<KeyPaths, KeyError> {
        for dir in [private_dir, public_dir] {
            create_dir(dir, dir == private_dir && private_dir != public_dir)?;
        }
        let paths = KeyPaths {
            private: private_dir.join(format!("{}.{}{PRIVATE_SUFFIX}", self.kid, self.role)),
            public: public_dir.join(format!("{}.{}{PUBLIC_SUFFIX}", self.kid, self.role)),
        };
        for path in [&paths.private, &paths.public] {
            if path.exists() {
                return Err(KeyError::Exists(path.clone()));
            }
        }
        let private = self.private_pem();
        write_new(&paths.private, private.as_bytes(), 0o600)?;
        if let Err(e) = write_new(&paths.public, self.public_pem().as_bytes(), 0o644) {
            // Leave no half-written pair behind.
            let _ = std::fs::remove_file(&paths.private);
            return Err(e);
        }
        Ok(paths)
    }
}

impl Signer {
    /// The private key as PKCS#8 v1 PEM (RFC 8410: the seed alone, no public key). The v2 form
    /// that `to_pkcs8_pem` writes adds the public key, which OpenSSL 3 and Python's
    /// `cryptography` refuse as "extra data"; v1 is what every tool reads.
    fn private_pem(&self) -> zeroize::Zeroizing<String> {
        use ed25519_dalek::pkcs8::KeypairBytes;
        let bytes = KeypairBytes { secret_key: self.key.to_bytes(), public_key: None };
        let pem = bytes.to_pkcs8_pem(LineEnding::LF).expect("encoding an Ed25519 private key cannot fail");
        zeroize::Zeroizing::new(pem.to_string())
    }
}

/// Where [`Signer::write_pair`] put a key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPaths {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// Takes the key id and role from a file named `KID.ROLE<suffix>`.
pub fn kid_and_role_from_path(path: &Path, suffix: &'static str) -> Result<(String, Role), KeyError> {
    let bad = || KeyError::BadFileName { path: path.to_owned(), suffix };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    let stem = name.strip_suffix(suffix).ok_or_else(bad)?;
    let Some((kid, role)) = stem.rsplit_once('.') else {
        validate_kid(stem)?;
        return Err(KeyError::NoRole { path: path.to_owned(), kid: stem.to_owned(), suffix });
    };
    validate_kid(kid)?;
    let role = Role::parse(role).ok_or_else(bad)?;
    Ok((kid.to_owned(), role))
}

/// Creates a directory (and its parents); a directory for private keys is made 0700.
fn create_dir(dir: &Path, private: bool) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
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
