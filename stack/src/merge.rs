//! Merging several `-c` files, in order, with the Compose merge rules:
//! mappings merge key by key; scalars are overridden; `environment`, `labels`,
//! `sysctls`, `depends_on` and `networks` merge as mappings whichever form (list or
//! mapping) each file used; `ports` merge by port identity, `volumes` by target,
//! `secrets`/`configs` by source (the later file's entry replaces the earlier);
//! `command`, `entrypoint` and `healthcheck.test` are replaced whole; other
//! sequences (constraints, dns, cap_add...) are appended without duplicates.
//!
//! `!reset` on a value removes what the earlier file set for that key; `!override`
//! replaces it whole instead of merging.
//!
//! Merging happens on the positioned tree, so an error in the result still points
//! at the file and line that contributed the value.

use crate::yaml::{Key, Node, Tag, Value};

#[derive(Clone, Copy)]
enum Rule {
    Merge,
    /// List of `KEY=VALUE` or mapping.
    KvMap,
    /// List of names or mapping of name to options.
    NameMap,
    Keyed(fn(&Node) -> String),
    Replace,
}

/// Merges `over` into `base` (both whole files).
pub(crate) fn merge(base: Node, over: Node) -> Node {
    merge_node(base, over, &[])
}

/// Merges service `over` onto its `extends` base `base`, with the same rules.
pub(crate) fn merge_service(base: Node, over: Node, name: &str) -> Node {
    merge_node(base, over, &["services", name])
}

/// Merges a resource defined by a file (`over`) onto the one of the same name that
/// file includes (`base`): `section` is `services`, `volumes`...
pub(crate) fn merge_resource(base: Node, over: Node, section: &str, name: &str) -> Node {
    merge_node(base, over, &[section, name])
}

