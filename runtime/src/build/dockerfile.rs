//! The Dockerfile parser: the classic builder's grammar plus what BuildKit's frontend
//! added (heredocs, `RUN --mount/--network/--security`, COPY `--parents/--exclude`,
//! symbolic `--chmod`).
//!
//! Parsing is two-phase like Docker's: [`parse`] splits the file into instructions
//! (comments, `# escape=`/`# syntax=`/`# check=` directives, line continuations,
//! heredoc bodies) and checks every one of them
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
    /// Here-documents opened on the instruction's line, in order (RUN, COPY, ADD).
    pub heredocs: Vec<Heredoc>,
}

/// One here-document: `<<NAME`, `<<-NAME` (leading tabs stripped), `<<"NAME"` (no
/// expansion).
#[derive(Clone, Debug, PartialEq)]
pub struct Heredoc {
    pub name: String,
    /// The lines between the instruction and the terminator, each ending in `\n`.
    pub body: String,
    pub chomp: bool,
    /// The delimiter was unquoted: variables in the body are expanded (COPY/ADD).
    pub expand: bool,
}

impl Heredoc {
    /// The body as a file gets it: `<<-` strips every line's leading tabs.
    pub fn content(&self) -> String {
        if !self.chomp {
            return self.body.clone();
        }
        self.body
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// `<<EOF`, `<<-EOF`, `2<<"EOF"` as one shell word → (name, chomp, expand), like
/// BuildKit's `^(\d*)<<(-?)([^<]*)$` with the quotes removed from the name.
fn heredoc_word(word: &str) -> Option<(String, bool, bool)> {
    let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let w = w.strip_prefix("<<")?;
    let (chomp, w) = match w.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, w),
    };
    if w.is_empty() || w.contains('<') {
        return None;
    }
    let name: String = w.chars().filter(|c| *c != '"' && *c != '\'').collect();
    if name.is_empty() {
        return None;
    }
    let expand = name.len() == w.len();
    Some((name, chomp, expand))
}

/// Whitespace-separated words with their quotes kept (heredoc detection must see them).
fn raw_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                cur.push(c);
            }
            (c, Some(q)) if c == q => {
                quote = None;
                cur.push(c);
            }
            (c, None) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (c, _) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
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
    Run(RunSpec),
    Cmd(Command),
    Entrypoint(Command),
    /// COPY and ADD (`add` tells them apart).
    Copy(CopySpec),
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

/// A RUN instruction with its flags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSpec {
    pub cmd: Command,
    /// `RUN <<EOF` whose body starts with `#!`: the body is written to a file and
    /// executed directly (BuildKit mounts it under `/dev/pipes/`; we use `/run/heredoc/`).
    pub script: Option<(String, String)>,
    /// `--network=default|none|host` (`None` when not given or `default`).
    pub network: Option<String>,
    /// `--security=insecure`.
    pub insecure: bool,
    pub mounts: Vec<RunMount>,
}

impl Default for Command {
    fn default() -> Self {
        Command::Shell(String::new())
    }
}

