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
    /// The grammar and Docker's normalisation (`docker.io` and `library/` defaults, a
    /// first component with `.`, `:` or `localhost` being a registry, `index.docker.io`
    /// being Docker Hub) are oci-spec's `distribution::Reference`, a port of
    /// distribution's `ParseNormalizedNamed`. Kept here: Docker's "must be lowercase"
    /// error, which that parser reports as a plain format error, and the sha256-only
    /// digest the store needs.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        use oci_spec::distribution::{ParseError, Reference as Oci};
        if s.is_empty() {
            return Err(ReferenceError::Empty(s.into()));
        }
        let r = match Oci::try_from(s) {
            Ok(r) => r,
            Err(ParseError::NameEmpty) => return Err(ReferenceError::Empty(s.into())),
            // What distribution's ParseNamed does: a reference that would be valid in
            // lowercase is reported as an uppercase name.
            Err(ParseError::ReferenceInvalidFormat)
                if Oci::try_from(s.to_ascii_lowercase().as_str()).is_ok() =>
            {
                return Err(ReferenceError::Uppercase(s.into()))
            }
            Err(_) => return Err(ReferenceError::Invalid(s.into())),
        };
        let digest = r
            .digest()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| ReferenceError::Digest(s.into(), e))?;
        Ok(Reference {
            domain: r.registry().to_string(),
            path: r.repository().to_string(),
            tag: r.tag().map(String::from),
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
    }
}
