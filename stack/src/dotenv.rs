//! `.env` and `env_file` parsing, as compose-go's dotenv reads them: `KEY=VALUE` (or
//! YAML-like `KEY: VALUE`) lines, `#` comments, blank lines, an optional `export `
//! prefix, and values in single quotes (literal) or double quotes (with `\n`, `\t`,
//! `\"`, `\\` escapes), either of which may span lines and be followed by a comment.
//! A bare `KEY` line takes its value from the process environment when set there
//! (Docker's `--env-file` rule), else is dropped. Values other than single-quoted ones
//! expand `${VAR}` forms, as in compose-go.

use std::collections::HashMap;

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub line: usize,
    pub key: String,
    /// `None` for a bare `KEY` line.
    pub value: Option<String>,
    /// Single-quoted: taken literally, never interpolated.
    pub literal: bool,
}

/// Parses `text`; the error carries the 1-based line and a message.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let line = i + 1;
        let l = raw.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
        let (key, value) = match l.find(['=', ':']) {
            Some(at) => (l[..at].trim_end(), Some(l[at + 1..].trim_start())),
            None => (l.trim_end(), None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err((line, format!("invalid variable name {key:?}")));
        }
        let Some(v) = value else {
            out.push(Entry {
                line,
                key: key.to_string(),
                value: None,
                literal: false,
            });
            continue;
        };
        let (value, literal) = match v.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // A quoted value runs to its closing quote, across lines if need be.
                let mut body = v[1..].to_string();
                let closed = loop {
                    if let Some(end) = closing_quote(&body, q) {
                        break Some(end);
                    }
                    match lines.next() {
                        Some((_, next)) => {
                            body.push('\n');
                            body.push_str(next);
                        }
                        None => break None,
                    }
                };
                let Some(end) = closed else {
                    let what = if q == '"' { "double" } else { "single" };
                    return Err((line, format!("unterminated {what} quote")));
                };
                // What follows the closing quote (a comment, usually) is ignored.
                let inner = &body[..end];
                if q == '"' {
                    (unescape_double(inner), false)
                } else {
                    (inner.replace("\\'", "'"), true)
                }
            }
            _ => {
                // Unquoted: an inline comment needs a space before the '#'.
                let t = match v.find(" #") {
                    Some(i) => &v[..i],
                    None => v,
                };
                (t.trim_end().to_string(), false)
            }
        };
        out.push(Entry {
            line,
            key: key.to_string(),
            value: Some(value),
            literal,
        });
    }
    Ok(out)
}

/// Byte offset in `body` of the first `q` not escaped by a backslash.
fn closing_quote(body: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == q => return Some(i),
            _ => {}
        }
    }
    None
}

/// Double-quoted escapes: `\n`, `\t`, `\r`, `\"`, `\\`, and `\$` for a literal `$`
/// (kept as `$$` for the interpolation that follows); any other pair stays as written.
fn unescape_double(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('$') => out.push_str("$$"),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Resolves parsed entries into a map: bare keys take the process value when present;
/// other values expand `${VAR}` forms (unless single-quoted) against the process
/// environment and the lines above, as compose-go's dotenv does.
pub(crate) fn resolve(
    entries: &[Entry],
    process: &HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for e in entries {
        let value = match &e.value {
            Some(v) if e.literal || !v.contains('$') => v.clone(),
            Some(v) => {
                let mut lookup = seen.clone();
                lookup.extend(process.iter().map(|(k, v)| (k.clone(), v.clone())));
                // A value that does not parse as a template stays as written.
                crate::interpolate::interpolate(v, &lookup)
                    .map(|x| x.text)
                    .unwrap_or_else(|_| v.clone())
            }
            None => match process.get(&e.key) {
                Some(v) => v.clone(),
                None => continue,
            },
        };
        seen.insert(e.key.clone(), value.clone());
        out.push((e.key.clone(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_comments_quotes_and_export() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='x # y'\nD=\"l1\\nl2\"\nE=v # note\nF=\nG\n";
        let e = parse(text).expect("valid");
        let kv: Vec<(&str, Option<&str>)> = e
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("A", Some("1")),
                ("B", Some("two words")),
                ("C", Some("x # y")),
                ("D", Some("l1\nl2")),
                ("E", Some("v")),
                ("F", Some("")),
                ("G", None)
            ]
        );
        assert_eq!(e[1].line, 4);
    }

    #[test]
    fn quoted_values_take_comments_lines_and_escapes_as_compose_go_does() {
        let text = concat!(
            "EMPTY=\"\" # it'll be appended\n",
            "SQ='a b' # note\n",
            "MULTI=\"line1\nline2\"\n",
            "KEY: yaml-like\n",
            "ESC=\"a\\\"b\\qc\\$d\"\n",
            "LIT='it\\'s \\n'\n",
            "AFTER=1\n",
        );
        let e = parse(text).expect("valid");
        let kv: Vec<(&str, Option<&str>, usize)> = e
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref(), e.line))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("EMPTY", Some(""), 1),
                ("SQ", Some("a b"), 2),
                ("MULTI", Some("line1\nline2"), 3),
                ("KEY", Some("yaml-like"), 5),
                ("ESC", Some("a\"b\\qc$$d"), 6),
                ("LIT", Some("it's \\n"), 7),
                ("AFTER", Some("1"), 8),
            ]
        );
        let r: HashMap<String, String> = resolve(&e, &HashMap::new()).into_iter().collect();
        assert_eq!(r["ESC"], "a\"b\\qc$d", "\\$ is a literal dollar");
    }

    #[test]
    fn bare_keys_come_from_the_process() {
        let e = parse("G\nH\n").expect("valid");
        let env = HashMap::from([("G".to_string(), "from-env".to_string())]);
        assert_eq!(
            resolve(&e, &env),
            vec![("G".to_string(), "from-env".to_string())]
        );
    }

    #[test]
    fn values_expand_earlier_lines_and_the_process_unless_single_quoted() {
        let e = parse("BASE=/srv\nDATA=${BASE}/data\nRAW='${BASE}'\nH=$HOME/x\nD=${NOPE:-d}\n")
            .expect("valid");
        let env = HashMap::from([("HOME".to_string(), "/root".to_string())]);
        let r: HashMap<String, String> = resolve(&e, &env).into_iter().collect();
        assert_eq!(r["DATA"], "/srv/data");
        assert_eq!(r["RAW"], "${BASE}");
        assert_eq!(r["H"], "/root/x");
        assert_eq!(r["D"], "d");
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(parse("A=1\nB='open\n").expect_err("must fail").0, 2);
        assert_eq!(parse("A B=1\n").expect_err("must fail").0, 1);
    }
}
