//! Relative paths of a file loaded from another directory (`include`, `extends` with
//! `file:`) resolve against that file's directory, not the main file's. Rewriting
//! them to absolute paths right after loading lets the rest of the pipeline treat
//! every file alike.

use crate::yaml::{Node, Value};
use std::path::{Component, Path, PathBuf};

/// Rewrites the path-valued fields of a whole file against `dir`.
pub(crate) fn relocate(root: &mut Node, dir: &Path) {
    let Value::Map(top) = &mut root.value else {
        return;
    };
    for (k, v) in top.iter_mut() {
        match k.name.as_str() {
            "services" => each_entry(v, |svc| service(svc, dir)),
            "secrets" | "configs" => each_entry(v, |e| {
                if let Some(f) = field(e, "file") {
                    path_scalar(f, dir);
                }
            }),
            _ => {}
        }
    }
}

fn each_entry(n: &mut Node, mut f: impl FnMut(&mut Node)) {
    if let Value::Map(entries) = &mut n.value {
        for (k, v) in entries.iter_mut() {
            if !k.name.starts_with("x-") {
                f(v);
            }
        }
    }
}

fn field<'n>(n: &'n mut Node, key: &str) -> Option<&'n mut Node> {
    match &mut n.value {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Whether a build context names something other than a local directory.
pub(crate) fn is_remote(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

fn join(dir: &Path, s: &str) -> Option<String> {
    if s.is_empty() || s.starts_with('/') || s.starts_with('~') || is_remote(s) {
        return None;
    }
    Some(normalise(&dir.join(s)).to_string_lossy().into_owned())
}

fn path_scalar(n: &mut Node, dir: &Path) {
    if let Value::Str { text, .. } = &mut n.value {
        if let Some(p) = join(dir, text) {
            *text = p;
        }
    }
}

fn service(svc: &mut Node, dir: &Path) {
    if let Some(b) = field(svc, "build") {
        match &mut b.value {
            Value::Str { .. } => path_scalar(b, dir),
            Value::Map(_) => {
                if let Some(c) = field(b, "context") {
                    path_scalar(c, dir);
                } else if let Value::Map(entries) = &mut b.value {
                    // No context: it is the file's directory.
                    let pos = b.pos;
                    entries.push((
                        crate::yaml::Key {
                            name: "context".into(),
                            pos,
                            tag: Default::default(),
                        },
                        Node::str(dir.to_string_lossy(), pos),
                    ));
                }
                if let Some(Value::Map(extra)) =
                    field(b, "additional_contexts").map(|n| &mut n.value)
                {
                    for (_, v) in extra.iter_mut() {
                        if let Value::Str { text, .. } = &v.value {
                            if !text.contains(':') || text.starts_with('.') {
                                path_scalar(v, dir);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for key in ["env_file", "label_file"] {
        if let Some(e) = field(svc, key) {
            match &mut e.value {
                Value::Str { .. } => path_scalar(e, dir),
                Value::Seq(items) => {
                    for it in items.iter_mut() {
                        match &it.value {
                            Value::Map(_) => {
                                if let Some(p) = field(it, "path") {
                                    path_scalar(p, dir);
                                }
                            }
                            _ => path_scalar(it, dir),
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(Value::Seq(items)) = field(svc, "volumes").map(|n| &mut n.value) {
        for it in items.iter_mut() {
            match &mut it.value {
                Value::Str { text, .. } => {
                    // Only `./x:/y` or `../x:/y` sources are relative host paths.
                    if let Some((src, rest)) = text.split_once(':') {
                        if src.starts_with('.') {
                            if let Some(p) = join(dir, src) {
                                *text = format!("{p}:{rest}");
                            }
                        }
                    }
                }
                Value::Map(_) => {
                    let bind = matches!(
                        it.get("type").map(|t| &t.value),
                        Some(Value::Str { text, .. }) if text == "bind"
                    );
                    if bind {
                        if let Some(s) = field(it, "source") {
                            path_scalar(s, dir);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Lexical `.`/`..` removal, so output is stable and readable.
pub(crate) fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
