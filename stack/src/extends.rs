//! `extends:` on a service: the service is its base (from this file or another one)
//! with its own keys merged over it by the same rules as several `-c` files. Bases
//! may extend in turn; a loop is an error naming the services in it.

use crate::error::{Pos, Result};
use crate::value::{fields, get_some, string, sub, K};
use crate::yaml::{Node, Value};
use crate::FileCx;
use std::collections::HashMap;
use std::path::Path;

/// Resolves every `extends` among the services of `root` (a file in `dir`).
pub(crate) fn apply(
    fcx: &mut FileCx,
    root: &mut Node,
    dir: &Path,
    env: &HashMap<String, String>,
) -> Result<()> {
    let Value::Map(top) = &mut root.value else {
        return Ok(());
    };
    let Some((_, services)) = top.iter_mut().find(|(k, _)| k.name == "services") else {
        return Ok(());
    };
    let Value::Map(entries) = &mut services.value else {
        return Ok(());
    };
    let names: Vec<String> = entries.iter().map(|(k, _)| k.name.clone()).collect();
    for name in names {
        let mut visiting = Vec::new();
        resolve(fcx, entries, &name, dir, env, &mut visiting)?;
    }
    Ok(())
}

type Entries = Vec<(crate::yaml::Key, Node)>;

fn resolve(
    fcx: &mut FileCx,
    entries: &mut Entries,
    name: &str,
    dir: &Path,
    env: &HashMap<String, String>,
    visiting: &mut Vec<String>,
) -> Result<()> {
    let Some(i) = entries.iter().position(|(k, _)| k.name == name) else {
        return Ok(());
    };
    let Some(ext) = entries[i].1.get("extends").cloned() else {
        return Ok(());
    };
    let f = format!("services.{name}.extends");
    let (base_name, file, base_pos) = reference(fcx, &ext, &f)?;
    if visiting.iter().any(|v| v == name) {
        let mut cycle = visiting.clone();
        cycle.push(name.to_string());
        return Err(fcx.diag.invalid(
            ext.pos,
            &f,
            format!(
                "services extend each other in a loop: {}",
                cycle.join(" -> ")
            ),
        ));
    }
    visiting.push(name.to_string());
    let base = match &file {
        Some(file) => {
            let path = crate::relocate::normalise(&dir.join(file));
            if !path.is_file() {
                return Err(fcx.diag.invalid(
                    base_pos,
                    &sub(&f, "file"),
                    format!("file {} not found", path.display()),
                ));
            }
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let other = crate::load_file(fcx, &path, env, Some(&parent))?;
            other
                .get("services")
                .and_then(|s| s.get(&base_name))
                .cloned()
                .ok_or_else(|| {
                    fcx.diag.invalid(
                        base_pos,
                        &f,
                        format!(
                            "cannot extend service {name:?}: service {base_name:?} not found in {}",
                            path.display()
                        ),
                    )
                })?
        }
        None => {
            if !entries.iter().any(|(k, _)| k.name == base_name) {
                return Err(fcx.diag.invalid(
                    base_pos,
                    &f,
                    format!("cannot extend service {name:?}: service {base_name:?} not found"),
                ));
            }
            resolve(fcx, entries, &base_name, dir, env, visiting)?;
            entries
                .iter()
                .find(|(k, _)| k.name == base_name)
                .map(|(_, v)| v.clone())
                .unwrap_or(Node::new(Value::Null, base_pos))
        }
    };
    visiting.pop();
    let (key, mut own) = entries.remove(i);
    if let Value::Map(m) = &mut own.value {
        m.retain(|(k, _)| k.name != "extends");
    }
    let mut base = base;
    if let Value::Map(m) = &mut base.value {
        m.retain(|(k, _)| k.name != "extends");
    }
    let merged = crate::merge::merge_service(base, own, name);
    entries.insert(i, (key, merged));
    Ok(())
}

/// `extends: NAME` or `extends: {service: NAME, file: PATH}`.
fn reference(fcx: &mut FileCx, ext: &Node, f: &str) -> Result<(String, Option<String>, Pos)> {
    match &ext.value {
        Value::Str { text, .. } => Ok((text.clone(), None, ext.pos)),
        Value::Map(_) => {
            let e = fields(fcx.diag, ext, f, &[("service", K::Ok), ("file", K::Ok)])?;
            let Some(s) = get_some(e, "service") else {
                return Err(fcx.diag.invalid(ext.pos, f, "service is required"));
            };
            let service = string(fcx.diag, s, &sub(f, "service"))?;
            let file = match get_some(e, "file") {
                Some(v) => Some(string(fcx.diag, v, &sub(f, "file"))?),
                None => None,
            };
            Ok((service, file, s.pos))
        }
        _ => Err(fcx.diag.invalid(
            ext.pos,
            f,
            format!(
                "expected a service name or a mapping, found {}",
                ext.describe()
            ),
        )),
    }
}
