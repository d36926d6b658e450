//! Typed reads of YAML nodes, each failing with the node's position and field path.
//! Values are cast the way Compose does after interpolation: `"3"` is an integer
//! where an integer is expected, and `3` is a string where a string is expected.

use crate::error::{Diag, Result};
use crate::yaml::{Key, Node, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How a key of a mapping is treated.
#[derive(Clone, Copy, Debug)]
pub(crate) enum K {
    /// Understood.
    Ok,
    /// In the Compose spec but meaningless for a stack: one warning, then ignored.
    Warn(&'static str),
}

/// `a.b` path join.
pub(crate) fn sub(f: &str, k: &str) -> String {
    if f.is_empty() {
        k.to_string()
    } else {
        format!("{f}.{k}")
    }
}

pub(crate) fn idx(f: &str, i: usize) -> String {
    format!("{f}[{i}]")
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The entries of a mapping (null counts as empty), after checking every key against
/// `spec`: unknown keys are errors (with a "did you mean"), `x-` keys are ignored.
pub(crate) fn fields<'n>(
    diag: &mut Diag,
    n: &'n Node,
    f: &str,
    spec: &[(&str, K)],
) -> Result<&'n [(Key, Node)]> {
    let entries: &[(Key, Node)] = match &n.value {
        Value::Map(m) => m,
        Value::Null => &[],
        _ => {
            return Err(diag.invalid(
                n.pos,
                f,
                format!("expected a mapping, found {}", n.describe()),
            ))
        }
    };
    for (k, _) in entries {
        if k.name.starts_with("x-") {
            continue;
        }
        let path = sub(f, &k.name);
        match spec.iter().find(|(name, _)| *name == k.name) {
            Some((_, K::Ok)) => {}
            Some((_, K::Warn(why))) => diag.warn(
                k.pos,
                &path,
                format!("ignoring unsupported option {}{why}", k.name),
            ),
            None => {
                let close = spec
                    .iter()
                    .map(|(name, _)| *name)
                    .find(|name| distance(name, &k.name) <= 2);
                let hint = close
                    .map(|c| format!(" (did you mean {c:?}?)"))
                    .unwrap_or_default();
                return Err(diag.invalid(k.pos, &path, format!("unknown key {:?}{hint}", k.name)));
            }
        }
    }
    Ok(entries)
}

pub(crate) fn get<'n>(entries: &'n [(Key, Node)], key: &str) -> Option<&'n Node> {
    entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
}

/// `get`, treating an explicit null like an absent key.
pub(crate) fn get_some<'n>(entries: &'n [(Key, Node)], key: &str) -> Option<&'n Node> {
    get(entries, key).filter(|n| n.value != Value::Null)
}

fn expected(diag: &Diag, n: &Node, f: &str, what: &str) -> crate::error::StackError {
    diag.invalid(n.pos, f, format!("expected {what}, found {}", n.describe()))
}

/// A scalar's text (numbers and booleans included).
pub(crate) fn scalar<'n>(diag: &Diag, n: &'n Node, f: &str, what: &str) -> Result<&'n str> {
    match &n.value {
        Value::Str { text, .. } => Ok(text),
        _ => Err(expected(diag, n, f, what)),
    }
}

pub(crate) fn string(diag: &Diag, n: &Node, f: &str) -> Result<String> {
    scalar(diag, n, f, "a string").map(str::to_string)
}

pub(crate) fn opt_string(diag: &Diag, n: Option<&Node>, f: &str) -> Result<Option<String>> {
    match n {
        None => Ok(None),
        Some(n) if n.value == Value::Null => Ok(None),
        Some(n) => string(diag, n, f).map(Some),
    }
}

pub(crate) fn uint(diag: &Diag, n: &Node, f: &str) -> Result<u64> {
    let t = scalar(diag, n, f, "an integer")?;
    match t.trim().parse::<u64>() {
        Ok(v) => Ok(v),
        Err(_) if t.trim().parse::<i128>().is_ok() => {
            Err(expected(diag, n, f, "a non-negative integer"))
        }
        Err(_) => Err(expected(diag, n, f, "an integer")),
    }
}

pub(crate) fn int(diag: &Diag, n: &Node, f: &str) -> Result<i64> {
    let t = scalar(diag, n, f, "an integer")?;
    t.trim()
        .parse::<i64>()
        .map_err(|_| expected(diag, n, f, "an integer"))
}

pub(crate) fn float(diag: &Diag, n: &Node, f: &str) -> Result<f64> {
    let t = scalar(diag, n, f, "a number")?;
    match t.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(expected(diag, n, f, "a number")),
    }
}

