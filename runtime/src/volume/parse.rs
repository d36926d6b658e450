//! Docker's mount syntaxes: `-v SRC:DST[:OPTS]`, `--mount k=v,...` and
//! `--tmpfs DST[:OPTS]`, parsed into [`MountPoint`]s. A volume point with an empty
//! `name` is anonymous; the agent names and creates volumes afterwards.

use super::{valid_name, MountKind, MountPoint};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("invalid volume specification: '{0}'")]
    InvalidSpec(String),
    #[error("invalid mount config for type \"{kind}\": {reason}")]
    InvalidMount { kind: String, reason: String },
    #[error("invalid mode: {0}")]
    InvalidMode(String),
    #[error("invalid mount path: '{0}' mount path must be absolute")]
    NotAbsolute(String),
    #[error("invalid specification: destination can't be '/'")]
    RootDestination,
    #[error("\"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error("invalid field '{0}' must be a key=value pair")]
    BadField(String),
    #[error("unexpected key '{0}' in '{1}'")]
    UnknownKey(String, String),
    #[error("duplicate mount point: {0}")]
    Duplicate(String),
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn check_destination(d: &str) -> Result<String, ParseError> {
    if !d.starts_with('/') {
        return Err(ParseError::NotAbsolute(d.into()));
    }
    let clean = clean_path(d);
    if clean == "/" {
        return Err(ParseError::RootDestination);
    }
    Ok(clean)
}

/// Lexically cleans an absolute path (`//a/./b/` → `/a/b`); `..` cannot climb above `/`.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `-v`: `/dst` (anonymous), `name:/dst[:opts]` (named), `/src:/dst[:opts]` (bind).
pub fn parse_bind(spec: &str) -> Result<MountPoint, ParseError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] if !dst.starts_with('/') && src.starts_with('/') => ("", *src, *dst),
        [src, dst] => (*src, *dst, ""),
        [src, dst, mode] => (*src, *dst, *mode),
        _ => return Err(ParseError::InvalidSpec(spec.into())),
    };
    if dst.is_empty() {
        return Err(ParseError::InvalidSpec(spec.into()));
    }
    let destination = check_destination(dst)?;
    let mut m = MountPoint {
        destination,
        rw: true,
        mode: mode.into(),
        copy_up: true,
        ..Default::default()
    };
    let mut propagation = String::new();
    for opt in mode.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => m.rw = false,
            "rw" => m.rw = true,
            "z" | "Z" => {}
            "nocopy" => m.copy_up = false,
            p if PROPAGATIONS.contains(&p) => propagation = p.into(),
            _ => return Err(ParseError::InvalidMode(mode.into())),
        }
    }
    if src.is_empty() {
        m.kind = MountKind::Volume;
    } else if src.starts_with('/') {
        m.kind = MountKind::Bind;
        m.source = PathBuf::from(clean_path(src));
        m.propagation = if propagation.is_empty() {
            "rprivate".into()
        } else {
            propagation
        };
        m.copy_up = false;
    } else {
        if !valid_name(src) {
            return Err(ParseError::InvalidName(src.into()));
        }
        m.kind = MountKind::Volume;
        m.name = src.into();
    }
    if m.kind == MountKind::Volume && !m.propagation.is_empty() {
        return Err(ParseError::InvalidMode(mode.into()));
    }
    Ok(m)
}

fn parse_bool(kind: &str, key: &str, v: Option<&str>) -> Result<bool, ParseError> {
    match v {
        None | Some("1") | Some("true") => Ok(true),
        Some("0") | Some("false") => Ok(false),
        Some(other) => Err(ParseError::InvalidMount {
            kind: kind.into(),
            reason: format!("invalid value for {key}: {other}"),
        }),
    }
}

