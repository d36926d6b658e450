//! The build context: `.dockerignore` rules, the context tarball the CLI sends, and
//! Go-style glob matching (`*`, `?`, `[...]`, and `**` across directories) shared by
//! `.dockerignore` and COPY/ADD sources.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Matches one path segment against one pattern segment (Go's `filepath.Match`).
fn match_segment(pat: &[char], s: &[char]) -> bool {
    match pat.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| match_segment(&pat[1..], &s[i..])),
        Some('?') => !s.is_empty() && match_segment(&pat[1..], &s[1..]),
        Some('[') => {
            let Some(c) = s.first() else { return false };
            let Some(end) = pat.iter().skip(1).position(|&x| x == ']').map(|p| p + 1) else {
                return false;
            };
            let class = &pat[1..end];
            let (neg, class) = match class.first() {
                Some('^') | Some('!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit != neg && match_segment(&pat[end + 1..], &s[1..])
        }
        Some('\\') if pat.len() > 1 => {
            s.first() == Some(&pat[1]) && match_segment(&pat[2..], &s[1..])
        }
        Some(p) => s.first() == Some(p) && match_segment(&pat[1..], &s[1..]),
    }
}

fn match_segments(pat: &[&str], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(&"**") => (0..=path.len()).any(|i| match_segments(&pat[1..], &path[i..])),
        Some(p) => {
            !path.is_empty() && {
                let pc: Vec<char> = p.chars().collect();
                let sc: Vec<char> = path[0].chars().collect();
                match_segment(&pc, &sc) && match_segments(&pat[1..], &path[1..])
            }
        }
    }
}

/// Normalises a relative path: no leading `/` or `./`, no `.`, `..` clamped at the root.
pub fn clean(p: &str) -> String {
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
    parts.join("/")
}

/// Whether `path` (relative, clean) matches `pattern`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern = clean(pattern);
    let pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&pat, &p)
}

/// Parsed `.dockerignore`: patterns in order, `!` marks exceptions.
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    rules: Vec<(String, bool)>,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.strip_prefix('!') {
                Some(p) => (clean(p.trim()), true),
                None => (clean(l), false),
            })
            .filter(|(p, _)| !p.is_empty())
            .collect();
        Self { rules }
    }

    pub fn load(context: &Path) -> Result<Self, ContextError> {
        let p = context.join(".dockerignore");
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Self::parse(&t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Whether `path` is excluded: the last rule that matches it or one of its parent
    /// directories decides.
    pub fn excluded(&self, path: &str) -> bool {
        let mut excluded = false;
        let parts: Vec<&str> = path.split('/').collect();
        for (pat, exception) in &self.rules {
            let hit = (1..=parts.len()).any(|n| glob_match(pat, &parts[..n].join("/")));
            if hit {
                excluded = !exception;
            }
        }
        excluded
    }

    /// Whether a directory may hold an exception, so it must be walked although excluded.
    fn has_exception_below(&self, dir: &str) -> bool {
        self.rules
            .iter()
            .any(|(p, exc)| *exc && (p.starts_with(&format!("{dir}/")) || p.contains('*')))
    }
}

/// Writes the context directory as a tar stream, leaving out what `.dockerignore`
/// excludes (the Dockerfile and `.dockerignore` themselves are always sent, as Docker does).
pub fn write_context(
    dir: &Path,
    dockerfile_rel: Option<&str>,
    out: impl Write,
) -> Result<u64, ContextError> {
    let rules = IgnoreRules::load(dir)?;
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut count = 0;
    walk(dir, "", &rules, dockerfile_rel, &mut tar, &mut count)?;
    tar.into_inner()
        .map_err(io_err(dir))?
        .flush()
        .map_err(io_err(dir))?;
    Ok(count)
}

fn walk<W: Write>(
    base: &Path,
    rel: &str,
    rules: &IgnoreRules,
    dockerfile: Option<&str>,
    tar: &mut tar::Builder<W>,
    count: &mut u64,
) -> Result<(), ContextError> {
    let dir = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let always = r == ".dockerignore" || Some(r.as_str()) == dockerfile;
        let ft = e.file_type().map_err(io_err(&e.path()))?;
        let excluded = !always && rules.excluded(&r);
        if excluded && !(ft.is_dir() && rules.has_exception_below(&r)) {
            continue;
        }
        if !excluded {
            tar.append_path_with_name(e.path(), &r)
                .map_err(io_err(&e.path()))?;
            *count += 1;
        }
        if ft.is_dir() {
            walk(base, &r, rules, dockerfile, tar, count)?;
        }
    }
    Ok(())
}

