//! Output for list commands: Docker-style aligned tables, `--format json` (one object
//! per line), and Go templates (`--format '{{.Names}}'`, `--format 'table {{.ID}}'`).

use crate::template::Template;
use anyhow::{Context, Result};
use serde_json::Value;

pub enum Format {
    Table,
    Json,
    Template(Template),
}

impl Format {
    pub fn parse(opt: Option<&str>) -> Result<Format> {
        match opt.map(str::trim) {
            None | Some("") | Some("table") => Ok(Format::Table),
            Some("json") | Some("{{json .}}") => Ok(Format::Json),
            Some(t) => Ok(Format::Template(
                Template::parse(t).with_context(|| format!("invalid --format {t:?}"))?,
            )),
        }
    }
}

/// Prints `rows` (objects whose keys are Docker's template field names) in `format`.
/// `columns` are (field, header) pairs for the default table.
pub fn print_rows(format: &Format, columns: &[(&str, &str)], rows: &[Value]) -> Result<()> {
    print!("{}", render_rows(format, columns, rows)?);
    Ok(())
}

/// What [`print_rows`] prints.
pub fn render_rows(format: &Format, columns: &[(&str, &str)], rows: &[Value]) -> Result<String> {
    let mut out = String::new();
    match format {
        Format::Json => {
            for r in rows {
                out.push_str(&serde_json::to_string(r)?);
                out.push('\n');
            }
        }
        Format::Table => {
            let mut table = vec![columns
                .iter()
                .map(|(_, h)| h.to_string())
                .collect::<Vec<_>>()];
            for r in rows {
                table.push(columns.iter().map(|(f, _)| cell(r.get(*f))).collect());
            }
            out.push_str(&align(&table));
        }
        Format::Template(t) => {
            if t.is_table() {
                let mut table = vec![t
                    .fields()
                    .iter()
                    .map(|f| {
                        columns
                            .iter()
                            .find(|(k, _)| k == f)
                            .map(|(_, h)| h.to_string())
                            .unwrap_or_else(|| f.to_uppercase())
                    })
                    .collect::<Vec<_>>()];
                for r in rows {
                    table.push(t.render(r)?.split('\t').map(String::from).collect());
                }
                out.push_str(&align(&table));
            } else {
                for r in rows {
                    out.push_str(&t.render(r)?);
                    out.push('\n');
                }
            }
        }
    }
    Ok(out)
}

fn cell(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// Prints inspect documents: a JSON array, or each rendered with `-f TEMPLATE`.
pub fn print_docs(docs: &[Value], template: Option<&str>) -> Result<()> {
    match template.map(Template::parse).transpose()? {
        Some(t) => {
            for d in docs {
                println!("{}", t.render(d)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(docs)?),
    }
    Ok(())
}

/// Pads columns to a common width with three spaces between them (Docker's tabwriter).
pub fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Docker's SIZE column: decimal units with three significant digits.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        let s = if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        };
        format!(
            "{}{}",
            s.trim_end_matches('0').trim_end_matches('.'),
            units[i]
        )
    }
}

/// "3 minutes ago" from a unix timestamp.
pub fn ago(unix: i64) -> String {
    let secs = chrono::Utc::now().timestamp() - unix;
    format!("{} ago", skiff_agent::humanize::duration(secs))
}

/// Parses `--since/--until`: RFC 3339, unix seconds (with optional fraction), or a
/// duration before now (`10m`, `1h30m`, `45s`). Returns unix nanoseconds.
pub fn parse_time(s: &str) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_nanos_opt().unwrap_or_default());
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f * 1e9) as i64);
    }
    let mut total = 0f64;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().with_context(|| format!("invalid time {s:?}"))?;
        num.clear();
        total += n * match ch {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => anyhow::bail!(
                "invalid time {s:?}: want RFC 3339, unix seconds or a duration like 10m"
            ),
        };
    }
    if !num.is_empty() {
        anyhow::bail!("invalid time {s:?}: a duration needs a unit (s, m, h)");
    }
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    Ok(now - (total * 1e9) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = align(&[
            vec!["A".into(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(t, "A     BB\nccc   d\n");
    }

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(2_220_000), "2.22MB");
        assert_eq!(human_size(123_456_789), "123MB");
    }

    #[test]
    fn times() {
        assert!(parse_time("10m").is_ok());
        assert_eq!(
            parse_time("1700000000").expect("unix"),
            1_700_000_000_000_000_000
        );
        assert!(parse_time("2024-01-01T00:00:00Z").is_ok());
        assert!(parse_time("10x").is_err());
        assert!(parse_time("10").is_ok());
    }
}
