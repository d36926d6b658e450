//! Registry credentials: the `WWW-Authenticate` challenge parser, and the client-side
//! credential file (`login` / `logout`).
//!
//! The file uses Docker's `config.json` shape (`{"auths":{"HOST":{"auth":"base64(user:pass)"}}}`)
//! and is written 0600 in a 0700 directory. Credentials are keyed by registry host and
//! are only ever handed to a request for that host (see [`CredentialFile::get`]).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Docker Hub's registry, as credentials are keyed for it (Docker's own key).
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A username and password (or identity token as the password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `base64(user:pass)`, as in `Authorization: Basic` and config.json `auth`.
    pub fn basic(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }

    /// Parses the `auth` field of config.json.
    pub fn from_basic(s: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        Some(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: String,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic {
            realm: params.get("realm").cloned().unwrap_or_default(),
        }),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm").cloned()?,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `k="v", k2=v2` (quoted values may contain commas and escaped quotes).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            return out;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid credential file: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Anything else a user keeps there survives our rewrites.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    auth: String,
}

/// The key credentials are stored under for a registry host (Docker's convention).
pub fn credential_key(registry: &str) -> String {
    let host = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = host
        .strip_suffix("/v1")
        .or_else(|| host.strip_suffix("/v2"))
        .unwrap_or(host);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB_KEY.into(),
        h => h.to_string(),
    }
}

/// The client's credential file.
pub struct CredentialFile {
    path: PathBuf,
}

impl CredentialFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `$SKIFF_CONFIG/config.json`, else `~/.skiff/config.json`.
    pub fn default_path() -> PathBuf {
        let dir = std::env::var_os("SKIFF_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".skiff")))
            .unwrap_or_else(|| PathBuf::from("/root/.skiff"));
        dir.join("config.json")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<ConfigFile, CredentialError> {
        match std::fs::read(&self.path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|source| CredentialError::Parse {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(source) => Err(CredentialError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, cfg: &ConfigFile) -> Result<(), CredentialError> {
        let io = |source| CredentialError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            crate::fsutil::create_dir_mode(dir, 0o700).map_err(io)?;
        }
        let raw = serde_json::to_vec_pretty(cfg).map_err(|e| io(std::io::Error::other(e)))?;
        // Written 0600 from the first byte: the temp file is created with that mode.
        let tmp = self
            .path
            .with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
        let res = (|| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&raw)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map_err(io)
    }

    /// Credentials for exactly this registry host, if stored.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        let cfg = self.read()?;
        Ok(cfg
            .auths
            .get(&credential_key(registry))
            .and_then(|e| Credentials::from_basic(&e.auth)))
    }

    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<(), CredentialError> {
        let mut cfg = self.read()?;
        cfg.auths.insert(
            credential_key(registry),
            AuthEntry {
                auth: creds.basic(),
            },
        );
        self.write(&cfg)
    }

    /// Removes the entry; returns whether there was one.
    pub fn remove(&self, registry: &str) -> Result<bool, CredentialError> {
        let mut cfg = self.read()?;
        let had = cfg.auths.remove(&credential_key(registry)).is_some();
        if had {
            self.write(&cfg)?;
        }
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: "Registry Realm".into()
            })
        );
        // A scope with several actions contains a comma inside the quotes.
        let c =
            parse_challenge(r#"Bearer scope="repository:a/b:pull,push", realm=https://x/token"#);
        assert!(
            matches!(c, Some(Challenge::Bearer { scope: Some(s), realm, .. }) if s == "repository:a/b:pull,push" && realm == "https://x/token")
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(
            parse_challenge("Bearer service=x"),
            None,
            "a bearer challenge needs a realm"
        );
    }

    #[test]
    fn credential_file_is_private_and_host_scoped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = CredentialFile::new(dir.path().join("cfg/config.json"));
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        f.store("127.0.0.1:5000", &c).expect("store");
        let mode = std::fs::metadata(f.path())
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(f.get("127.0.0.1:5000").expect("get"), Some(c.clone()));
        assert_eq!(
            f.get("127.0.0.1:5001").expect("get"),
            None,
            "other port, other host"
        );
        assert_eq!(f.get("docker.io").expect("get"), None);
        f.store("docker.io", &c).expect("store hub");
        assert_eq!(f.get("index.docker.io").expect("get"), Some(c));
        assert!(f.remove("127.0.0.1:5000").expect("rm"));
        assert!(!f.remove("127.0.0.1:5000").expect("rm again"));
        assert!(format!(
            "{:?}",
            Credentials {
                username: "a".into(),
                password: "secret".into()
            }
        )
        .find("secret")
        .is_none());
    }
}