/// `--mount=` sharing mode of a cache mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// One `RUN --mount=...`.
#[derive(Clone, Debug, PartialEq)]
pub enum RunMount {
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Stage or image whose `source` path seeds a new cache directory.
        from: Option<String>,
        source: String,
        readonly: bool,
    },
    Secret {
        id: String,
        /// File path; `None` when only `env=` was asked for.
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Bind {
        target: String,
        source: String,
        from: Option<String>,
        rw: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

/// COPY or ADD with its flags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopySpec {
    pub add: bool,
    pub srcs: Vec<String>,
    /// Here-documents used as sources: (file name, content).
    pub inline: Vec<(String, String)>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    pub from: Option<String>,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub link: bool,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
}

/// `--chmod`: octal, or symbolic clauses as chmod(1) takes them (`u+x,go-w`, `a=r`).
#[derive(Clone, Debug, PartialEq)]
pub enum Chmod {
    Octal(u32),
    /// (who mask, op, permission bits, `X`), in order.
    Symbolic(Vec<(u32, char, u32, bool)>),
}

impl Chmod {
    pub fn parse(s: &str) -> Result<Chmod, String> {
        let bad = || format!("invalid --chmod {s:?}: want octal (0755) or symbolic (u+x,go-w)");
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            let m = u32::from_str_radix(s, 8).map_err(|_| bad())?;
            if m > 0o7777 {
                return Err(bad());
            }
            return Ok(Chmod::Octal(m));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let mut who = 0u32;
            let mut chars = clause.chars().peekable();
            while let Some(&c) = chars.peek() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => break,
                };
                chars.next();
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut any = false;
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad());
                }
                let mut bits = 0u32;
                let mut big_x = false;
                while let Some(&c) = chars.peek() {
                    match c {
                        'r' => bits |= 0o444,
                        'w' => bits |= 0o222,
                        'x' => bits |= 0o111,
                        'X' => big_x = true,
                        's' => bits |= 0o6000,
                        't' => bits |= 0o1000,
                        _ => break,
                    }
                    chars.next();
                }
                clauses.push((who, op, bits, big_x));
                any = true;
            }
            if !any {
                return Err(bad());
            }
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode a file with `mode` ends up with (`X`: only directories or files
    /// already executable by someone get `x`).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for (who, op, bits, big_x) in clauses {
                    let mut b = *bits;
                    if *big_x && (is_dir || m & 0o111 != 0) {
                        b |= 0o111;
                    }
                    let b = b & who;
                    match op {
                        '+' => m |= b,
                        '-' => m &= !b,
                        _ => m = (m & !who) | b,
                    }
                }
                m
            }
        }
    }
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
    let mut n = 0;
    while n < lines.len() {
        let raw = lines[n];
        n += 1;
        let lineno = n;
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
                let mut ins = split_instruction(start, &text).map_err(|m| err(start, m))?;
                n = read_heredocs(&mut ins, &lines, n).map_err(|m| err(start, m))?;
                out.push(ins);
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
        ins.check(&empty).map_err(|m| err(ins.line, m))?;
    }
    Ok(out)
}

/// Reads the bodies of the heredocs `ins` opens from `lines[next..]` (BuildKit: RUN, COPY
/// and ADD only; bodies are read in the order the heredocs appear, each up to a line
/// that is exactly its name, after leading tabs for `<<-`). Returns the next line index.
fn read_heredocs(ins: &mut Instruction, lines: &[&str], mut next: usize) -> Result<usize, String> {
    if !matches!(ins.keyword.as_str(), "RUN" | "COPY" | "ADD") || json_array(&ins.rest)?.is_some() {
        return Ok(next);
    }
    for word in raw_words(&ins.rest) {
        let Some((name, chomp, expand)) = heredoc_word(&word) else {
            continue;
        };
        let mut body = String::new();
        let mut done = false;
        while next < lines.len() {
            let l = lines[next].trim_end_matches('\r');
            next += 1;
            let term = if chomp { l.trim_start_matches('\t') } else { l };
            if term == name {
                done = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if !done {
            return Err(format!(
                "unterminated heredoc <<{name} in {}: no line reading {name} before the end of the file",
                ins.keyword
            ));
        }
        ins.heredocs.push(Heredoc {
            name,
            body,
            chomp,
            expand,
        });
    }
    Ok(next)
}

/// An ONBUILD trigger's text as an instruction of the build that runs it (at its FROM line).
pub fn parse_trigger(file: &str, line: usize, text: &str) -> Result<Instruction, ParseError> {
    split_instruction(line, text).map_err(|message| ParseError {
        file: file.into(),
        line,
        message: format!("ONBUILD trigger {text:?}: {message}"),
    })
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
        heredocs: Vec::new(),
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

    /// Every value of a repeatable flag (`--mount`, `--exclude`), in order.
    fn flag_all(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean flag: `--link`, `--link=true`, `--link=false`.
    fn flag_bool(&self, name: &str) -> Result<bool, String> {
        match self.flag(name).as_deref() {
            None => Ok(false),
            Some("" | "true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(format!(
                "invalid value {v:?} for --{name}: want true or false"
            )),
        }
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

    /// The parse-time check: like [`Instruction::typed`] with no variables known, except
    /// that flag values built from variables (`--mount=type=$T`) are checked only when
    /// the step runs, with their real values; a Dockerfile is never refused for what an
    /// empty variable would make of it.
    pub fn check(&self, vars: &HashMap<String, String>) -> Result<Typed, String> {
        self.typed_inner(vars, true)
    }

    /// Parses the arguments, expanding `$VAR` from `vars` for the instructions Docker expands.
    pub fn typed(&self, vars: &HashMap<String, String>) -> Result<Typed, String> {
        self.typed_inner(vars, false)
    }

    fn typed_inner(&self, vars: &HashMap<String, String>, lenient: bool) -> Result<Typed, String> {
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
                self.only_flags(&["network", "mount", "security"])?;
                need_args()?;
                self.run_spec(vars, lenient)?
            }
            "CMD" => {
                self.only_flags(&[])?;
                Typed::Cmd(command(rest)?)
            }
            "ENTRYPOINT" => {
                self.only_flags(&[])?;
                Typed::Entrypoint(command(rest)?)
            }
            "COPY" | "ADD" => self.copy_spec(vars, lenient)?,
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
                // The trigger runs in a later build: check its grammar now.
                let trigger = split_instruction(self.line, rest)?;
                trigger.check(&HashMap::new())?;
                Typed::OnBuild(rest.to_string())
            }
            other => return Err(format!("unknown instruction: {other}")),
        })
    }
}