/// Parses a byte size with Docker's suffixes (b, k, m, g, t; case-insensitive, base 1024).
pub fn parse_bytes(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s
        .strip_suffix('b')
        .filter(|r| r.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1i64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        'b' => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    if n < 0.0 || !n.is_finite() {
        return None;
    }
    Some((n * mult as f64) as i64)
}

/// `--mount type=volume|bind|tmpfs,source=..,target=..,readonly,...`.
pub fn parse_mount(spec: &str) -> Result<MountPoint, ParseError> {
    let mut kind = "volume".to_string();
    let mut fields = Vec::new();
    for f in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (f.trim().to_ascii_lowercase(), None),
        };
        if k == "type" {
            kind = v.unwrap_or_default().to_string();
        } else {
            fields.push((k, v));
        }
    }
    let mk = match kind.as_str() {
        "volume" => MountKind::Volume,
        "bind" => MountKind::Bind,
        "tmpfs" => MountKind::Tmpfs,
        other => {
            return Err(ParseError::InvalidMount {
                kind: other.into(),
                reason: "unknown mount type".into(),
            })
        }
    };
    let mut m = MountPoint {
        kind: mk,
        rw: true,
        copy_up: mk == MountKind::Volume,
        ..Default::default()
    };
    let mut source = String::new();
    let mut target = String::new();
    let mut size = None;
    let mut mode = None;
    for (k, v) in fields {
        let need = |v: Option<&str>| {
            v.map(String::from)
                .ok_or_else(|| ParseError::BadField(k.clone()))
        };
        match k.as_str() {
            "source" | "src" => source = need(v)?,
            "target" | "destination" | "dst" => target = need(v)?,
            "readonly" | "ro" => m.rw = !parse_bool(&kind, &k, v)?,
            "volume-nocopy" if mk == MountKind::Volume => m.copy_up = !parse_bool(&kind, &k, v)?,
            "volume-driver" if mk == MountKind::Volume => {
                if need(v)? != "local" {
                    return Err(ParseError::InvalidMount {
                        kind,
                        reason: "only the local volume driver is supported".into(),
                    });
                }
            }
            "bind-propagation" if mk == MountKind::Bind => {
                let p = need(v)?;
                if !PROPAGATIONS.contains(&p.as_str()) {
                    return Err(ParseError::InvalidMount {
                        kind,
                        reason: format!("invalid propagation mode: {p}"),
                    });
                }
                m.propagation = p;
            }
            "consistency" => {}
            "tmpfs-size" if mk == MountKind::Tmpfs => {
                let s = need(v)?;
                size = Some(parse_bytes(&s).ok_or_else(|| ParseError::InvalidMount {
                    kind: kind.clone(),
                    reason: format!("invalid tmpfs-size: {s}"),
                })?);
            }
            "tmpfs-mode" if mk == MountKind::Tmpfs => {
                let s = need(v)?;
                let n = u32::from_str_radix(&s, 8).map_err(|_| ParseError::InvalidMount {
                    kind: kind.clone(),
                    reason: format!("invalid tmpfs-mode: {s}"),
                })?;
                mode = Some(n);
            }
            _ => return Err(ParseError::UnknownKey(k, spec.into())),
        }
    }
    if target.is_empty() {
        return Err(ParseError::InvalidMount {
            kind,
            reason: "field Target must not be empty".into(),
        });
    }
    m.destination = check_destination(&target)?;
    match mk {
        MountKind::Bind => {
            if source.is_empty() {
                return Err(ParseError::InvalidMount {
                    kind,
                    reason: "field Source must not be empty".into(),
                });
            }
            if !source.starts_with('/') {
                return Err(ParseError::InvalidMount {
                    kind,
                    reason: format!("invalid mount path: '{source}' mount path must be absolute"),
                });
            }
            m.source = PathBuf::from(clean_path(&source));
            if m.propagation.is_empty() {
                m.propagation = "rprivate".into();
            }
        }
        MountKind::Volume => {
            if !source.is_empty() && !valid_name(&source) {
                return Err(ParseError::InvalidName(source));
            }
            m.name = source;
        }
        MountKind::Tmpfs => {
            if !source.is_empty() {
                return Err(ParseError::InvalidMount {
                    kind,
                    reason: "field Source must not be specified".into(),
                });
            }
            m.options = vec!["nosuid".into(), "nodev".into()];
            if let Some(s) = size {
                m.options.push(format!("size={s}"));
            }
            m.options.push(format!("mode={:o}", mode.unwrap_or(0o1777)));
        }
    }
    Ok(m)
}

/// `--tmpfs /dst[:opts]`: Docker's defaults are `noexec,nosuid,nodev`, mode 1777.
pub fn parse_tmpfs(spec: &str) -> Result<MountPoint, ParseError> {
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let destination = check_destination(dst)?;
    let mut options: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    let mut rw = true;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let flip = |opts: &mut Vec<String>, off: &str, on: &str| {
            opts.retain(|x| x != off);
            if !opts.iter().any(|x| x == on) {
                opts.push(on.to_string());
            }
        };
        match o {
            "ro" => rw = false,
            "rw" => rw = true,
            "exec" => flip(&mut options, "noexec", "exec"),
            "suid" => flip(&mut options, "nosuid", "suid"),
            "dev" => flip(&mut options, "nodev", "dev"),
            "noexec" | "nosuid" | "nodev" => {
                if !options.iter().any(|x| x == o) {
                    options.push(o.into());
                }
            }
            o if o.starts_with("size=") => {
                let v = &o[5..];
                let n = parse_bytes(v).ok_or_else(|| ParseError::InvalidMount {
                    kind: "tmpfs".into(),
                    reason: format!("invalid size: {v}"),
                })?;
                options.retain(|x| !x.starts_with("size="));
                options.push(format!("size={n}"));
            }
            o if o.starts_with("mode=")
                || o.starts_with("uid=")
                || o.starts_with("gid=")
                || o.starts_with("nr_inodes=") =>
            {
                options.push(o.into())
            }
            other => {
                return Err(ParseError::InvalidMount {
                    kind: "tmpfs".into(),
                    reason: format!("unknown option {other}"),
                })
            }
        }
    }
    if !options.iter().any(|o| o.starts_with("mode=")) {
        options.push("mode=1777".into());
    }
    Ok(MountPoint {
        kind: MountKind::Tmpfs,
        destination,
        rw,
        mode: opts.into(),
        options,
        ..Default::default()
    })
}

