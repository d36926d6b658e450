//! `.env` and `env_file` parsing: `KEY=VALUE` lines, `#` comments, blank lines, an
//! optional `export ` prefix, and values in single quotes (literal) or double quotes
//! (with `\n`, `\t`, `\"`, `\\` escapes). A bare `KEY` line takes its value from the
//! process environment when set there (Docker's `--env-file` rule), else is dropped.
//! Values other than single-quoted ones expand `${VAR}` forms, as in compose-go.

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
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
        let (key, value) = match l.split_once('=') {
            Some((k, v)) => (k.trim_end(), Some(v)),
            None => (l.trim_end(), None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err((line, format!("invalid variable name {key:?}")));
        }
        let literal = value.is_some_and(|v| v.trim().starts_with('\''));
        let value = match value {
            None => None,
            Some(v) => Some(unquote(v).map_err(|m| (line, m))?),
        };
        out.push(Entry {
            line,
            key: key.to_string(),
            value,
            literal,
        });
    }
    Ok(out)
}

fn unquote(v: &str) -> Result<String, String> {
    let t = v.trim();
    if let Some(inner) = t.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(str::to_string)
            .ok_or_else(|| "unterminated single quote".to_string());
    }
    if let Some(inner) = t.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| "unterminated double quote".to_string())?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(o) => out.push(o),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        return Ok(out);
    }
    // Unquoted: an inline comment needs a space before the '#'.
    let t = match t.find(" #") {
        Some(i) => t[..i].trim_end(),
        None => t,
    };
    Ok(t.to_string())
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