/// Removes the keys still tagged `!reset` once every file is merged: a reset with
/// nothing before it leaves the key unset.
pub(crate) fn strip_resets(n: &mut Node) {
    match &mut n.value {
        Value::Map(entries) => {
            entries.retain(|(k, _)| k.tag != Tag::Reset);
            for (_, v) in entries.iter_mut() {
                strip_resets(v);
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(strip_resets),
        _ => {}
    }
}

fn rule(path: &[&str]) -> Rule {
    match path {
        ["services", _, rest @ ..] => match rest {
            ["environment"] | ["labels"] | ["sysctls"] | ["deploy", "labels"] => Rule::KvMap,
            ["depends_on"] | ["networks"] => Rule::NameMap,
            ["ports"] => Rule::Keyed(port_key),
            ["volumes"] => Rule::Keyed(volume_key),
            ["secrets"] | ["configs"] => Rule::Keyed(source_key),
            ["command"] | ["entrypoint"] | ["healthcheck", "test"] => Rule::Replace,
            _ => Rule::Merge,
        },
        [_, _, "labels"] | [_, _, "driver_opts"] => Rule::KvMap,
        _ => Rule::Merge,
    }
}

fn merge_node(base: Node, over: Node, path: &[&str]) -> Node {
    if over.value == Value::Null {
        return base;
    }
    match rule(path) {
        Rule::Replace => over,
        r @ (Rule::KvMap | Rule::NameMap) => {
            let split = matches!(r, Rule::KvMap);
            merge_maps(to_map(base, split), to_map(over, split), path)
        }
        Rule::Keyed(key) => match (base.value, over.value) {
            (Value::Seq(mut b), Value::Seq(o)) => {
                for item in o {
                    let k = key(&item);
                    match b.iter().position(|x| key(x) == k) {
                        Some(i) => b[i] = item,
                        None => b.push(item),
                    }
                }
                Node {
                    value: Value::Seq(b),
                    pos: base.pos,
                }
            }
            (_, o) => Node {
                value: o,
                pos: over.pos,
            },
        },
        Rule::Merge => match (base.value, over.value) {
            (b @ Value::Map(_), o @ Value::Map(_)) => merge_maps(
                Node {
                    value: b,
                    pos: base.pos,
                },
                Node {
                    value: o,
                    pos: over.pos,
                },
                path,
            ),
            (Value::Seq(mut b), Value::Seq(o)) => {
                for item in o {
                    let dup = match &item.value {
                        Value::Str { text, .. } => b
                            .iter()
                            .any(|x| matches!(&x.value, Value::Str { text: t, .. } if t == text)),
                        _ => false,
                    };
                    if !dup {
                        b.push(item);
                    }
                }
                Node {
                    value: Value::Seq(b),
                    pos: base.pos,
                }
            }
            (_, o) => Node {
                value: o,
                pos: over.pos,
            },
        },
    }
}

fn merge_maps(base: Node, over: Node, path: &[&str]) -> Node {
    let (Value::Map(mut b), Value::Map(o)) = (base.value, over.value.clone()) else {
        return over;
    };
    for (k, v) in o {
        let at = b.iter().position(|(bk, _)| bk.name == k.name);
        match k.tag {
            Tag::Reset => {
                if let Some(i) = at {
                    b.remove(i);
                }
                continue;
            }
            Tag::Override => {
                match at {
                    Some(i) => b[i] = (k, v),
                    None => b.push((k, v)),
                }
                continue;
            }
            Tag::None => {}
        }
        match at {
            Some(i) => {
                let (_, bv) = b.remove(i);
                let mut p: Vec<&str> = path.to_vec();
                p.push(&k.name);
                let merged = merge_node(bv, v, &p);
                b.insert(i, (k, merged));
            }
            None => b.push((k, v)),
        }
    }
    Node {
        value: Value::Map(b),
        pos: base.pos,
    }
}

/// A list form turned into the equivalent mapping (`A=1` → `A: "1"`, `db` → `db:`).
fn to_map(n: Node, split: bool) -> Node {
    let Value::Seq(items) = n.value else { return n };
    let mut entries: Vec<(Key, Node)> = Vec::new();
    for it in items {
        let (name, value) = match &it.value {
            Value::Str { text, .. } => match text.split_once('=').filter(|_| split) {
                Some((k, v)) => (k.to_string(), Node::str(v, it.pos)),
                None => (text.clone(), Node::new(Value::Null, it.pos)),
            },
            // Not a name: keep the original form so conversion reports the error.
            _ => {
                return Node {
                    value: Value::Seq(vec![it]),
                    pos: n.pos,
                }
            }
        };
        entries.retain(|(k, _)| k.name != name);
        entries.push((
            Key {
                name,
                pos: it.pos,
                tag: Default::default(),
            },
            value,
        ));
    }
    Node {
        value: Value::Map(entries),
        pos: n.pos,
    }
}

fn text(n: Option<&Node>) -> String {
    match n.map(|n| &n.value) {
        Some(Value::Str { text, .. }) => text.clone(),
        _ => String::new(),
    }
}

/// Ports are the same when host IP, published port, target and protocol are.
fn port_key(n: &Node) -> String {
    match &n.value {
        Value::Str { text, .. } => match crate::convert::parse_short_port(text) {
            Ok(p) if p.len() == 1 => {
                format!(
                    "{:?}|{:?}|{}|{}",
                    p[0].host_ip, p[0].published, p[0].target, p[0].protocol
                )
            }
            _ => format!("raw|{text}"),
        },
        Value::Map(_) => {
            let published = text(n.get("published")).parse::<u16>().ok();
            let protocol = match text(n.get("protocol")).to_ascii_lowercase() {
                p if p.is_empty() => "tcp".to_string(),
                p => p,
            };
            let ip = Some(text(n.get("host_ip"))).filter(|s| !s.is_empty());
            format!("{ip:?}|{published:?}|{}|{protocol}", text(n.get("target")))
        }
        _ => format!("{:?}", n.pos),
    }
}

fn volume_key(n: &Node) -> String {
    match &n.value {
        Value::Str { text, .. } => {
            let parts: Vec<&str> = text.split(':').collect();
            match parts.as_slice() {
                [t] => t.to_string(),
                [t, o] if t.starts_with('/') && matches!(*o, "ro" | "rw") => t.to_string(),
                [_, t, ..] => t.to_string(),
                _ => text.clone(),
            }
        }
        Value::Map(_) => text(n.get("target")),
        _ => format!("{:?}", n.pos),
    }
}

fn source_key(n: &Node) -> String {
    match &n.value {
        Value::Str { text, .. } => text.clone(),
        Value::Map(_) => text(n.get("source")),
        _ => format!("{:?}", n.pos),
    }
}