impl Instruction {
    fn run_spec(&self, vars: &HashMap<String, String>, lenient: bool) -> Result<Typed, String> {
        let x = |s: &str| expand(s, vars);
        let network = match self.flag("network").as_deref() {
            None | Some("default") => None,
            Some(n @ ("none" | "host")) => Some(n.to_string()),
            Some(other) => {
                return Err(format!(
                    "unsupported --network={other} for RUN: want default, none or host"
                ))
            }
        };
        let insecure = match self.flag("security").as_deref() {
            None | Some("sandbox") => false,
            Some("insecure") => true,
            Some(other) => {
                return Err(format!(
                    "unsupported --security={other} for RUN: want sandbox or insecure"
                ))
            }
        };
        let mut mounts = Vec::new();
        for m in self.flag_all("mount") {
            if lenient && m.contains('$') {
                continue; // checked with the real values when the step runs
            }
            mounts.push(parse_mount(&x(&m)?)?);
        }
        let mut script = None;
        let cmd = if self.heredocs.is_empty() {
            command(&self.rest)?
        } else {
            if json_array(&self.rest)?.is_some() {
                return Err("a heredoc cannot be used with the exec (JSON) form of RUN".into());
            }
            let words = raw_words(&self.rest);
            let only_heredoc =
                self.heredocs.len() == 1 && words.len() == 1 && heredoc_word(&words[0]).is_some();
            if only_heredoc {
                // `RUN <<EOF`: the body is the script (BuildKit runs a `#!` body as a file).
                let h = &self.heredocs[0];
                let data = h.content();
                if data.starts_with("#!") {
                    script = Some((h.name.clone(), data.clone()));
                }
                Command::Shell(data)
            } else {
                // `RUN python3 <<EOF`, several heredocs: the shell reads them itself.
                let mut full = self.rest.clone();
                for h in &self.heredocs {
                    full.push('\n');
                    full.push_str(&h.body);
                    full.push_str(&h.name);
                }
                Command::Shell(full)
            }
        };
        Ok(Typed::Run(RunSpec {
            cmd,
            script,
            network,
            insecure,
            mounts,
        }))
    }

