//! Image references (`NAME[:TAG][@DIGEST]`) normalised the way Docker normalises them:
//! `busybox` is `docker.io/library/busybox:latest`, shown as `busybox:latest`.

use crate::digest::{Digest, InvalidDigest};
use std::fmt;

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path, e.g. `library/busybox`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReferenceError {
    #[error("invalid reference format: {0:?} is empty")]
    Empty(String),
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: {0:?}")]
    Invalid(String),
    #[error("invalid reference format: {0:?}: {1}")]
    Digest(String, InvalidDigest),
}

impl Reference {
    /// Parses and normalises a reference; a missing tag (and digest) means `latest`.
    ///
    /// distribution's grammar and `ParseNormalizedNamed`: the first path component is a
    /// registry when it has a `.` or `:`, is `localhost`, or has an uppercase letter;
    /// else the registry is `docker.io`, where a one-component name gets `library/`;
    /// `index.docker.io` is `docker.io`. A reference that would be valid in lowercase
    /// is reported as an uppercase name, as Docker does; the store takes sha256 digests
    /// only.
    ///
    /// Hand-written rather than oci-spec's `distribution::Reference`: that compiles the
    /// grammar into one regex whose automaton took 4-5 MB of every agent's memory for
    /// the life of the process.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty(s.into()));
        }
        match Self::parse_exact(s) {
            Err(ReferenceError::Invalid(_))
                if Self::parse_exact(&s.to_ascii_lowercase()).is_ok() =>
            {
                Err(ReferenceError::Uppercase(s.into()))
            }
            r => r,
        }
    }

    fn parse_exact(s: &str) -> Result<Self, ReferenceError> {
        let invalid = || ReferenceError::Invalid(s.into());
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d)),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if name.is_empty() || !tag.is_none_or(valid_tag) {
            return Err(invalid());
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first, rest)
            }
            _ => (DEFAULT_DOMAIN, name),
        };
        if !valid_domain(domain) || !path.split('/').all(valid_path_component) {
            return Err(invalid());
        }
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        // Docker checks the length of the normalised name.
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(invalid());
        }
        let digest = digest
            .map(|d| {
                if !valid_digest_syntax(d) {
                    return Err(invalid());
                }
                Digest::parse(d).map_err(|e| ReferenceError::Digest(s.into(), e))
            })
            .transpose()?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain: domain.to_string(),
            path,
            tag,
            digest,
        })
    }

    /// The repository as Docker shows it: `busybox`, `example.com/team/app`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// Fully qualified repository: `docker.io/library/busybox`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `familiar_name:tag`, the key under which tags are stored.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.familiar_name()))
    }
}

/// A normalised name (`registry/path`) is at most this long.
const NAME_MAX: usize = 255;

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `host[:port]`: host a dotted name of `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
/// components, or an IPv6 address in brackets; port digits.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(v6) = d.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after.strip_prefix(':') {
            Some(port) => ("", Some(port)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
    };
    (d.starts_with('[') || host.split('.').all(component))
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Between runs of [a-z0-9]: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `algorithm:encoded`: algorithm `[a-z0-9]+([+._-][a-z0-9]+)*`, encoded
/// `[a-zA-Z0-9=_-]+` (which algorithms the store takes is [`Digest::parse`]'s part).
fn valid_digest_syntax(d: &str) -> bool {
    let Some((alg, enc)) = d.split_once(':') else {
        return false;
    };
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    !alg.is_empty()
        && alg
            .split(['+', '.', '_', '-'])
            .all(|p| !p.is_empty() && p.bytes().all(alnum))
        && !enc.is_empty()
        && enc
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || x == b'=' || x == b'_' || x == b'-')
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.familiar_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = Reference::parse("busybox").expect("parse");
        assert_eq!(r.full_name(), "docker.io/library/busybox");
        assert_eq!(r.tagged().as_deref(), Some("busybox:latest"));
        let r = Reference::parse("localhost:5000/team/app:v1").expect("parse");
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.tagged().as_deref(), Some("localhost:5000/team/app:v1"));
        let r = Reference::parse("docker.io/library/busybox:1.36").expect("parse");
        assert_eq!(r.to_string(), "busybox:1.36");
        let r = Reference::parse("user/app").expect("parse");
        assert_eq!(r.full_name(), "docker.io/user/app");
        let r = Reference::parse("index.docker.io/busybox").expect("parse");
        assert_eq!(r.to_string(), "busybox:latest");
        let r = Reference::parse("localhost/app").expect("parse");
        assert_eq!(r.full_name(), "localhost/app");
        let r = Reference::parse("test.com:5000").expect("parse");
        assert_eq!(r.full_name(), "docker.io/library/test.com");
        assert_eq!(r.tag.as_deref(), Some("5000"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("example.com:5000/a/b@{d}")).expect("parse");
        assert_eq!(
            (r.tag, r.digest.map(|d| d.to_string())),
            (None, Some(d.clone()))
        );
        let r = Reference::parse(&format!("app:v2@{d}")).expect("parse");
        assert_eq!(r.to_string(), format!("app:v2@{d}"));
        // A first component with an uppercase letter is a registry (splitDockerDomain).
        let r = Reference::parse("Registry/app").expect("parse");
        assert_eq!((r.domain.as_str(), r.path.as_str()), ("Registry", "app"));
        let r = Reference::parse("[::1]:5000/a/b:c").expect("parse");
        assert_eq!(r.tagged().as_deref(), Some("[::1]:5000/a/b:c"));
        let r = Reference::parse("a_b-c/e__f.g---h").expect("parse");
        assert_eq!(r.full_name(), "docker.io/a_b-c/e__f.g---h");
    }

    #[test]
    fn rejects_bad_references() {
        assert!(matches!(
            Reference::parse("BusyBox"),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("a:-bad").is_err());
        assert!(Reference::parse("a/../b").is_err());
        assert!(Reference::parse("a@sha256:xyz").is_err());
        assert!(Reference::parse(&format!("a@sha512:{}", "a".repeat(128))).is_err());
        assert!(Reference::parse(&format!("a@sha256:{}", "A".repeat(64))).is_err());
        assert!(Reference::parse("a//b").is_err());
        assert!(Reference::parse(&"a".repeat(300)).is_err());
        // The normalised name counts: docker.io/library/ + 237 is 255.
        assert!(Reference::parse(&"a".repeat(237)).is_ok());
        assert!(Reference::parse(&"a".repeat(238)).is_err());
        for bad in [
            ":a",
            "@a",
            "a:",
            "a@",
            "exa_mple.com/a",
            "-x.io/a",
            "x.io:/a",
            "a._b",
            "a/b/",
        ] {
            assert!(
                matches!(Reference::parse(bad), Err(ReferenceError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