/// One file selected by a COPY/ADD source.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// Absolute path on the agent's filesystem.
    pub path: PathBuf,
    /// Path relative to the root the source was resolved in.
    pub rel: String,
    pub is_dir: bool,
}

/// Resolves a COPY/ADD source pattern inside `root` (a context directory or a stage's
/// rootfs). Wildcards match against every path; a pattern never leaves `root`.
pub fn resolve_sources(root: &Path, pattern: &str) -> Result<Vec<Source>, ContextError> {
    let pat = clean(pattern);
    let has_glob = pat.contains(['*', '?', '[']);
    if !has_glob {
        let p = if pat.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&pat)
        };
        return match std::fs::symlink_metadata(&p) {
            Ok(m) => Ok(vec![Source {
                path: p,
                rel: pat,
                is_dir: m.is_dir(),
            }]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(io_err(&p)(e)),
        };
    }
    let mut out = Vec::new();
    let depth = pat.split('/').count();
    let deep = pat.contains("**");
    collect_matches(root, "", &pat, depth, deep, &mut out)?;
    Ok(out)
}

fn collect_matches(
    root: &Path,
    rel: &str,
    pat: &str,
    depth: usize,
    deep: bool,
    out: &mut Vec<Source>,
) -> Result<(), ContextError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut entries: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.flatten().collect(),
        Err(_) => return Ok(()),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = if rel.is_empty() {
            e.file_name().to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", e.file_name().to_string_lossy())
        };
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if glob_match(pat, &r) {
            out.push(Source {
                path: e.path(),
                rel: r.clone(),
                is_dir,
            });
            continue;
        }
        if is_dir && (deep || r.split('/').count() < depth) {
            collect_matches(root, &r, pat, depth, deep, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_go() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "dir/a.txt"));
        assert!(glob_match("**/*.txt", "dir/sub/a.txt"));
        assert!(glob_match("**/*.txt", "a.txt"));
        assert!(glob_match("dir/**", "dir/x/y"));
        assert!(glob_match("file?.[a-c]", "file1.b"));
        assert!(!glob_match("file?.[^a-c]", "file1.b"));
        assert!(glob_match("./a/../b", "b"));
    }

    #[test]
    fn dockerignore_exceptions_and_parents() {
        let r = IgnoreRules::parse("# comment\nnode_modules\n*.log\n!keep.log\n/build/\n");
        assert!(r.excluded("node_modules"));
        assert!(r.excluded("node_modules/x/y.js"));
        assert!(r.excluded("a.log"));
        assert!(!r.excluded("keep.log"));
        assert!(r.excluded("build/out"));
        assert!(!r.excluded("src/main.rs"));
        assert!(
            !r.excluded("sub/a.log"),
            "*.log only matches at the top level"
        );
    }

    #[test]
    fn context_tar_skips_ignored_files() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join(".dockerignore"), "secret*\nDockerfile\n").expect("write");
        std::fs::write(d.path().join("Dockerfile"), "FROM busybox\n").expect("write");
        std::fs::write(d.path().join("secret.key"), "x").expect("write");
        std::fs::create_dir(d.path().join("src")).expect("mkdir");
        std::fs::write(d.path().join("src/app.sh"), "echo").expect("write");
        let mut buf = Vec::new();
        write_context(d.path(), Some("Dockerfile"), &mut buf).expect("tar");
        let mut names: Vec<String> = tar::Archive::new(&buf[..])
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "src", "src/app.sh"]);
    }

    #[test]
    fn sources_resolve_globs_inside_root() {
        let d = tempfile::tempdir().expect("tempdir");
        for f in ["a.txt", "b.txt", "c.md", "sub/d.txt"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, f).expect("write");
        }
        let rels = |pat: &str| {
            resolve_sources(d.path(), pat)
                .expect("resolve")
                .into_iter()
                .map(|s| s.rel)
                .collect::<Vec<_>>()
        };
        assert_eq!(rels("*.txt"), ["a.txt", "b.txt"]);
        assert_eq!(rels("**/*.txt"), ["a.txt", "b.txt", "sub/d.txt"]);
        assert_eq!(rels("../../c.md"), ["c.md"]);
        assert!(rels("missing").is_empty());
    }
}
