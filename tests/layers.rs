//! The layering rules of the controller and the agent, checked on their sources: a module
//! imports only from its own layer or below, and in a layer marked isolated (the agent's
//! front ends) a module does not import another module of that layer either. It needs no
//! root and no agent (it only reads the sources), so every `cargo test` runs it.
//!
//! Every `crate::…` path and every `super::…` path (resolved against the module it is
//! written in, inline `mod` blocks included) is mapped to the layer of the top-level
//! module it names; comments and string literals are ignored. A failure names the file,
//! the line and the offending import.

/// One crate's layering: its top-level modules (directories or files under `src/`) and
/// their layers, bottom (1) to top.
struct Table {
    /// The crate's directory in the workspace.
    dir: &'static str,
    layers: &'static [(&'static str, u8)],
    /// The crate root and whatever it declares inline.
    root: u8,
    /// A layer whose modules do not import one another (front ends).
    isolated: Option<u8>,
}

/// The controller: 1 `model/`, 2 `store/`, 3 `raft/`, 4 `ca.rs` and `tls.rs`,
/// 5 `orchestrator/` and `scheduler/`, 6 `api/`, 7 `cluster/` and the crate root
/// (`lib.rs`, whose compatibility modules re-export from every layer).
const CONTROLLER: Table = Table {
    dir: "controller",
    layers: &[
        ("model", 1),
        ("store", 2),
        ("raft", 3),
        ("ca", 4),
        ("tls", 4),
        ("orchestrator", 5),
        ("scheduler", 5),
        ("api", 6),
        ("cluster", 7),
    ],
    root: 7,
    isolated: None,
};

/// The agent (see docs/architecture.md): 1 primitives, 2 engine parts that know nothing
/// of containers, 3 containers and what works on them, 4 the engine traits, 5 front ends
/// (isolated: what two of them share belongs below them), 6 the crate root, which
/// assembles the agent.
const AGENT: Table = Table {
    dir: "node-agent",
    layers: &[
        // 1 primitives: settings, errors, names, labels, the event bus, counters.
        ("config", 1),
        ("error", 1),
        ("names", 1),
        ("humanize", 1),
        ("labels", 1),
        ("events", 1),
        ("counters", 1),
        // 2 engine parts: volumes, networks, registries, host facts, standby shims.
        ("volumes", 2),
        ("network", 2),
        ("attach", 2),
        ("registry", 2),
        ("sysinfo", 2),
        ("shimpool", 2),
        // 3 containers (with their namespaces) and what works on them, and the
        // request-level calls both API front ends share.
        ("containers", 3),
        ("stats", 3),
        ("images", 3),
        ("build", 3),
        ("archive", 3),
        ("logs", 3),
        ("inspect", 3),
        ("prune", 3),
        ("request", 3),
        // 4 the engine as the executor drives it (traits, the real one and a fake).
        ("engine", 4),
        // 5 front ends.
        ("server", 5),
        ("remote_api", 5),
        ("docker", 5),
        ("executor", 5),
        ("logpublisher", 5),
        ("imageshare", 5),
        ("metrics", 5),
    ],
    root: 6,
    isolated: Some(5),
};

impl Table {
    /// The layer of a module path's first segment (the crate root for anything else).
    fn layer_of(&self, module: &[String]) -> u8 {
        module
            .first()
            .and_then(|m| self.layers.iter().find(|(name, _)| name == m))
            .map_or(self.root, |(_, l)| *l)
    }

    /// The layer of a source file, `None` for a top-level module missing from the table.
    fn layer_of_file(&self, rel: &str) -> Option<u8> {
        let module = module_of_file(rel);
        match module.first() {
            None => Some(self.root),
            Some(m) => self
                .layers
                .iter()
                .find(|(name, _)| name == m)
                .map(|(_, l)| *l),
        }
    }
}

/// The module a source file holds (`api/cluster.rs` → `api::cluster`), relative to `src/`.
fn module_of_file(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// `src` with comments and the contents of string and char literals blanked out
/// (newlines kept), so byte offsets and line numbers still match the original.
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in out.iter_mut().take(to).skip(from) {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                let start = i;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                blank(&mut out, start, i);
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let open = i + 1 + hashes;
                if b.get(open) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let end = b[open + 1..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| open + 1 + p);
                blank(&mut out, open + 1, end);
                i = end + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j.min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}'); otherwise a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 2 + p)
                } else {
                    let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 1 + ch)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i + 1, end);
                        i = end + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Inline `mod name { … }` blocks: (name, start, end) byte ranges in `code`.
