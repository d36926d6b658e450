//! The Dockerfile parser (the classic builder's grammar, without heredocs).
//!
//! Parsing is two-phase like Docker's: [`parse`] splits the file into instructions
//! (comments, `# escape=` directive, line continuations) and checks every one of them
//! against its grammar, so errors name the file and line before anything runs; the
//! executor later calls [`Instruction::typed`] with the variables in scope at that step,
//! because `$VAR` expansion depends on ENV and ARG values seen so far.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// One instruction as written: keyword, `--flags`, and the raw argument text.
#[derive(Clone, Debug, PartialEq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// Upper-case keyword.
    pub keyword: String,
    pub flags: Vec<(String, String)>,
    pub rest: String,
    /// The instruction as written (continuations joined), for history and cache keys.
    pub original: String,
}

/// A command in shell form (run through SHELL) or exec form (a JSON array).
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

impl Command {
    /// argv for this command given the stage's SHELL.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => shell
                .iter()
                .cloned()
                .chain(std::iter::once(s.clone()))
                .collect(),
        }
    }
}

/// An instruction with its arguments parsed (and variables expanded where Docker does).
#[derive(Clone, Debug, PartialEq)]
pub enum Typed {
    From {
        image: String,
        alias: Option<String>,
        platform: Option<String>,
    },
    Run {
        cmd: Command,
        network: Option<String>,
    },
    Cmd(Command),
    Entrypoint(Command),
    Copy {
        srcs: Vec<String>,
        dest: String,
        chown: Option<String>,
        chmod: Option<String>,
        from: Option<String>,
    },
    Add {
        srcs: Vec<String>,
        dest: String,
        chown: Option<String>,
        chmod: Option<String>,
    },
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Healthcheck(Option<serde_json::Value>),
    Shell(Vec<String>),
    StopSignal(String),
    Maintainer(String),
    OnBuild(String),
}

const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "ENTRYPOINT",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "LABEL",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "VOLUME",
    "HEALTHCHECK",
    "SHELL",
    "STOPSIGNAL",
    "MAINTAINER",
    "ONBUILD",
];

/// Splits `text` (the Dockerfile named `file`) into checked instructions.
pub fn parse(file: &str, text: &str) -> Result<Vec<Instruction>, ParseError> {
    let err = |line: usize, message: String| ParseError {
        file: file.into(),
        line,
        message,
    };
    let mut escape = '\\';
    let lines: Vec<&str> = text.lines().collect();
    // Parser directives: only at the very top, before any other line.
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(d) = l.strip_prefix('#') else { break };
        let Some((k, v)) = d.split_once('=') else {
            break;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "escape" => {
                escape = match v.trim() {
                    "`" => '`',
                    "\\" => '\\',
                    other => {
                        return Err(err(
                            i + 1,
                            format!("invalid escape token {other:?}: must be ` or \\"),
                        ))
                    }
                }
            }
            "syntax" | "check" => {}
            _ => break,
        }
        i += 1;
    }
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (n, raw) in lines.iter().enumerate() {
        let lineno = n + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue; // comments, also inside continuations
        }
        if trimmed.trim().is_empty() {
            if cur.is_none() {
                continue;
            }
            continue; // empty continuation lines are skipped
        }
        let t = raw.trim_end();
        let (body, cont) = match t.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (t, false),
        };
        match &mut cur {
            Some((_, acc)) => acc.push_str(body),
            None => cur = Some((lineno, body.trim_start().to_string())),
        }
        if !cont {
            if let Some((start, text)) = cur.take() {
                out.push(split_instruction(start, &text).map_err(|m| err(start, m))?);
            }
        }
    }
    if let Some((start, text)) = cur.take() {
        out.push(split_instruction(start, &text).map_err(|m| err(start, m))?);
    }
    if out.is_empty() {
        return Err(err(1, "the Dockerfile has no instructions".into()));
    }
    let first_non_arg = out.iter().find(|i| i.keyword != "ARG");
    if let Some(f) = first_non_arg {
        if f.keyword != "FROM" {
            return Err(err(
                f.line,
                format!(
                    "{} before the first FROM: only ARG may come before FROM",
                    f.keyword
                ),
            ));
        }
    } else {
        return Err(err(out[0].line, "no FROM instruction".into()));
    }
    // Check every instruction's grammar now, with unknown variables empty.
    let empty = HashMap::new();
    for ins in &out {
        ins.typed(&empty).map_err(|m| err(ins.line, m))?;
    }
    Ok(out)
}

