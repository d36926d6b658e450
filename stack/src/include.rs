//! Top-level `include:`: other Compose files loaded as they are (their own directory,
//! their own `.env` or `env_file`) and their resources added to this file's. A
//! resource defined both here and in an included file is the included one with this
//! file's definition merged over it (Compose's merge rules), as compose-go does since
//! it let an including file adjust what it includes.

use crate::error::Result;
use crate::value::{fields, get, get_some, idx, str_list, sub, K};
use crate::yaml::{Node, Value};
use crate::FileCx;
use std::path::Path;

const SECTIONS: &[&str] = &["services", "networks", "volumes", "secrets", "configs"];

/// Loads the files `root` includes (relative to `dir`) and adds their resources.
pub(crate) fn apply(fcx: &mut FileCx, root: &mut Node, dir: &Path) -> Result<()> {
    let Value::Map(top) = &mut root.value else {
        return Ok(());
    };
    let Some(i) = top.iter().position(|(k, _)| k.name == "include") else {
        return Ok(());
    };
    let (_, list) = top.remove(i);
    let items: Vec<Node> = match list.value {
        Value::Seq(items) => items,
        Value::Null => Vec::new(),
        _ => {
            return Err(fcx.diag.invalid(
                list.pos,
                "include",
                format!("expected a list, found {}", list.describe()),
            ))
        }
    };
    for (n, it) in items.iter().enumerate() {
        let f = idx("include", n);
        let (paths, project_dir, env_files) = match &it.value {
            Value::Str { text, .. } => (vec![text.clone()], None, Vec::new()),
            Value::Map(_) => {
                let e = fields(
                    fcx.diag,
                    it,
                    &f,
                    &[
                        ("path", K::Ok),
                        ("project_directory", K::Ok),
                        ("env_file", K::Ok),
                    ],
                )?;
                let Some(p) = get_some(e, "path") else {
                    return Err(fcx.diag.invalid(it.pos, &f, "path is required"));
                };
                let paths = str_list(fcx.diag, p, &sub(&f, "path"), true)?;
                let pd = match get_some(e, "project_directory") {
                    Some(d) => Some(crate::value::string(
                        fcx.diag,
                        d,
                        &sub(&f, "project_directory"),
                    )?),
                    None => None,
                };
                let ef = match get(e, "env_file") {
                    Some(v) => str_list(fcx.diag, v, &sub(&f, "env_file"), true)?,
                    None => Vec::new(),
                };
                (paths, pd, ef)
            }
            _ => {
                return Err(fcx.diag.invalid(
                    it.pos,
                    &f,
                    format!("expected a path or a mapping, found {}", it.describe()),
                ))
            }
        };
        if paths.is_empty() {
            return Err(fcx.diag.invalid(it.pos, &f, "path is required"));
        }
        let first = crate::relocate::normalise(&dir.join(&paths[0]));
        let base = match &project_dir {
            Some(d) => crate::relocate::normalise(&dir.join(d)),
            None => first.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let env_files: Vec<_> = env_files.iter().map(|e| dir.join(e)).collect();
        let env = crate::environment(&base, fcx.process_env, &env_files)?;
        let mut merged: Option<Node> = None;
        for p in &paths {
            let path = crate::relocate::normalise(&dir.join(p));
            if !path.is_file() {
                return Err(fcx.diag.invalid(
                    it.pos,
                    &f,
                    format!("included file {} not found", path.display()),
                ));
            }
            let node = crate::load_file(fcx, &path, &env, Some(&base))?;
            merged = Some(match merged {
                None => node,
                Some(b) => crate::merge::merge(b, node),
            });
        }
        let Some(included) = merged else { continue };
        add_resources(top, included);
    }
    Ok(())
}

fn add_resources(top: &mut Vec<(crate::yaml::Key, Node)>, included: Node) {
    let Value::Map(sections) = included.value else {
        return;
    };
    for (k, v) in sections {
        if !SECTIONS.contains(&k.name.as_str()) {
            continue;
        }
        let Value::Map(entries) = v.value else {
            continue;
        };
        let slot = match top.iter().position(|(tk, _)| tk.name == k.name) {
            Some(i) => i,
            None => {
                top.push((
                    k.clone(),
                    Node {
                        value: Value::Map(Vec::new()),
                        pos: v.pos,
                    },
                ));
                top.len() - 1
            }
        };
        let target = &mut top[slot].1;
        if target.value == Value::Null {
            target.value = Value::Map(Vec::new());
        }
        let Value::Map(existing) = &mut target.value else {
            continue;
        };
        for (name, def) in entries {
            match existing.iter_mut().find(|(e, _)| e.name == name.name) {
                Some((_, here)) if same(here, &def) => {}
                Some((_, here)) => {
                    let local = std::mem::replace(here, Node::new(Value::Null, def.pos));
                    *here = crate::merge::merge_resource(def, local, &k.name, &name.name);
                }
                None => existing.push((name, def)),
            }
        }
    }
}

/// Equal definitions, positions aside.
fn same(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka.name == kb.name && same(va, vb))
        }
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Str { text: x, .. }, Value::Str { text: y, .. }) => x == y,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}