    fn copy_spec(&self, vars: &HashMap<String, String>, lenient: bool) -> Result<Typed, String> {
        let x = |s: &str| expand(s, vars);
        let add = self.keyword == "ADD";
        if add {
            self.only_flags(&[
                "chown",
                "chmod",
                "link",
                "checksum",
                "keep-git-dir",
                "exclude",
                "parents",
            ])?;
        } else {
            self.only_flags(&["chown", "chmod", "from", "link", "parents", "exclude"])?;
        }
        let rest = self.rest.as_str();
        let mut inline = Vec::new();
        // Words in order; `None` marks a heredoc source.
        let words: Vec<Option<String>> = match json_array(rest)? {
            Some(v) => v
                .iter()
                .map(|w| x(w).map(Some))
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let raw = raw_words(rest);
                let mut out = Vec::new();
                for (i, w) in raw.iter().enumerate() {
                    match heredoc_word(w) {
                        Some((name, _, _)) if i + 1 < raw.len() => {
                            let h = self
                                .heredocs
                                .iter()
                                .find(|h| h.name == name)
                                .ok_or_else(|| format!("heredoc <<{name} has no body"))?;
                            let content = if h.expand {
                                expand(&h.content(), vars)?
                            } else {
                                h.content()
                            };
                            inline.push((name, content));
                            out.push(None);
                        }
                        Some(_) => {
                            return Err(format!(
                                "{}: a heredoc cannot be the destination",
                                self.keyword
                            ))
                        }
                        None => {
                            for v in split_words(w)? {
                                out.push(Some(x(&v)?));
                            }
                        }
                    }
                }
                out
            }
        };
        if words.len() < 2 {
            return Err(format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", self.keyword));
        }
        let Some((Some(dest), all)) = words.split_last() else {
            return Err("missing destination".into());
        };
        let srcs: Vec<String> = all.iter().flatten().cloned().collect();
        let chmod = self.flag("chmod").map(|m| Chmod::parse(&m)).transpose()?;
        let checksum = self.flag("checksum").map(|c| x(&c)).transpose()?;
        let raw_checksum = self.flag("checksum").unwrap_or_default();
        if let (Some(c), false) = (&checksum, lenient && raw_checksum.contains('$')) {
            let hex = c.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "invalid --checksum {c:?}: want sha256:<64 hex digits>"
                ));
            }
        }
        let exclude = self
            .flag_all("exclude")
            .iter()
            .map(|e| x(e))
            .collect::<Result<Vec<_>, _>>()?;
        if exclude.iter().any(|e| e.is_empty()) {
            return Err("--exclude needs a pattern".into());
        }
        Ok(Typed::Copy(CopySpec {
            add,
            srcs,
            inline,
            dest: dest.clone(),
            chown: self.flag("chown").map(|c| x(&c)).transpose()?,
            chmod,
            from: self.flag("from").map(|f| x(&f)).transpose()?,
            parents: self.flag_bool("parents")?,
            exclude,
            link: self.flag_bool("link")?,
            checksum,
            keep_git_dir: self.flag_bool("keep-git-dir")?,
        }))
    }
}