fn inline_modules(code: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = find_word(code, b"mod", i) {
        i = p + 3;
        let mut j = i;
        while j < code.len() && code[j].is_ascii_whitespace() {
            j += 1;
        }
        let name_start = j;
        while j < code.len() && is_ident(code[j]) {
            j += 1;
        }
        let name = String::from_utf8_lossy(&code[name_start..j]).into_owned();
        while j < code.len() && code[j].is_ascii_whitespace() {
            j += 1;
        }
        if name.is_empty() || code.get(j) != Some(&b'{') {
            continue;
        }
        let mut depth = 0usize;
        let mut k = j;
        while k < code.len() {
            match code[k] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        out.push((name, j, k));
    }
    out
}

/// The next occurrence of `word` at or after `from`, not inside a longer identifier.
fn find_word(code: &[u8], word: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + word.len() <= code.len() {
        if &code[i..i + word.len()] == word
            && (i == 0 || !is_ident(code[i - 1]))
            && code.get(i + word.len()).is_none_or(|&c| !is_ident(c))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Reads `a::b::{c, d::e}` at `i`: every path it names, as segment lists.
fn read_paths(code: &[u8], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    loop {
        while i < code.len() && code[i].is_ascii_whitespace() {
            i += 1;
        }
        if code.get(i) == Some(&b'{') {
            i += 1;
            loop {
                while i < code.len() && (code[i].is_ascii_whitespace() || code[i] == b',') {
                    i += 1;
                }
                if i >= code.len() || code[i] == b'}' {
                    return i + 1;
                }
                i = read_paths(code, i, path.clone(), out);
            }
        }
        let start = i;
        while i < code.len() && (is_ident(code[i]) || code[i] == b'*') {
            i += 1;
        }
        let seg = String::from_utf8_lossy(&code[start..i]).into_owned();
        if !seg.is_empty() && seg != "self" && seg != "*" {
            path.push(seg);
        }
        if code.get(i..i + 2) == Some(b"::".as_slice()) {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// One import of a module from a layer above its own, or from another module of an
/// isolated layer.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    import: String,
    from_layer: u8,
    to_layer: u8,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from_layer == self.to_layer {
            write!(
                f,
                "{}:{}: `{}` reaches across layer {} (its modules do not import one another)",
                self.file, self.line, self.import, self.from_layer
            )
        } else {
            write!(
                f,
                "{}:{}: `{}` reaches up from layer {} to layer {}",
                self.file, self.line, self.import, self.from_layer, self.to_layer
            )
        }
    }
}

/// The imports of one file against the table (`rel` is its path under `src/`).
fn check_file(table: &Table, rel: &str, src: &str) -> Result<Vec<Violation>, String> {
    let own = table
        .layer_of_file(rel)
        .ok_or_else(|| format!("{rel}: its top-level module has no layer in the table"))?;
    let file_module = module_of_file(rel);
    let code = code_only(src);
    let mods = inline_modules(&code);
    let mut out = Vec::new();
    for word in [b"crate".as_slice(), b"super".as_slice()] {
        let mut i = 0;
        while let Some(p) = find_word(&code, word, i) {
            i = p + word.len();
            // `pub(crate)` and `pub(super)` are visibilities, not paths.
            if code.get(i..i + 2) != Some(b"::".as_slice()) {
                continue;
            }
            let mut module = file_module.clone();
            module.extend(
                mods.iter()
                    .filter(|(_, s, e)| *s < p && p < *e)
                    .map(|(n, _, _)| n.clone()),
            );
            let mut j = p;
            let base = if word == b"crate" {
                j += "crate::".len();
                Vec::new()
            } else {
                while code.get(j..j + 7) == Some(b"super::".as_slice()) {
                    module.pop();
                    j += 7;
                }
                module
            };
            let mut targets = Vec::new();
            let end = read_paths(&code, j, base, &mut targets);
            i = i.max(end);
            for t in targets {
                let to = table.layer_of(&t);
                let across =
                    table.isolated == Some(own) && to == own && t.first() != file_module.first();
                if to > own || across {
                    out.push(Violation {
                        file: rel.to_string(),
                        line: src[..p].matches('\n').count() + 1,
                        import: src[p..end.min(src.len())].split_whitespace().collect(),
                        from_layer: own,
                        to_layer: to,
                    });
                }
            }
        }
    }
    out.sort_by_key(|v| v.line);
    Ok(out)
}

fn sources(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir).expect("read src dir");
    for e in entries {
        let path = e.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path.strip_prefix(root).expect("under src");
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).expect("read source")));
        }
    }
}

/// Every problem of one crate, as `dir/src/file:line: ...` lines.
fn check_crate(table: &Table, at_least: usize) -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(table.dir)
        .join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    assert!(
        files.len() > at_least,
        "found only {} sources in {}",
        files.len(),
        root.display()
    );
    let mut problems = Vec::new();
    for (rel, src) in &files {
        match check_file(table, rel, src) {
            Ok(v) => problems.extend(v.iter().map(|v| format!("{}/src/{v}", table.dir))),
            Err(e) => problems.push(format!("{}/src/{e}", table.dir)),
        }
    }
    problems.sort();
    problems
}