/// Checks that no two mount points share a destination.
pub fn check_duplicates(mounts: &[MountPoint]) -> Result<(), ParseError> {
    let mut seen = std::collections::HashSet::new();
    for m in mounts {
        if !seen.insert(m.destination.as_str()) {
            return Err(ParseError::Duplicate(m.destination.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_v_forms() {
        let a = parse_bind("/data").expect("anon");
        assert_eq!(
            (a.kind, a.name.as_str(), a.destination.as_str(), a.rw),
            (MountKind::Volume, "", "/data", true)
        );
        let n = parse_bind("vol1:/srv/x:ro").expect("named");
        assert_eq!(
            (n.kind, n.name.as_str(), n.rw, n.mode.as_str()),
            (MountKind::Volume, "vol1", false, "ro")
        );
        assert!(n.copy_up);
        let b = parse_bind("/host/dir/:/in//c:rw,rshared").expect("bind");
        assert_eq!(b.kind, MountKind::Bind);
        assert_eq!(b.source, PathBuf::from("/host/dir"));
        assert_eq!(b.destination, "/in/c");
        assert_eq!(b.propagation, "rshared");
        assert!(!b.copy_up);
        assert!(!parse_bind("/data:ro").expect("anon ro").rw);
        assert!(!parse_bind("vol:/d:nocopy").expect("nocopy").copy_up);
        assert_eq!(
            parse_bind("vol:rel"),
            Err(ParseError::NotAbsolute("rel".into()))
        );
        assert_eq!(parse_bind("vol:/"), Err(ParseError::RootDestination));
        assert!(matches!(
            parse_bind("./x:/d"),
            Err(ParseError::InvalidName(_))
        ));
        assert!(matches!(
            parse_bind("vol:/d:bogus"),
            Err(ParseError::InvalidMode(_))
        ));
        assert!(parse_bind("a:b:c:d").is_err());
    }

    #[test]
    fn mount_flag_forms() {
        let v = parse_mount("type=volume,source=v1,target=/data,readonly").expect("vol");
        assert_eq!(
            (v.kind, v.name.as_str(), v.rw),
            (MountKind::Volume, "v1", false)
        );
        let b = parse_mount("type=bind,src=/tmp,dst=/mnt,bind-propagation=rslave").expect("bind");
        assert_eq!(
            (b.kind, b.propagation.as_str()),
            (MountKind::Bind, "rslave")
        );
        let t =
            parse_mount("type=tmpfs,target=/cache,tmpfs-size=1m,tmpfs-mode=700").expect("tmpfs");
        assert_eq!(
            t.options,
            vec!["nosuid", "nodev", "size=1048576", "mode=700"]
        );
        assert!(
            !parse_mount("target=/x,volume-nocopy")
                .expect("nocopy")
                .copy_up
        );
        assert!(parse_mount("type=bind,target=/x").is_err());
        assert!(parse_mount("type=tmpfs,source=x,target=/x").is_err());
        assert!(parse_mount("type=nfs,target=/x").is_err());
        assert!(parse_mount("type=volume,source=v").is_err());
        assert!(matches!(
            parse_mount("target=/x,bogus=1"),
            Err(ParseError::UnknownKey(..))
        ));
    }

    #[test]
    fn tmpfs_flag_defaults() {
        let t = parse_tmpfs("/run").expect("tmpfs");
        assert_eq!(t.options, vec!["noexec", "nosuid", "nodev", "mode=1777"]);
        let t = parse_tmpfs("/run:exec,size=64m,mode=755").expect("tmpfs");
        assert_eq!(
            t.options,
            vec!["nosuid", "nodev", "exec", "size=67108864", "mode=755"]
        );
        assert!(parse_tmpfs("rel").is_err());
    }

    #[test]
    fn sizes_and_paths() {
        assert_eq!(parse_bytes("500m"), Some(500 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("10kb"), Some(10 << 10));
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("1.5k"), Some(1536));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(clean_path("/a/../../b/./c/"), "/b/c");
        let dup = vec![
            parse_bind("/a").expect("a"),
            parse_bind("vol:/a").expect("b"),
        ];
        assert!(check_duplicates(&dup).is_err());
    }
}