/// One `--mount=` value (`type=cache,target=/x,...`), checked completely so a build
/// that parses cannot fail later on the mount's syntax.
fn parse_mount(spec: &str) -> Result<RunMount, String> {
    let mut kv: Vec<(String, Option<String>)> = Vec::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        match field.split_once('=') {
            Some((k, v)) => kv.push((k.trim().to_ascii_lowercase(), Some(v.trim().to_string()))),
            None => kv.push((field.trim().to_ascii_lowercase(), None)),
        }
    }
    let get = |k: &str| -> Option<String> {
        kv.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone().unwrap_or_default())
    };
    let truthy = |k: &str| -> Result<bool, String> {
        match kv.iter().rev().find(|(n, _)| n == k) {
            None => Ok(false),
            Some((_, None)) => Ok(true),
            Some((_, Some(v))) => match v.as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("invalid value {v:?} for {k} in --mount={spec}")),
            },
        }
    };
    let num = |k: &str, default: u32, radix: u32| -> Result<u32, String> {
        match get(k) {
            None => Ok(default),
            Some(v) => u32::from_str_radix(&v, radix)
                .map_err(|_| format!("invalid {k}={v:?} in --mount={spec}")),
        }
    };
    let kind = get("type").unwrap_or_else(|| "bind".into());
    let allowed: &[&str] = match kind.as_str() {
        "cache" => &[
            "type", "target", "dst", "destination", "id", "sharing", "mode", "uid", "gid",
            "from", "source", "src", "readonly", "ro", "rw", "readwrite",
        ],
        "secret" => &[
            "type", "id", "target", "dst", "destination", "required", "mode", "uid", "gid",
            "env",
        ],
        "bind" => &[
            "type", "target", "dst", "destination", "source", "src", "from", "rw", "readwrite",
            "readonly", "ro",
        ],
        "tmpfs" => &["type", "target", "dst", "destination", "size"],
        "ssh" => {
            return Err(format!(
                "RUN --mount=type=ssh is not supported: Skiff's builder forwards no SSH agent (--mount={spec})"
            ))
        }
        other => {
            return Err(format!(
                "unknown mount type {other:?} in --mount={spec}: want cache, secret, bind or tmpfs"
            ))
        }
    };
    if let Some((k, _)) = kv.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown key {k:?} for a {kind} mount in --mount={spec}"
        ));
    }
    let target = get("target")
        .or_else(|| get("dst"))
        .or_else(|| get("destination"));
    let need_target = || -> Result<String, String> {
        match &target {
            Some(t) if t.starts_with('/') => Ok(t.clone()),
            Some(t) if !t.is_empty() => Ok(format!("/{t}")),
            _ => Err(format!("--mount={spec}: target is required")),
        }
    };
    let source = get("source").or_else(|| get("src")).unwrap_or_default();
    let rw = truthy("rw")? || truthy("readwrite")?;
    let ro = truthy("readonly")? || truthy("ro")?;
    Ok(match kind.as_str() {
        "cache" => {
            let target = need_target()?;
            RunMount::Cache {
                id: get("id")
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| target.clone()),
                target,
                sharing: match get("sharing").as_deref() {
                    None | Some("shared") => Sharing::Shared,
                    Some("private") => Sharing::Private,
                    Some("locked") => Sharing::Locked,
                    Some(o) => {
                        return Err(format!(
                        "invalid sharing={o:?} in --mount={spec}: want shared, private or locked"
                    ))
                    }
                },
                mode: num("mode", 0o755, 8)?,
                uid: num("uid", 0, 10)?,
                gid: num("gid", 0, 10)?,
                from: get("from").filter(|f| !f.is_empty()),
                source,
                readonly: ro && !rw,
            }
        }
        "secret" => {
            let target = target.filter(|t| !t.is_empty());
            let env = get("env").filter(|e| !e.is_empty());
            let id = match get("id").filter(|i| !i.is_empty()) {
                Some(i) => i,
                None => target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .filter(|b| !b.is_empty())
                    .map(String::from)
                    .ok_or_else(|| {
                        format!("--mount={spec}: a secret mount needs id= or target=")
                    })?,
            };
            let target = match (target, &env) {
                (Some(t), _) => Some(if t.starts_with('/') {
                    t
                } else {
                    format!("/{t}")
                }),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{id}")),
            };
            RunMount::Secret {
                id,
                target,
                env,
                required: truthy("required")?,
                mode: num("mode", 0o400, 8)?,
                uid: num("uid", 0, 10)?,
                gid: num("gid", 0, 10)?,
            }
        }
        "bind" => RunMount::Bind {
            target: need_target()?,
            source,
            from: get("from").filter(|f| !f.is_empty()),
            rw,
        },
        _ => RunMount::Tmpfs {
            target: need_target()?,
            size: match get("size") {
                None => None,
                Some(v) => Some(
                    parse_size(&v)
                        .ok_or_else(|| format!("invalid size={v:?} in --mount={spec}"))?,
                ),
            },
        },
    })
}