#[test]
fn controller_modules_import_only_from_below() {
    let problems = check_crate(&CONTROLLER, 20);
    assert!(
        problems.is_empty(),
        "imports against the controller's layering (see tests/layers.rs):\n{}",
        problems.join("\n")
    );
}

#[test]
fn agent_modules_import_only_from_below_and_front_ends_not_each_other() {
    let problems = check_crate(&AGENT, 30);
    assert!(
        problems.is_empty(),
        "imports against the agent's layering (see tests/layers.rs and docs/architecture.md):\n{}",
        problems.join("\n")
    );
}

/// Within the controller's orchestrator, the overlay allocator is one-way: `attach`
/// uses `overlay`, which uses `netalloc` (pure allocation), which uses only the model.
#[test]
fn the_overlay_allocator_imports_one_way() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("controller/src/orchestrator");
    let order = ["netalloc", "overlay", "attach"];
    for (i, m) in order.iter().enumerate() {
        let src = std::fs::read_to_string(dir.join(format!("{m}.rs"))).expect("source");
        let code = String::from_utf8_lossy(&code_only(&src)).into_owned();
        for above in &order[i + 1..] {
            for path in [format!("super::{above}"), format!("orchestrator::{above}")] {
                assert!(!code.contains(&path), "{m}.rs imports {path}");
            }
        }
    }
}

#[test]
fn an_upward_import_is_named_with_file_and_line() {
    let src = "//! crate::api in a comment is no import\n\
               use crate::model::Node;\n\
               use crate::{model::Op, api::cluster::ClusterApi};\n\
               fn f() -> String { \"crate::cluster::Cluster\".into() }\n";
    let v = check_file(&CONTROLLER, "store/example.rs", src).expect("known layer");
    assert_eq!(
        v,
        vec![Violation {
            file: "store/example.rs".into(),
            line: 3,
            import: "crate::{model::Op,api::cluster::ClusterApi}".into(),
            from_layer: 2,
            to_layer: 6,
        }]
    );
    assert!(v[0].to_string().starts_with("store/example.rs:3:"));
}

#[test]
fn super_paths_resolve_against_their_module() {
    // From store/mod.rs, `super` is the crate root: `super::api` is layer 6.
    let v = check_file(
        &CONTROLLER,
        "store/mod.rs",
        "use super::api::events::feed;\n",
    )
    .expect("layer");
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].from_layer, v[0].to_layer), (2, 6));
    // Inside an inline `mod tests`, `super` is the file's own module.
    let ok = "fn a() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n";
    assert!(check_file(&CONTROLLER, "ca.rs", ok)
        .expect("layer")
        .is_empty());
    // A sibling in the same layer, and lower layers, are fine.
    let ok = "use super::reconcile::World;\nuse crate::store::Stored;\npub(crate) fn x() {}\n";
    assert!(check_file(&CONTROLLER, "orchestrator/runner.rs", ok)
        .expect("layer")
        .is_empty());
    // A file outside every layer is reported, not skipped.
    assert!(check_file(&CONTROLLER, "newthing/mod.rs", "").is_err());
}

#[test]
fn lifetimes_and_char_literals_do_not_hide_code() {
    let src = "fn f<'a>(x: &'a str) -> char { '{' }\nuse crate::cluster::Cluster;\n";
    let v = check_file(&CONTROLLER, "model/x.rs", src).expect("layer");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].line, 2);
}

#[test]
fn agent_front_ends_do_not_import_one_another_nor_lower_layers_them() {
    // Containers reaching up into a front end; volumes up into containers.
    let v = check_file(
        &AGENT,
        "containers.rs",
        "use crate::error::AgentError;\nuse crate::metrics::AgentMetrics;\n",
    )
    .expect("layer");
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].line, v[0].from_layer, v[0].to_layer), (2, 3, 5));
    let v =
        check_file(&AGENT, "volumes.rs", "use crate::containers::Containers;\n").expect("layer");
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].from_layer, v[0].to_layer), (2, 3));
    // One front end calling another: the Docker API into the gRPC server.
    let v = check_file(
        &AGENT,
        "docker/containers.rs",
        "use super::not_found_route;\nfn f() { crate::server::convert(); }\n",
    )
    .expect("layer");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].import, "crate::server::convert");
    assert!(
        v[0].to_string().contains("reaches across layer 5"),
        "{}",
        v[0]
    );
    // Within a front end, and down to the engine and below, is fine.
    let ok = "use super::Source;\nuse crate::engine::Engine;\nuse crate::labels::LABEL_TASK;\n";
    assert!(check_file(&AGENT, "executor/tests.rs", ok)
        .expect("layer")
        .is_empty());
    // Modules of a layer that is not isolated may import one another.
    assert!(
        check_file(&AGENT, "stats.rs", "use crate::containers::Containers;\n")
            .expect("layer")
            .is_empty()
    );
}