fn split_instruction(line: usize, text: &str) -> Result<Instruction, String> {
    let text = text.trim();
    let (kw, mut rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let keyword = kw.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(format!("unknown instruction: {kw}"));
    }
    let mut flags = Vec::new();
    rest = rest.trim_start();
    while let Some(f) = rest.strip_prefix("--") {
        let (flag, r) = f.split_once(char::is_whitespace).unwrap_or((f, ""));
        let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
        flags.push((k.to_ascii_lowercase(), v.to_string()));
        rest = r.trim_start();
    }
    Ok(Instruction {
        line,
        keyword,
        flags,
        rest: rest.trim().to_string(),
        original: text.to_string(),
    })
}

impl Instruction {
    fn flag(&self, name: &str) -> Option<String> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn only_flags(&self, allowed: &[&str]) -> Result<(), String> {
        match self
            .flags
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!("unknown flag: --{k} for {}", self.keyword)),
            None => Ok(()),
        }
    }

    /// Parses the arguments, expanding `$VAR` from `vars` for the instructions Docker expands.
    pub fn typed(&self, vars: &HashMap<String, String>) -> Result<Typed, String> {
        let x = |s: &str| expand(s, vars);
        let rest = self.rest.as_str();
        let need_args = || {
            if rest.is_empty() {
                Err(format!("{} requires at least one argument", self.keyword))
            } else {
                Ok(())
            }
        };
        Ok(match self.keyword.as_str() {
            "FROM" => {
                self.only_flags(&["platform"])?;
                need_args()?;
                let words: Vec<&str> = rest.split_whitespace().collect();
                let (image, alias) =
                    match words.as_slice() {
                        [img] => (x(img)?, None),
                        [img, as_, name] if as_.eq_ignore_ascii_case("as") => {
                            (x(img)?, Some(name.to_ascii_lowercase()))
                        }
                        _ => return Err(
                            "FROM requires either one or three arguments (FROM IMAGE [AS NAME])"
                                .into(),
                        ),
                    };
                Typed::From {
                    image,
                    alias,
                    platform: self.flag("platform"),
                }
            }
            "RUN" => {
                self.only_flags(&["network"])?;
                need_args()?;
                Typed::Run {
                    cmd: command(rest)?,
                    network: self.flag("network"),
                }
            }
            "CMD" => {
                self.only_flags(&[])?;
                Typed::Cmd(command(rest)?)
            }
            "ENTRYPOINT" => {
                self.only_flags(&[])?;
                Typed::Entrypoint(command(rest)?)
            }
            "COPY" | "ADD" => {
                if self.keyword == "COPY" {
                    self.only_flags(&["chown", "chmod", "from", "link"])?;
                } else {
                    self.only_flags(&["chown", "chmod", "link", "checksum", "keep-git-dir"])?;
                }
                let mut words = match json_array(rest)? {
                    Some(v) => v,
                    None => split_words(rest)?,
                };
                let words = words
                    .iter_mut()
                    .map(|w| x(w))
                    .collect::<Result<Vec<_>, _>>()?;
                if words.len() < 2 {
                    return Err(format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", self.keyword));
                }
                let (dest, srcs) = words.split_last().ok_or("missing destination")?;
                let chown = self.flag("chown").map(|c| x(&c)).transpose()?;
                let chmod = self.flag("chmod");
                if self.keyword == "COPY" {
                    Typed::Copy {
                        srcs: srcs.to_vec(),
                        dest: dest.clone(),
                        chown,
                        chmod,
                        from: self.flag("from"),
                    }
                } else {
                    Typed::Add {
                        srcs: srcs.to_vec(),
                        dest: dest.clone(),
                        chown,
                        chmod,
                    }
                }
            }
            "ENV" | "LABEL" => {
                self.only_flags(&[])?;
                need_args()?;
                let pairs = key_values(rest, self.keyword == "ENV")?
                    .into_iter()
                    .map(|(k, v)| Ok((x(&k)?, x(&v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                if self.keyword == "ENV" {
                    Typed::Env(pairs)
                } else {
                    Typed::Label(pairs)
                }
            }
            "ARG" => {
                self.only_flags(&[])?;
                need_args()?;
                let mut out = Vec::new();
                for w in split_words(rest)? {
                    match w.split_once('=') {
                        Some((k, v)) => out.push((k.to_string(), Some(x(v)?))),
                        None => out.push((w.clone(), None)),
                    }
                }
                for (k, _) in &out {
                    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("ARG name {k:?} is invalid"));
                    }
                }
                Typed::Arg(out)
            }
            "WORKDIR" => {
                need_args()?;
                Typed::Workdir(x(rest)?)
            }
            "USER" => {
                need_args()?;
                Typed::User(x(rest)?)
            }
            "EXPOSE" => {
                need_args()?;
                let mut ports = Vec::new();
                for p in x(rest)?.split_whitespace() {
                    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    let ok = num.split('-').all(|n| n.parse::<u16>().is_ok());
                    if !ok || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(format!("invalid containerPort: {p}"));
                    }
                    ports.push(format!("{num}/{proto}"));
                }
                Typed::Expose(ports)
            }
            "VOLUME" => {
                need_args()?;
                let vols = match json_array(rest)? {
                    Some(v) => v,
                    None => rest.split_whitespace().map(String::from).collect(),
                };
                let vols = vols.iter().map(|v| x(v)).collect::<Result<Vec<_>, _>>()?;
                if vols.iter().any(|v| v.trim().is_empty()) {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                Typed::Volume(vols)
            }
            "HEALTHCHECK" => {
                self.only_flags(&[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ])?;
                need_args()?;
                let (kind, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                match kind.to_ascii_uppercase().as_str() {
                    "NONE" => {
                        if !cmd.trim().is_empty() || !self.flags.is_empty() {
                            return Err("HEALTHCHECK NONE takes no arguments".into());
                        }
                        Typed::Healthcheck(Some(serde_json::json!({"Test": ["NONE"]})))
                    }
                    "CMD" => {
                        let test = match command(cmd.trim())? {
                            Command::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v)
                                .collect::<Vec<_>>(),
                            Command::Shell(s) => vec!["CMD-SHELL".into(), s],
                        };
                        let mut h = serde_json::json!({ "Test": test });
                        for (flag, key) in [
                            ("interval", "Interval"),
                            ("timeout", "Timeout"),
                            ("start-period", "StartPeriod"),
                            ("start-interval", "StartInterval"),
                        ] {
                            if let Some(v) = self.flag(flag) {
                                h[key] = serde_json::json!(parse_duration(&v)
                                    .ok_or(format!("invalid --{flag} duration {v:?}"))?);
                            }
                        }
                        if let Some(v) = self.flag("retries") {
                            h["Retries"] = serde_json::json!(v
                                .parse::<u32>()
                                .map_err(|_| format!("invalid --retries {v:?}"))?);
                        }
                        Typed::Healthcheck(Some(h))
                    }
                    other => {
                        return Err(format!("unknown type {other:?} in HEALTHCHECK (try CMD)"))
                    }
                }
            }
            "SHELL" => match json_array(rest)? {
                Some(v) if !v.is_empty() => Typed::Shell(v),
                _ => return Err("SHELL requires the arguments to be in JSON form".into()),
            },
            "STOPSIGNAL" => {
                need_args()?;
                Typed::StopSignal(x(rest)?)
            }
            "MAINTAINER" => Typed::Maintainer(rest.to_string()),
            "ONBUILD" => {
                need_args()?;
                let inner = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if matches!(inner.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(format!("{inner} isn't allowed as an ONBUILD trigger"));
                }
                Typed::OnBuild(rest.to_string())
            }
            other => return Err(format!("unknown instruction: {other}")),
        })
    }
}

/// Go duration strings as Docker accepts them (`30s`, `1m30s`, `500ms`) → nanoseconds.
fn parse_duration(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

/// `["a","b"]` → exec form; anything else is shell form.
fn command(rest: &str) -> Result<Command, String> {
    Ok(match json_array(rest)? {
        Some(v) => Command::Exec(v),
        None => Command::Shell(rest.to_string()),
    })
}

/// A JSON array of strings, if `s` is one (Docker falls back to shell form otherwise).
fn json_array(s: &str) -> Result<Option<Vec<String>>, String> {
    let t = s.trim();
    if !t.starts_with('[') {
        return Ok(None);
    }
    Ok(serde_json::from_str::<Vec<String>>(t).ok())
}

/// Splits on whitespace, honouring quotes and backslash escapes (ARG, COPY).
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', q) if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    // Keep `\$` escaped for the expander.
                    if n == '$' {
                        cur.push('\\');
                    }
                    cur.push(n);
                    have = true;
                }
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                have = true;
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (c, _) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in {s:?}"));
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

/// `K=V K2="v 2"`, or the legacy single-pair `K some value` (ENV only; LABEL needs `=`).
fn key_values(s: &str, legacy_ok: bool) -> Result<Vec<(String, String)>, String> {
    let words = split_words(s)?;
    let first_has_eq = s
        .split_whitespace()
        .next()
        .map(|w| w.contains('='))
        .unwrap_or(false);
    if !first_has_eq {
        if !legacy_ok || words.len() < 2 {
            return Err(format!("syntax error: want KEY=VALUE in {s:?}"));
        }
        let (k, v) = s
            .trim()
            .split_once(char::is_whitespace)
            .ok_or("missing value")?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("empty key in {s:?}")),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!(
                "syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}`; `\$` is a literal `$`.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('{') => {
                let close = chars[i + 2..]
                    .iter()
                    .position(|&c| c == '}')
                    .ok_or_else(|| format!("missing '}}' in {s:?}"))?;
                let inner: String = chars[i + 2..i + 2 + close].iter().collect();
                i += close + 3;
                let (name, op) = match inner.find(':') {
                    Some(p) => (&inner[..p], Some(&inner[p..])),
                    None => (inner.as_str(), None),
                };
                let val = vars.get(name).filter(|v| !v.is_empty());
                match op {
                    None => out.push_str(vars.get(name).map(String::as_str).unwrap_or("")),
                    Some(o) if o.starts_with(":-") => match val {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&expand(&o[2..], vars)?),
                    },
                    Some(o) if o.starts_with(":+") => {
                        if val.is_some() {
                            out.push_str(&expand(&o[2..], vars)?);
                        }
                    }
                    Some(o) => {
                        return Err(format!("unsupported modifier ({o}) in substitution {s:?}"))
                    }
                }
            }
            Some(&n) if n.is_ascii_alphabetic() || n == '_' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
                i = end;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn continuations_comments_and_forms() {
        let df = "# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM $BASE AS build\n# a comment\nRUN echo a \\\n  # inside\n  && echo b\nRUN [\"echo\", \"exec\"]\nCMD [\"sh\"]\nENV A=1 B=\"two words\"\nENV LEGACY some value\n";
        let ins = parse("Dockerfile", df).expect("parse");
        let kws: Vec<&str> = ins.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(kws, ["ARG", "FROM", "RUN", "RUN", "CMD", "ENV", "ENV"]);
        assert_eq!(ins[2].line, 5);
        assert_eq!(
            ins[2].typed(&HashMap::new()),
            Ok(Typed::Run {
                cmd: Command::Shell("echo a   && echo b".into()),
                network: None
            })
        );
        assert_eq!(
            ins[3].typed(&HashMap::new()),
            Ok(Typed::Run {
                cmd: Command::Exec(vec!["echo".into(), "exec".into()]),
                network: None
            })
        );
        assert_eq!(
            ins[1].typed(&vars(&[("BASE", "alpine")])),
            Ok(Typed::From {
                image: "alpine".into(),
                alias: Some("build".into()),
                platform: None
            })
        );
        assert_eq!(
            ins[5].typed(&HashMap::new()),
            Ok(Typed::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ]))
        );
        assert_eq!(
            ins[6].typed(&HashMap::new()),
            Ok(Typed::Env(vec![("LEGACY".into(), "some value".into())]))
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("ctx/Dockerfile", "FROM busybox\n\nFROBNICATE x\n").expect_err("unknown");
        assert_eq!((e.file.as_str(), e.line), ("ctx/Dockerfile", 3));
        assert!(
            e.to_string()
                .starts_with("ctx/Dockerfile:3: unknown instruction: FROBNICATE"),
            "{e}"
        );
        let e = parse("D", "RUN true\n").expect_err("no from");
        assert_eq!(e.line, 1);
        let e = parse("D", "FROM a\nCOPY onlyone\n").expect_err("copy");
        assert_eq!(e.line, 2);
        let e = parse("D", "FROM a\nLABEL novalue\n").expect_err("label");
        assert_eq!(e.line, 2);
        let e = parse("D", "FROM a\nRUN --mount=type=cache true\n").expect_err("flag");
        assert!(e.message.contains("unknown flag"), "{e}");
        let e = parse("D", "FROM a\nEXPOSE 80/xyz\n").expect_err("expose");
        assert_eq!(e.line, 2);
        assert!(
            parse("D", "FROM a\nSHELL /bin/bash -c\n").is_err(),
            "SHELL must be JSON"
        );
    }

    #[test]
    fn expansion_like_docker() {
        let v = vars(&[("A", "x"), ("E", "")]);
        assert_eq!(
            expand("$A/${A}/${B:-def}/${A:+alt}/${E:-e}/\\$A/$", &v),
            Ok("x/x/def/alt/e/$A/$".into())
        );
        assert!(expand("${A", &v).is_err());
    }

    #[test]
    fn copy_flags_and_escape_directive() {
        let ins = parse(
            "D",
            "# escape=`\nFROM a\nCOPY --from=build --chown=1:2 a b `\n  /dst/\n",
        )
        .expect("parse");
        assert_eq!(
            ins[1].typed(&HashMap::new()),
            Ok(Typed::Copy {
                srcs: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                chown: Some("1:2".into()),
                chmod: None,
                from: Some("build".into())
            })
        );
    }

    #[test]
    fn healthcheck_and_durations() {
        let ins = parse(
            "D",
            "FROM a\nHEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\n",
        )
        .expect("parse");
        match ins[1].typed(&HashMap::new()) {
            Ok(Typed::Healthcheck(Some(h))) => {
                assert_eq!(
                    h["Test"],
                    serde_json::json!(["CMD-SHELL", "wget -q localhost"])
                );
                assert_eq!(h["Interval"], serde_json::json!(5_000_000_000i64));
                assert_eq!(h["Retries"], serde_json::json!(3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("x"), None);
    }
}