/// `1024`, `64k`, `100m`, `1g` (tmpfs sizes, in bytes).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Go duration strings as Docker accepts them (`30s`, `1m30s`, `500ms`) → nanoseconds
/// (also the Docker API's `since`/`until`).
pub fn parse_duration(s: &str) -> Option<i64> {
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
            Ok(Typed::Run(RunSpec {
                cmd: Command::Shell("echo a   && echo b".into()),
                ..Default::default()
            }))
        );
        assert_eq!(
            ins[3].typed(&HashMap::new()),
            Ok(Typed::Run(RunSpec {
                cmd: Command::Exec(vec!["echo".into(), "exec".into()]),
                ..Default::default()
            }))
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
        let e = parse("D", "FROM a\nRUN --mount=type=cache true\n").expect_err("mount");
        assert!(e.message.contains("target is required"), "{e}");
        let e = parse("D", "FROM a\nRUN --frobnicate true\n").expect_err("flag");
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
            Ok(Typed::Copy(CopySpec {
                srcs: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                chown: Some("1:2".into()),
                from: Some("build".into()),
                ..Default::default()
            }))
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

    fn run_spec(df: &str, n: usize) -> RunSpec {
        let ins = parse("D", df).expect("parse");
        match ins[n].typed(&HashMap::new()) {
            Ok(Typed::Run(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn copy_spec(df: &str, n: usize, vars: &HashMap<String, String>) -> CopySpec {
        let ins = parse("D", df).expect("parse");
        match ins[n].typed(vars) {
            Ok(Typed::Copy(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn directives_are_accepted_silently() {
        let ins = parse(
            "D",
            "# syntax=docker/dockerfile:1.7\n# check=skip=JSONArgsRecommended\n# escape=\\\nFROM a\n",
        )
        .expect("parse");
        assert_eq!(ins.len(), 1);
        assert_eq!(ins[0].line, 4);
    }

    #[test]
    fn run_heredoc_body_is_the_script() {
        let df =
            "FROM a\nRUN <<EOF\nset -e\n# not a comment here\necho \"$HOME\"\n\nEOF\nRUN true\n";
        let r = run_spec(df, 1);
        assert_eq!(
            r.cmd,
            Command::Shell("set -e\n# not a comment here\necho \"$HOME\"\n\n".into())
        );
        assert_eq!(r.script, None);
        let ins = parse("D", df).expect("parse");
        assert_eq!((ins[2].keyword.as_str(), ins[2].line), ("RUN", 8));
    }

    #[test]
    fn run_heredoc_with_a_command_goes_to_the_shell() {
        // `RUN python3 <<EOF`: BuildKit hands the whole here-document to the shell.
        let r = run_spec("FROM a\nRUN python3 <<EOF\nprint(1)\nEOF\n", 1);
        assert_eq!(r.cmd, Command::Shell("python3 <<EOF\nprint(1)\nEOF".into()));
        let r = run_spec("FROM a\nRUN <<EOF bash\necho hi\nEOF\n", 1);
        assert_eq!(r.cmd, Command::Shell("<<EOF bash\necho hi\nEOF".into()));
        // Several heredocs, bodies in order; `<<-` terminators may be tab-indented.
        let r = run_spec(
            "FROM a\nRUN cat <<A > /a && cat <<-B > /b\none\nA\n\ttwo\n\tB\nRUN true\n",
            1,
        );
        assert_eq!(
            r.cmd,
            Command::Shell("cat <<A > /a && cat <<-B > /b\none\nA\n\ttwo\nB".into())
        );
    }

    #[test]
    fn run_heredoc_shebang_is_a_script_file_and_chomp_strips_tabs() {
        let r = run_spec("FROM a\nRUN <<-EOT\n\t#!/bin/sh\n\techo hi\n\tEOT\n", 1);
        assert_eq!(
            r.script,
            Some(("EOT".into(), "#!/bin/sh\necho hi\n".into()))
        );
    }

    #[test]
    fn heredoc_errors_name_the_line() {
        let e = parse("D", "FROM a\nRUN <<EOF\necho\n").expect_err("unterminated");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unterminated heredoc <<EOF"), "{e}");
        let e = parse("D", "FROM a\nCOPY a <<EOF\nx\nEOF\n").expect_err("dest");
        assert!(e.message.contains("destination"), "{e}");
    }

    #[test]
    fn heredocs_only_on_run_copy_add_and_not_in_quotes() {
        let ins = parse("D", "FROM a\nRUN echo '<<EOF'\nENV X=1\n").expect("parse");
        assert_eq!(ins.len(), 3);
        assert!(ins[1].heredocs.is_empty());
        assert_eq!(heredoc_word("<<<EOF"), None);
        assert_eq!(heredoc_word("2<<\"E\""), Some(("E".into(), false, false)));
        assert_eq!(heredoc_word("<<-'E'"), Some(("E".into(), true, false)));
        assert_eq!(heredoc_word("<<E"), Some(("E".into(), false, true)));
    }

    #[test]
    fn copy_heredocs_create_files_and_quoted_ones_are_not_expanded() {
        let v = vars(&[("NAME", "world")]);
        let c = copy_spec("FROM a\nCOPY <<EOF /hello\nhi $NAME\nEOF\n", 1, &v);
        assert_eq!(c.inline, [("EOF".into(), "hi world\n".into())]);
        assert_eq!(c.dest, "/hello");
        assert!(c.srcs.is_empty());
        let c = copy_spec(
            "FROM a\nCOPY <<'A' <<-B real.txt /dir/\nkeep $NAME\nA\n\ttabbed $NAME\nB\n",
            1,
            &v,
        );
        assert_eq!(
            c.inline,
            [
                ("A".into(), "keep $NAME\n".into()),
                ("B".into(), "tabbed world\n".into())
            ]
        );
        assert_eq!(c.srcs, ["real.txt"]);
        assert_eq!(c.dest, "/dir/");
        let ins = parse("D", "FROM a\nADD <<EOF /x\ny\nEOF\n").expect("add");
        assert!(matches!(
            ins[1].typed(&v),
            Ok(Typed::Copy(CopySpec { add: true, .. }))
        ));
    }

    #[test]
    fn run_mounts_parse_with_defaults() {
        let r = run_spec(
            "FROM a\nRUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok,required --mount=type=secret,id=k,env=KEY --mount=type=bind,source=src,target=/src,from=build,rw --mount=type=tmpfs,target=/t,size=64m --network=none true\n",
            1,
        );
        assert_eq!(r.network.as_deref(), Some("none"));
        assert_eq!(
            r.mounts,
            [
                RunMount::Cache {
                    target: "/root/.cache".into(),
                    id: "/root/.cache".into(),
                    sharing: Sharing::Shared,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    from: None,
                    source: String::new(),
                    readonly: false,
                },
                RunMount::Secret {
                    id: "tok".into(),
                    target: Some("/run/secrets/tok".into()),
                    env: None,
                    required: true,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
                RunMount::Secret {
                    id: "k".into(),
                    target: None,
                    env: Some("KEY".into()),
                    required: false,
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
                RunMount::Bind {
                    target: "/src".into(),
                    source: "src".into(),
                    from: Some("build".into()),
                    rw: true,
                },
                RunMount::Tmpfs {
                    target: "/t".into(),
                    size: Some(64 << 20),
                },
            ]
        );
        let r = run_spec(
            "FROM a\nRUN --mount=type=cache,id=go,target=/go,sharing=locked,mode=0700,uid=1000,gid=1000,ro true\n",
            1,
        );
        assert!(matches!(
            &r.mounts[0],
            RunMount::Cache { id, sharing: Sharing::Locked, mode: 0o700, uid: 1000, readonly: true, .. } if id == "go"
        ));
    }

    #[test]
    fn bad_mounts_and_flags_fail_at_parse_time_naming_the_line() {
        for (df, want) in [
            (
                "FROM a\n\nRUN --mount=type=ssh ssh-add -l\n",
                "type=ssh is not supported",
            ),
            (
                "FROM a\n\nRUN --mount=type=cache,target=/x,sharing=maybe true\n",
                "sharing",
            ),
            (
                "FROM a\n\nRUN --mount=type=secret true\n",
                "needs id= or target=",
            ),
            (
                "FROM a\n\nRUN --mount=type=volume,target=/x true\n",
                "unknown mount type",
            ),
            (
                "FROM a\n\nRUN --mount=type=tmpfs,target=/x,color=red true\n",
                "unknown key",
            ),
            ("FROM a\n\nRUN --network=bridge true\n", "--network=bridge"),
            ("FROM a\n\nRUN --security=loose true\n", "--security=loose"),
            ("FROM a\n\nCOPY --chmod=u+q a b\n", "invalid --chmod"),
            ("FROM a\n\nCOPY --chmod=99999 a b\n", "invalid --chmod"),
            (
                "FROM a\n\nADD --checksum=md5:00 a b\n",
                "invalid --checksum",
            ),
            ("FROM a\n\nCOPY --checksum=sha256:00 a b\n", "unknown flag"),
            ("FROM a\n\nONBUILD COPY onlyone\n", "at least two arguments"),
        ] {
            let e = parse("ctx/Dockerfile", df).expect_err(df);
            assert_eq!((e.file.as_str(), e.line), ("ctx/Dockerfile", 3), "{df}");
            assert!(e.message.contains(want), "{df}: {e}");
        }
        // Built from variables: checked when the step runs, with the real values.
        let ins = parse(
            "D",
            "FROM a\nARG T=cache\nRUN --mount=type=$T,target=/c true\n",
        )
        .expect("variable mount type");
        let v = vars(&[("T", "cache")]);
        assert!(
            matches!(ins[2].typed(&v), Ok(Typed::Run(RunSpec { mounts, .. })) if mounts.len() == 1)
        );
        let e = ins[2]
            .typed(&vars(&[("T", "ssh")]))
            .expect_err("ssh at run time");
        assert!(e.contains("type=ssh"), "{e}");
        let r = run_spec(
            "FROM a\nRUN --network=default --security=insecure true\n",
            1,
        );
        assert_eq!((r.network, r.insecure), (None, true));
    }

    #[test]
    fn copy_flags() {
        let c = copy_spec(
            "FROM a\nCOPY --link --parents --exclude=*.md --exclude=tmp/** --chmod=u+x,go-w ./x/./a ./y /dst/\n",
            1,
            &HashMap::new(),
        );
        assert!(c.link && c.parents);
        assert_eq!(c.exclude, ["*.md", "tmp/**"]);
        assert_eq!(c.srcs, ["./x/./a", "./y"]);
        let sum = format!("sha256:{}", "ab".repeat(32));
        let ins = parse("D", &format!("FROM a\nADD --checksum={sum} f /f\n")).expect("parse");
        assert!(
            matches!(ins[1].typed(&HashMap::new()), Ok(Typed::Copy(CopySpec { checksum: Some(c), .. })) if c == sum)
        );
    }

    #[test]
    fn chmod_octal_and_symbolic() {
        assert_eq!(
            Chmod::parse("0755").expect("octal").apply(0o600, false),
            0o755
        );
        let ux = Chmod::parse("u+x").expect("u+x");
        assert_eq!(ux.apply(0o644, false), 0o744);
        assert_eq!(Chmod::parse("a=r").expect("a=r").apply(0o755, false), 0o444);
        assert_eq!(
            Chmod::parse("go-w,o+r").expect("go").apply(0o662, false),
            0o644
        );
        let big_x = Chmod::parse("a+X").expect("X");
        assert_eq!(big_x.apply(0o644, false), 0o644, "X: not for plain files");
        assert_eq!(big_x.apply(0o644, true), 0o755, "X: directories");
        assert_eq!(big_x.apply(0o744, false), 0o755, "X: already executable");
        assert_eq!(Chmod::parse("+x").expect("+x").apply(0o600, false), 0o711);
        for bad in ["", "u", "u+q", "z+x", "0800"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn onbuild_triggers_are_checked_and_reparsed() {
        let ins = parse(
            "D",
            "FROM a\nONBUILD RUN --mount=type=cache,target=/c echo hi\n",
        )
        .expect("parse");
        assert_eq!(
            ins[1].typed(&HashMap::new()),
            Ok(Typed::OnBuild(
                "RUN --mount=type=cache,target=/c echo hi".into()
            ))
        );
        let t = parse_trigger("D", 7, "COPY a /b").expect("trigger");
        assert_eq!((t.keyword.as_str(), t.line), ("COPY", 7));
        let e = parse_trigger("D", 7, "BOGUS x").expect_err("bogus");
        assert!(e.message.contains("ONBUILD trigger"), "{e}");
    }
}