pub(crate) fn boolean(diag: &mut Diag, n: &Node, f: &str) -> Result<bool> {
    let t = scalar(diag, n, f, "a boolean")?;
    // YAML 1.2 has only true/false; compose-go still takes YAML 1.1's spellings in
    // boolean fields, with a warning, so files written for docker-compose v1 load.
    let lower = t.trim().to_ascii_lowercase();
    match lower.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        "y" | "yes" | "on" | "n" | "no" | "off" => {
            let v = matches!(lower.as_str(), "y" | "yes" | "on");
            diag.warn(
                n.pos,
                f,
                format!("{t:?} for boolean is not supported by YAML 1.2, please use `{v}`"),
            );
            Ok(v)
        }
        _ => Err(expected(diag, n, f, "a boolean (true or false)")),
    }
}

pub(crate) fn duration(diag: &Diag, n: &Node, f: &str) -> Result<Duration> {
    let t = scalar(diag, n, f, "a duration")?;
    crate::spec::parse_go_duration(t).map_err(|m| diag.invalid(n.pos, f, m))
}

/// Bytes with Docker's units: `512m`, `1g`, `1.5GiB`, `100k`, or a plain integer.
pub(crate) fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("invalid size {s:?} (expected e.g. 512m, 1g, or a number of bytes)");
    let t = s.trim();
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let num: f64 = t[..num_len].parse().map_err(|_| bad())?;
    let unit = t[num_len..].trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let v = num * mult;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

pub(crate) fn bytes(diag: &Diag, n: &Node, f: &str) -> Result<u64> {
    let t = scalar(diag, n, f, "a size")?;
    parse_bytes(t).map_err(|m| diag.invalid(n.pos, f, m))
}

/// A file mode: YAML 1.1 octal (`0440`, Docker's reading), `0o440`, or decimal.
pub(crate) fn file_mode(diag: &Diag, n: &Node, f: &str) -> Result<u32> {
    let t = scalar(diag, n, f, "a file mode")?.trim();
    let parsed = if let Some(o) = t.strip_prefix("0o") {
        u32::from_str_radix(o, 8)
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8)
    } else {
        t.parse::<u32>()
    };
    match parsed {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(expected(diag, n, f, "a file mode such as 0440")),
    }
}

/// A sequence of scalars, or (when `single` is true) one scalar standing for a
/// one-item list.
pub(crate) fn str_list(diag: &Diag, n: &Node, f: &str, single: bool) -> Result<Vec<String>> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, it)| scalar(diag, it, &idx(f, i), "a string").map(str::to_string))
            .collect(),
        Value::Str { text, .. } if single => Ok(vec![text.clone()]),
        Value::Null => Ok(Vec::new()),
        _ => Err(expected(
            diag,
            n,
            f,
            if single {
                "a string or a list of strings"
            } else {
                "a list of strings"
            },
        )),
    }
}

/// A key/value collection written as a mapping or as a list of `KEY=VALUE` strings
/// (`KEY` alone gives a `None` value). Later duplicates override earlier ones.
pub(crate) fn kv(diag: &Diag, n: &Node, f: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut put = |k: String, v: Option<String>| {
        if let Some(e) = out.iter_mut().find(|(ek, _)| *ek == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    match &n.value {
        Value::Null => {}
        Value::Map(m) => {
            for (k, v) in m {
                let path = sub(f, &k.name);
                let v = match &v.value {
                    Value::Null => None,
                    Value::Str { text, .. } => Some(text.clone()),
                    _ => return Err(expected(diag, v, &path, "a string, number or boolean")),
                };
                put(k.name.clone(), v);
            }
        }
        Value::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                let t = scalar(diag, it, &idx(f, i), "a KEY=VALUE string")?;
                match t.split_once('=') {
                    Some((k, v)) => put(k.to_string(), Some(v.to_string())),
                    None => put(t.to_string(), None),
                }
            }
        }
        _ => Err(expected(
            diag,
            n,
            f,
            "a mapping or a list of KEY=VALUE strings",
        ))?,
    }
    Ok(out)
}

/// `kv` with absent values as empty strings, as labels want.
pub(crate) fn labels(diag: &Diag, n: Option<&Node>, f: &str) -> Result<BTreeMap<String, String>> {
    match n {
        None => Ok(BTreeMap::new()),
        Some(n) => Ok(kv(diag, n, f)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1gb"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert_eq!(parse_bytes("2048"), Ok(2048));
        assert_eq!(parse_bytes("100b"), Ok(100));
        assert_eq!(parse_bytes("64 MB"), Ok(64 << 20));
        for bad in ["", "lots", "1x", "-1m", "1mm"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn typo_distance() {
        assert_eq!(distance("image", "imag"), 1);
        assert_eq!(distance("replicas", "replica"), 1);
        assert!(distance("ports", "labels") > 2);
    }
}
