//! Go `text/template` subset used by Docker-compatible `--format` and
//! `inspect -f` flags, evaluated over [`serde_json::Value`].
//!
//! Docker users write Go templates (`docker ps --format 'table {{.ID}}\t{{.Names}}'`,
//! `docker inspect -f '{{.State.Pid}}'`), so Skiff must accept the same
//! language and print values the way Go's `fmt` does. This module implements
//! the part of the language those flags are used with:
//!
//! * text and `{{ ... }}` actions, trim markers `{{- ` / ` -}}`, comments
//!   `{{/* ... */}}`;
//! * field chains (`.A.B`), the dot, `$` (the root), variables
//!   (`$x := pipeline`, `$x = pipeline`, `{{range $i, $e := ...}}`);
//! * pipelines with `|`, function calls with arguments, parenthesised
//!   sub-pipelines with trailing field access (`(index .A 0).Name`), string
//!   (`"..."` with Go escapes, and raw `` `...` ``), character, number,
//!   `true`/`false`/`nil` literals;
//! * `if` / `else if` / `else`, `range` (arrays, maps in key order, integers)
//!   with `{{else}}`, `{{break}}` and `{{continue}}`, `with` / `else with` /
//!   `else`;
//! * Go's builtins `and or not len index slice eq ne lt le gt ge print printf
//!   println html urlquery`, and Docker's `json join split title lower upper
//!   pad truncate`.
//!
//! `define`, `template`, `block` and `call` are not supported (Docker's
//! formats never need them) and are rejected when parsing.
//!
//! Values print as Go prints the `map[string]interface{}` that Docker falls
//! back to for raw JSON: strings raw, integers without a decimal point, other
//! numbers as `%v` does for `float64` (`1.5`, `1e+06`), `true`/`false`, maps as
//! `map[k:v]` with sorted keys, arrays as `[a b]`, and an absent value
//! (missing map key or JSON `null`) as `<no value>`. A missing key is not an
//! error (Go's default `missingkey=default`); a field lookup on a string,
//! number, bool, array or `null` is.
//!
//! Deliberate deviations, chosen for usefulness where Go's behaviour depends on
//! static types we do not have: integers and floats compare numerically with
//! each other; `join` accepts any array (non-strings print as `%v`) and treats
//! `null` as empty; `eq`/`ne` treat `nil`, `null` and a missing value as equal.
//! `json` does not escape `<`, `>` and `&`, matching Docker's helper, which
//! calls `SetEscapeHTML(false)`.
//!
//! For `table` formats the two-character sequences `\t` and `\n` in the text
//! between actions are turned into a tab and a newline, as Docker's formatter
//! does; inside actions, Go's own string escapes already cover them.

use serde_json::{Map, Number, Value};
use std::fmt;

// ------------------------------------------------------------------ errors

/// Error produced while parsing or executing a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template source is malformed. `line` is 1-based; `col` is the
    /// 0-based byte offset within the line, as Go reports it.
    #[error("template: :{line}:{col}: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },
    /// Evaluation failed; `node` is the failing field, variable or command.
    #[error("template: :{line}:{col}: executing \"\" at <{node}>: {msg}")]
    Exec {
        line: usize,
        col: usize,
        node: String,
        msg: String,
    },
}

fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let before = src.get(..pos.min(src.len())).unwrap_or(src);
    let line = 1 + before.matches('\n').count();
    let col = match before.rfind('\n') {
        Some(i) => before.len() - i - 1,
        None => before.len(),
    };
    (line, col)
}

fn parse_err(src: &str, pos: usize, msg: impl Into<String>) -> TemplateError {
    let (line, col) = line_col(src, pos);
    TemplateError::Parse {
        line,
        col,
        msg: msg.into(),
    }
}

// ------------------------------------------------------------------ public API

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    table: bool,
    src: String,
}

impl Template {
    /// Parses a template. A leading `table` word (followed by whitespace or
    /// nothing) marks a Docker table format: it is stripped, surrounding
    /// spaces are trimmed, `is_table()` reports it, and `\t` / `\n` written
    /// literally in the text become a tab / newline.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let (table, body) = match src.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(is_space) => {
                (true, rest.trim_matches(' '))
            }
            _ => (false, src),
        };
        let toks = Lexer {
            src: body,
            pos: 0,
            toks: Vec::new(),
            table,
        }
        .run()?;
        let nodes = Parser {
            src: body,
            toks,
            i: 0,
            vars: Vec::new(),
            range_depth: 0,
            depth: 0,
        }
        .parse()?;
        Ok(Template {
            nodes,
            table,
            src: body.to_string(),
        })
    }

    /// Whether the source started with Docker's `table` keyword.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Field chains evaluated against the root data, in source order, e.g.
    /// `["ID", "Names"]` for `{{.ID}}\t{{join .Names ","}}`; nested chains are
    /// dotted (`"State.Pid"`). Fields inside `range`/`with` bodies (where the
    /// dot changes) are skipped; `$.X` chains are included.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_node_fields(&self.nodes, &mut out);
        out
    }

    /// Renders the template against one JSON value.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let root = Val::Json(data.clone());
        let mut ex = Exec {
            src: &self.src,
            root: &root,
            vars: Vec::new(),
            out: String::new(),
        };
        ex.walk(&root, &self.nodes)?;
        Ok(ex.out)
    }
}

fn collect_node_fields(nodes: &[Node], out: &mut Vec<String>) {
    for n in nodes {
        match n {
            Node::Action(p) => collect_pipe_fields(p, out),
            Node::If(c) => {
                collect_pipe_fields(&c.pipe, out);
                collect_node_fields(&c.list, out);
                if let Some(e) = &c.else_list {
                    collect_node_fields(e, out);
                }
            }
            Node::Range(c) | Node::With(c) => collect_pipe_fields(&c.pipe, out),
            Node::Text(_) | Node::Break | Node::Continue => {}
        }
    }
}

fn collect_pipe_fields(p: &Pipe, out: &mut Vec<String>) {
    for c in &p.cmds {
        for a in &c.args {
            collect_expr_fields(a, out);
        }
    }
}

fn collect_expr_fields(e: &Expr, out: &mut Vec<String>) {
    match &e.kind {
        ExprKind::Field(names) => out.push(names.join(".")),
        ExprKind::Var(v, names) if v == "$" && !names.is_empty() => out.push(names.join(".")),
        ExprKind::Chain(inner, _) => collect_expr_fields(inner, out),
        ExprKind::Pipe(p) => collect_pipe_fields(p, out),
        _ => {}
    }
}

// ------------------------------------------------------------------ lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    If,
    Else,
    End,
    Range,
    With,
    Break,
    Continue,
    Define,
    Template,
    Block,
}

impl Kw {
    fn name(self) -> &'static str {
        match self {
            Kw::If => "if",
            Kw::Else => "else",
            Kw::End => "end",
            Kw::Range => "range",
            Kw::With => "with",
            Kw::Break => "break",
            Kw::Continue => "continue",
            Kw::Define => "define",
            Kw::Template => "template",
            Kw::Block => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    LeftDelim,
    RightDelim,
    Space,
    Ident(String),
    Keyword(Kw),
    /// `.Name`, stored without the dot.
    Field(String),
    /// `$name` or `$`, stored with the dollar.
    Var(String),
    Dot,
    /// Value and source text.
    Str(String, String),
    /// Value and source text (also used for character constants).
    Num(Number, String),
    Bool(bool),
    Nil,
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
    Assign,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

static EOF_TOKEN: Token = Token {
    tok: Tok::Eof,
    pos: 0,
};

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Text(s) => {
            let short: String = s.chars().take(10).collect();
            format!("{short:?}")
        }
        Tok::LeftDelim => "\"{{\"".to_string(),
        Tok::RightDelim => "\"}}\"".to_string(),
        Tok::Space => "space".to_string(),
        Tok::Ident(s) | Tok::Var(s) => format!("{s:?}"),
        Tok::Field(s) => format!("\".{s}\""),
        Tok::Keyword(k) => format!("<{}>", k.name()),
        Tok::Dot => "\".\"".to_string(),
        Tok::Str(_, raw) | Tok::Num(_, raw) => raw.clone(),
        Tok::Bool(b) => b.to_string(),
        Tok::Nil => "nil".to_string(),
        Tok::Pipe => "\"|\"".to_string(),
        Tok::LParen => "\"(\"".to_string(),
        Tok::RParen => "\")\"".to_string(),
        Tok::Comma => "\",\"".to_string(),
        Tok::Declare => "\":=\"".to_string(),
        Tok::Assign => "\"=\"".to_string(),
        Tok::Eof => "EOF".to_string(),
    }
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    toks: Vec<Token>,
    table: bool,
}

impl<'s> Lexer<'s> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        parse_err(self.src, pos, msg)
    }

    fn rest(&self) -> &'s str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn push(&mut self, tok: Tok, pos: usize) {
        self.toks.push(Token { tok, pos });
    }

    /// Length of the right delimiter at `pos` (`}}` or ` -}}`) and whether it
    /// carries a trim marker.
    fn right_delim_at(&self, pos: usize) -> Option<(usize, bool)> {
        let s = self.src.get(pos..)?;
        if s.starts_with("}}") {
            return Some((2, false));
        }
        let mut it = s.chars();
        let c = it.next()?;
        if is_space(c) && it.as_str().starts_with("-}}") {
            return Some((c.len_utf8() + 3, true));
        }
        None
    }

    fn at_terminator(&self) -> bool {
        match self.peek_char() {
            None => true,
            Some(c) => {
                is_space(c)
                    || matches!(c, '.' | ',' | '|' | ':' | ')' | '(')
                    || self.rest().starts_with("}}")
            }
        }
    }

    fn check_terminator(&self) -> Result<(), TemplateError> {
        if self.at_terminator() {
            return Ok(());
        }
        let c = self.peek_char().unwrap_or('\u{FFFD}');
        Err(self.err(self.pos, format!("bad character {}", unicode_desc(c))))
    }

    fn scan_alnum(&mut self) {
        while let Some(c) = self.peek_char() {
            if !is_alnum(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn run(mut self) -> Result<Vec<Token>, TemplateError> {
        let mut trim_next = false;
        loop {
            let start = self.pos;
            let delim = self.rest().find("{{").map(|i| start + i);
            let text_end = delim.unwrap_or(self.src.len());
            let raw = self.src.get(start..text_end).unwrap_or("");
            let left_trim = delim.is_some_and(|d| {
                let after = self.src.get(d + 2..).unwrap_or("");
                let mut it = after.chars();
                it.next() == Some('-') && it.next().is_some_and(is_space)
            });
            let mut text = if self.table {
                raw.replace("\\t", "\t").replace("\\n", "\n")
            } else {
                raw.to_string()
            };
            if trim_next {
                text = text.trim_start_matches(is_space).to_string();
            }
            if left_trim {
                text.truncate(text.trim_end_matches(is_space).len());
            }
            if !text.is_empty() {
                self.push(Tok::Text(text), start);
            }
            let Some(d) = delim else { break };
            self.pos = d + if left_trim { 4 } else { 2 };
            if self.rest().starts_with("/*") {
                let body = self.pos + 2;
                let Some(i) = self.src.get(body..).and_then(|s| s.find("*/")) else {
                    return Err(self.err(d, "unclosed comment"));
                };
                let after = body + i + 2;
                let Some((len, trim)) = self.right_delim_at(after) else {
                    return Err(self.err(d, "comment ends before closing delimiter"));
                };
                self.pos = after + len;
                trim_next = trim;
                continue;
            }
            self.push(Tok::LeftDelim, d);
            trim_next = self.lex_action(d)?;
        }
        let end = self.src.len();
        self.push(Tok::Eof, end);
        Ok(self.toks)
    }

    /// Lexes the inside of one action, up to and including its right
    /// delimiter. Returns whether the delimiter had a trim marker.
    fn lex_action(&mut self, open: usize) -> Result<bool, TemplateError> {
        let mut depth = 0usize;
        loop {
            if let Some((len, trim)) = self.right_delim_at(self.pos) {
                if depth > 0 {
                    return Err(self.err(self.pos, "unclosed left paren"));
                }
                self.push(Tok::RightDelim, self.pos);
                self.pos += len;
                return Ok(trim);
            }
            let Some(c) = self.peek_char() else {
                return Err(self.err(open, "unclosed action"));
            };
            let p = self.pos;
            match c {
                c if is_space(c) => {
                    while let Some(ch) = self.peek_char() {
                        if !is_space(ch) || self.right_delim_at(self.pos).is_some() {
                            break;
                        }
                        self.pos += ch.len_utf8();
                    }
                    if self.pos > p {
                        self.push(Tok::Space, p);
                    }
                }
                '=' => {
                    self.pos += 1;
                    self.push(Tok::Assign, p);
                }
                ':' => {
                    if !self.rest().starts_with(":=") {
                        return Err(self.err(p, "expected :="));
                    }
                    self.pos += 2;
                    self.push(Tok::Declare, p);
                }
                '|' => {
                    self.pos += 1;
                    self.push(Tok::Pipe, p);
                }
                '"' => self.lex_quote()?,
                '`' => self.lex_raw()?,
                '\'' => self.lex_char()?,
                '$' => {
                    self.pos += 1;
                    self.scan_alnum();
                    self.check_terminator()?;
                    let name = self.src.get(p..self.pos).unwrap_or("$").to_string();
                    self.push(Tok::Var(name), p);
                }
                '.' => {
                    let next = self.src.get(p + 1..).and_then(|s| s.chars().next());
                    if next.is_some_and(|n| n.is_ascii_digit()) {
                        self.lex_number()?;
                    } else {
                        self.pos += 1;
                        self.scan_alnum();
                        if self.pos == p + 1 {
                            self.check_terminator()?;
                            self.push(Tok::Dot, p);
                        } else {
                            self.check_terminator()?;
                            let name = self.src.get(p + 1..self.pos).unwrap_or("").to_string();
                            self.push(Tok::Field(name), p);
                        }
                    }
                }
                '+' | '-' | '0'..='9' => self.lex_number()?,
                '(' => {
                    depth += 1;
                    self.pos += 1;
                    self.push(Tok::LParen, p);
                }
                ')' => {
                    if depth == 0 {
                        return Err(self.err(p, "unexpected right paren"));
                    }
                    depth -= 1;
                    self.pos += 1;
                    self.push(Tok::RParen, p);
                }
                ',' => {
                    self.pos += 1;
                    self.push(Tok::Comma, p);
                }
                c if is_alnum(c) => {
                    self.scan_alnum();
                    self.check_terminator()?;
                    let word = self.src.get(p..self.pos).unwrap_or("");
                    let tok = match word {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "nil" => Tok::Nil,
                        "if" => Tok::Keyword(Kw::If),
                        "else" => Tok::Keyword(Kw::Else),
                        "end" => Tok::Keyword(Kw::End),
                        "range" => Tok::Keyword(Kw::Range),
                        "with" => Tok::Keyword(Kw::With),
                        "break" => Tok::Keyword(Kw::Break),
                        "continue" => Tok::Keyword(Kw::Continue),
                        "define" => Tok::Keyword(Kw::Define),
                        "template" => Tok::Keyword(Kw::Template),
                        "block" => Tok::Keyword(Kw::Block),
                        _ => Tok::Ident(word.to_string()),
                    };
                    self.push(tok, p);
                }
                c => {
                    return Err(self.err(
                        p,
                        format!("unrecognized character in action: {}", unicode_desc(c)),
                    ))
                }
            }
        }
    }

    fn lex_quote(&mut self) -> Result<(), TemplateError> {
        let p = self.pos;
        let body = p + 1;
        let mut it = self.src.get(body..).unwrap_or("").char_indices();
        let end = loop {
            match it.next() {
                None | Some((_, '\n')) => return Err(self.err(p, "unterminated quoted string")),
                Some((_, '\\')) => match it.next() {
                    None | Some((_, '\n')) => return Err(self.err(p, "unterminated quoted string")),
                    Some(_) => {}
                },
                Some((i, '"')) => break body + i,
                Some(_) => {}
            }
        };
        let content = self.src.get(body..end).unwrap_or("");
        let value =
            unescape(content, '"').map_err(|m| self.err(p, format!("{m} in string literal")))?;
        let raw = self.src.get(p..=end).unwrap_or("").to_string();
        self.pos = end + 1;
        self.push(Tok::Str(value, raw), p);
        Ok(())
    }

    fn lex_raw(&mut self) -> Result<(), TemplateError> {
        let p = self.pos;
        let Some(i) = self.src.get(p + 1..).and_then(|s| s.find('`')) else {
            return Err(self.err(p, "unterminated raw quoted string"));
        };
        let end = p + 1 + i;
        let value: String = self
            .src
            .get(p + 1..end)
            .unwrap_or("")
            .chars()
            .filter(|&c| c != '\r')
            .collect();
        let raw = self.src.get(p..=end).unwrap_or("").to_string();
        self.pos = end + 1;
        self.push(Tok::Str(value, raw), p);
        Ok(())
    }

    fn lex_char(&mut self) -> Result<(), TemplateError> {
        let p = self.pos;
        let body = p + 1;
        let mut it = self.src.get(body..).unwrap_or("").char_indices();
        let end = loop {
            match it.next() {
                None | Some((_, '\n')) => {
                    return Err(self.err(p, "unterminated character constant"))
                }
                Some((_, '\\')) => match it.next() {
                    None | Some((_, '\n')) => {
                        return Err(self.err(p, "unterminated character constant"))
                    }
                    Some(_) => {}
                },
                Some((i, '\'')) => break body + i,
                Some(_) => {}
            }
        };
        let content = self.src.get(body..end).unwrap_or("");
        let raw = self.src.get(p..=end).unwrap_or("").to_string();
        let bad = || self.err(p, format!("malformed character constant: {raw}"));
        let mut chars = content.chars();
        let code: u32 = match chars.next() {
            None => return Err(bad()),
            Some('\\') => match read_escape(&mut chars, '\'') {
                Some(Esc::Byte(b)) => u32::from(b),
                Some(Esc::Char(c)) => u32::from(c),
                None => return Err(bad()),
            },
            Some(c) => u32::from(c),
        };
        if chars.next().is_some() {
            return Err(bad());
        }
        self.pos = end + 1;
        self.push(Tok::Num(Number::from(code), raw), p);
        Ok(())
    }

    fn lex_number(&mut self) -> Result<(), TemplateError> {
        let p = self.pos;
        let bytes = self.src.as_bytes();
        let at = |i: usize| bytes.get(i).copied();
        let mut i = p;
        if matches!(at(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let mut digits: &[u8] = b"0123456789_";
        let mut radix = 10;
        if at(i) == Some(b'0') {
            i += 1;
            match at(i) {
                Some(b'x' | b'X') => {
                    i += 1;
                    digits = b"0123456789abcdefABCDEF_";
                    radix = 16;
                }
                Some(b'o' | b'O') => {
                    i += 1;
                    digits = b"01234567_";
                    radix = 8;
                }
                Some(b'b' | b'B') => {
                    i += 1;
                    digits = b"01_";
                    radix = 2;
                }
                _ => {}
            }
        }
        let run = |mut i: usize, set: &[u8]| {
            while at(i).is_some_and(|c| set.contains(&c)) {
                i += 1;
            }
            i
        };
        i = run(i, digits);
        if at(i) == Some(b'.') {
            i = run(i + 1, digits);
        }
        if (radix == 10 && matches!(at(i), Some(b'e' | b'E')))
            || (radix == 16 && matches!(at(i), Some(b'p' | b'P')))
        {
            i += 1;
            if matches!(at(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = run(i, b"0123456789_");
        }
        if at(i) == Some(b'i') {
            i += 1;
        }
        let text = self.src.get(p..i).unwrap_or("").to_string();
        if let Some(c) = self.src.get(i..).and_then(|s| s.chars().next()) {
            if is_alnum(c) {
                return Err(self.err(p, format!("bad number syntax: \"{text}{c}\"")));
            }
        }
        let n = parse_number(&text).map_err(|m| self.err(p, m))?;
        self.pos = i;
        self.push(Tok::Num(n, text), p);
        Ok(())
    }
}

fn unicode_desc(c: char) -> String {
    format!("U+{:04X} '{}'", u32::from(c), c)
}

fn parse_number(text: &str) -> Result<Number, String> {
    let illegal = || format!("illegal number syntax: {text:?}");
    if text.ends_with('i') {
        return Err(format!("complex numbers are not supported: {text:?}"));
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let (neg, body) = match clean.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.contains(['.', 'e']) {
        let f: f64 = clean.parse().map_err(|_| illegal())?;
        return Number::from_f64(f)
            .filter(|_| f.is_finite())
            .ok_or_else(illegal);
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(illegal());
    }
    let v =
        u64::from_str_radix(digits, radix).map_err(|_| format!("integer overflow: {text:?}"))?;
    if neg {
        let n = -i128::from(v);
        i64::try_from(n)
            .map(Number::from)
            .map_err(|_| format!("integer overflow: {text:?}"))
    } else {
        Ok(match i64::try_from(v) {
            Ok(i) => Number::from(i),
            Err(_) => Number::from(v),
        })
    }
}

enum Esc {
    Byte(u8),
    Char(char),
}

fn read_hex(it: &mut std::str::Chars<'_>, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for _ in 0..n {
        v = v.checked_mul(16)? + it.next()?.to_digit(16)?;
    }
    Some(v)
}

/// Reads one escape sequence after a backslash, as Go's `strconv.Unquote`.
fn read_escape(it: &mut std::str::Chars<'_>, quote: char) -> Option<Esc> {
    let c = it.next()?;
    Some(match c {
        'a' => Esc::Byte(0x07),
        'b' => Esc::Byte(0x08),
        'f' => Esc::Byte(0x0c),
        'n' => Esc::Byte(b'\n'),
        'r' => Esc::Byte(b'\r'),
        't' => Esc::Byte(b'\t'),
        'v' => Esc::Byte(0x0b),
        '\\' => Esc::Byte(b'\\'),
        '\'' | '"' if c == quote => Esc::Char(c),
        'x' => Esc::Byte(u8::try_from(read_hex(it, 2)?).ok()?),
        '0'..='7' => {
            let mut v = c.to_digit(8)?;
            for _ in 0..2 {
                v = v * 8 + it.next()?.to_digit(8)?;
            }
            Esc::Byte(u8::try_from(v).ok()?)
        }
        'u' => Esc::Char(char::from_u32(read_hex(it, 4)?)?),
        'U' => Esc::Char(char::from_u32(read_hex(it, 8)?)?),
        _ => return None,
    })
}

fn unescape(s: &str, quote: char) -> Result<String, String> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut it = s.chars();
    let mut buf = [0u8; 4];
    while let Some(c) = it.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match read_escape(&mut it, quote) {
            Some(Esc::Byte(b)) => out.push(b),
            Some(Esc::Char(ch)) => out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes()),
            None => return Err("invalid escape sequence".to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

// ------------------------------------------------------------------ AST

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Control),
    Range(Control),
    With(Control),
    Break,
    Continue,
}

#[derive(Debug, Clone)]
struct Control {
    pipe: Pipe,
    list: Vec<Node>,
    else_list: Option<Vec<Node>>,
}

#[derive(Debug, Clone)]
struct Pipe {
    pos: usize,
    decl: Vec<String>,
    is_assign: bool,
    cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
struct Cmd {
    pos: usize,
    args: Vec<Expr>,
}

#[derive(Debug, Clone)]
struct Expr {
    pos: usize,
    kind: ExprKind,
}

#[derive(Debug, Clone)]
enum ExprKind {
    Dot,
    Nil,
    Bool(bool),
    Num(Number, String),
    Str(String, String),
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Chain(Box<Expr>, Vec<String>),
    Pipe(Box<Pipe>),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = |f: &mut fmt::Formatter<'_>, names: &[String]| {
            names.iter().try_for_each(|n| write!(f, ".{n}"))
        };
        match &self.kind {
            ExprKind::Dot => f.write_str("."),
            ExprKind::Nil => f.write_str("nil"),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Num(_, raw) | ExprKind::Str(_, raw) => f.write_str(raw),
            ExprKind::Field(names) => fields(f, names),
            ExprKind::Var(v, names) => {
                f.write_str(v)?;
                fields(f, names)
            }
            ExprKind::Func(name) => f.write_str(name),
            ExprKind::Chain(inner, names) => {
                write!(f, "{inner}")?;
                fields(f, names)
            }
            ExprKind::Pipe(p) => write!(f, "({p})"),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            f.write_str(&self.decl.join(", "))?;
            f.write_str(if self.is_assign { " = " } else { " := " })?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ parser

/// Every function name a template may call.
const FUNCS: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "eq", "ne", "lt", "le", "gt", "ge", "print",
    "printf", "println", "html", "urlquery", "json", "join", "split", "title", "lower", "upper",
    "pad", "truncate",
];

enum ListEnd {
    End(usize),
    Else(usize),
    Eof,
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    i: usize,
    /// Variables in scope (besides `$`), for undefined-variable checks.
    vars: Vec<String>,
    range_depth: usize,
    /// Current nesting of control structures and parentheses.
    depth: usize,
}

/// Deepest nesting of control structures and parentheses accepted, so that
/// hostile input cannot overflow the stack of the recursive parser/evaluator.
const MAX_NESTING: usize = 200;

type PResult<T> = Result<T, TemplateError>;

impl Parser<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        parse_err(self.src, pos, msg)
    }

    fn unexpected(&self, t: &Token, context: &str) -> TemplateError {
        self.err(
            t.pos,
            format!("unexpected {} in {context}", describe(&t.tok)),
        )
    }

    fn next(&mut self) -> Token {
        let t = self.toks.get(self.i).unwrap_or(&EOF_TOKEN).clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }

    fn peek(&self) -> &Token {
        self.toks.get(self.i).unwrap_or(&EOF_TOKEN)
    }

    fn next_non_space(&mut self) -> Token {
        loop {
            let t = self.next();
            if t.tok != Tok::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Token {
        let t = self.next_non_space();
        self.backup();
        t
    }

    fn var_defined(&self, name: &str) -> bool {
        name == "$" || self.vars.iter().any(|v| v == name)
    }

    fn parse(mut self) -> PResult<Vec<Node>> {
        let (nodes, end) = self.list()?;
        match end {
            ListEnd::Eof => Ok(nodes),
            ListEnd::End(p) => Err(self.err(p, "unexpected {{end}}")),
            ListEnd::Else(p) => Err(self.err(p, "unexpected {{else}}")),
        }
    }

    fn expect_right(&mut self, context: &str) -> PResult<()> {
        let t = self.next_non_space();
        if t.tok == Tok::RightDelim {
            Ok(())
        } else {
            Err(self.unexpected(&t, context))
        }
    }

    fn list(&mut self) -> PResult<(Vec<Node>, ListEnd)> {
        let mut nodes = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Text(s) => nodes.push(Node::Text(s)),
                Tok::LeftDelim => {
                    let k = self.peek_non_space();
                    let Tok::Keyword(kw) = k.tok else {
                        let pipe = self.pipeline("command", false)?;
                        nodes.push(Node::Action(pipe));
                        continue;
                    };
                    self.next_non_space();
                    match kw {
                        Kw::End => {
                            self.expect_right("end")?;
                            return Ok((nodes, ListEnd::End(k.pos)));
                        }
                        Kw::Else => return Ok((nodes, ListEnd::Else(k.pos))),
                        Kw::If | Kw::Range | Kw::With => nodes.push(self.control(kw, k.pos)?),
                        Kw::Break | Kw::Continue => {
                            if self.range_depth == 0 {
                                return Err(self.err(
                                    k.pos,
                                    format!("{{{{{}}}}} outside {{{{range}}}}", kw.name()),
                                ));
                            }
                            self.expect_right(kw.name())?;
                            nodes.push(if kw == Kw::Break {
                                Node::Break
                            } else {
                                Node::Continue
                            });
                        }
                        Kw::Define | Kw::Template | Kw::Block => {
                            return Err(
                                self.err(k.pos, format!("{{{{{}}}}} is not supported", kw.name()))
                            )
                        }
                    }
                }
                Tok::Eof => return Ok((nodes, ListEnd::Eof)),
                other => return Err(self.err(t.pos, format!("unexpected {}", describe(&other)))),
            }
        }
    }

    fn nest<T>(&mut self, pos: usize, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_NESTING {
            return Err(self.err(pos, "template nested too deeply"));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn control(&mut self, kw: Kw, pos: usize) -> PResult<Node> {
        self.nest(pos, |p| p.control_inner(kw, pos))
    }

    fn control_inner(&mut self, kw: Kw, pos: usize) -> PResult<Node> {
        let mark = self.vars.len();
        let ctx = kw.name();
        let pipe = self.pipeline(ctx, false)?;
        if kw == Kw::Range {
            self.range_depth += 1;
        }
        let body = self.list();
        if kw == Kw::Range {
            self.range_depth -= 1;
        }
        let (list, end) = body?;
        let missing_end = || format!("unexpected EOF: missing {{{{end}}}} for {{{{{ctx}}}}}");
        let else_list = match end {
            ListEnd::End(_) => None,
            ListEnd::Else(_) => {
                let nt = self.peek_non_space();
                let chained = matches!(
                    (kw, &nt.tok),
                    (Kw::If, Tok::Keyword(Kw::If)) | (Kw::With, Tok::Keyword(Kw::With))
                );
                if chained {
                    self.next_non_space();
                    Some(vec![self.control(kw, nt.pos)?])
                } else {
                    self.expect_right("else")?;
                    let (l, end2) = self.list()?;
                    match end2 {
                        ListEnd::End(_) => {}
                        ListEnd::Else(p) => return Err(self.err(p, "expected end; found {{else}}")),
                        ListEnd::Eof => return Err(self.err(pos, missing_end())),
                    }
                    Some(l)
                }
            }
            ListEnd::Eof => return Err(self.err(pos, missing_end())),
        };
        self.vars.truncate(mark);
        let c = Control {
            pipe,
            list,
            else_list,
        };
        Ok(match kw {
            Kw::If => Node::If(c),
            Kw::Range => Node::Range(c),
            _ => Node::With(c),
        })
    }

    /// Parses a pipeline up to and including its terminator (`}}`, or `)`
    /// when `paren`).
    fn pipeline(&mut self, context: &str, paren: bool) -> PResult<Pipe> {
        let first = self.peek_non_space();
        let pos = first.pos;
        let mut decl = Vec::new();
        let mut is_assign = false;
        if let Tok::Var(name) = &first.tok {
            let save = self.i;
            self.next_non_space();
            let op = self.peek_non_space();
            match op.tok {
                Tok::Declare | Tok::Assign => {
                    self.next_non_space();
                    is_assign = op.tok == Tok::Assign;
                    decl.push(name.clone());
                }
                Tok::Comma if context == "range" => {
                    self.next_non_space();
                    decl.push(name.clone());
                    let v2 = self.next_non_space();
                    let Tok::Var(n2) = v2.tok else {
                        return Err(self.err(v2.pos, "range can only initialize variables"));
                    };
                    let op2 = self.next_non_space();
                    match op2.tok {
                        Tok::Declare => {}
                        Tok::Assign => is_assign = true,
                        _ => return Err(self.unexpected(&op2, "range")),
                    }
                    decl.push(n2);
                }
                _ => self.i = save,
            }
            for d in &decl {
                if d == "$" {
                    return Err(self.err(pos, "cannot declare or assign $"));
                }
                if is_assign {
                    if !self.var_defined(d) {
                        return Err(self.err(pos, format!("undefined variable {d:?}")));
                    }
                } else {
                    self.vars.push(d.clone());
                }
            }
        }
        let mut cmds: Vec<Cmd> = Vec::new();
        let mut after_pipe = false;
        loop {
            let t = self.next_non_space();
            let at_end = if paren {
                t.tok == Tok::RParen
            } else {
                t.tok == Tok::RightDelim
            };
            if at_end {
                if after_pipe {
                    return Err(self.err(t.pos, "missing command after |"));
                }
                break;
            }
            match t.tok {
                Tok::Bool(_)
                | Tok::Num(..)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Ident(_)
                | Tok::Nil
                | Tok::Str(..)
                | Tok::Var(_)
                | Tok::LParen => {
                    self.backup();
                    let (cmd, piped) = self.command()?;
                    cmds.push(cmd);
                    after_pipe = piped;
                }
                _ => return Err(self.unexpected(&t, context)),
            }
        }
        if cmds.is_empty() {
            return Err(self.err(pos, format!("missing value for {context}")));
        }
        for (i, c) in cmds.iter().enumerate() {
            let Some(a) = c.args.first() else { continue };
            if matches!(a.kind, ExprKind::Nil) {
                return Err(self.err(a.pos, "nil is not a command"));
            }
            if i > 0
                && matches!(
                    a.kind,
                    ExprKind::Bool(_) | ExprKind::Dot | ExprKind::Num(..) | ExprKind::Str(..)
                )
            {
                return Err(self.err(
                    a.pos,
                    format!("non executable command in pipeline stage {}", i + 1),
                ));
            }
        }
        Ok(Pipe {
            pos,
            decl,
            is_assign,
            cmds,
        })
    }

    /// Parses one command; returns it and whether it ended with `|`.
    fn command(&mut self) -> PResult<(Cmd, bool)> {
        let pos = self.peek_non_space().pos;
        let mut args = Vec::new();
        let piped = loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let t = self.next();
            match t.tok {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RParen => {
                    self.backup();
                    break false;
                }
                Tok::Pipe => break true,
                _ => return Err(self.unexpected(&t, "operand")),
            }
        };
        if args.is_empty() {
            return Err(self.err(pos, "empty command"));
        }
        Ok((Cmd { pos, args }, piped))
    }

    fn operand(&mut self) -> PResult<Option<Expr>> {
        let Some(term) = self.term()? else {
            return Ok(None);
        };
        if !matches!(self.peek().tok, Tok::Field(_)) {
            return Ok(Some(term));
        }
        let mut more = Vec::new();
        while let Tok::Field(f) = &self.peek().tok {
            more.push(f.clone());
            self.i += 1;
        }
        let pos = term.pos;
        let kind = match term.kind {
            ExprKind::Field(mut names) => {
                names.extend(more);
                ExprKind::Field(names)
            }
            ExprKind::Var(v, mut names) => {
                names.extend(more);
                ExprKind::Var(v, names)
            }
            ExprKind::Bool(_)
            | ExprKind::Str(..)
            | ExprKind::Num(..)
            | ExprKind::Nil
            | ExprKind::Dot => {
                return Err(self.err(
                    pos,
                    format!("unexpected . after term {:?}", term.to_string()),
                ))
            }
            ExprKind::Func(_) | ExprKind::Chain(..) | ExprKind::Pipe(_) => {
                ExprKind::Chain(Box::new(term), more)
            }
        };
        Ok(Some(Expr { pos, kind }))
    }

    fn term(&mut self) -> PResult<Option<Expr>> {
        let t = self.next_non_space();
        let kind = match t.tok {
            Tok::Ident(name) => {
                if !FUNCS.contains(&name.as_str()) {
                    return Err(self.err(t.pos, format!("function {name:?} not defined")));
                }
                ExprKind::Func(name)
            }
            Tok::Dot => ExprKind::Dot,
            Tok::Nil => ExprKind::Nil,
            Tok::Var(name) => {
                if !self.var_defined(&name) {
                    return Err(self.err(t.pos, format!("undefined variable {name:?}")));
                }
                ExprKind::Var(name, Vec::new())
            }
            Tok::Field(f) => ExprKind::Field(vec![f]),
            Tok::Bool(b) => ExprKind::Bool(b),
            Tok::Num(n, raw) => ExprKind::Num(n, raw),
            Tok::Str(s, raw) => ExprKind::Str(s, raw),
            Tok::LParen => ExprKind::Pipe(Box::new(
                self.nest(t.pos, |p| p.pipeline("parenthesized pipeline", true))?,
            )),
            _ => {
                self.backup();
                return Ok(None);
            }
        };
        Ok(Some(Expr { pos: t.pos, kind }))
    }
}

// ------------------------------------------------------------------ values

/// A value during evaluation: either Go's "invalid" value (missing map key,
/// nothing piped) or a JSON value.
#[derive(Debug, Clone)]
enum Val {
    NoValue,
    Json(Value),
}

impl Val {
    fn json(&self) -> Option<&Value> {
        match self {
            Val::NoValue => None,
            Val::Json(v) => Some(v),
        }
    }

    /// The value unless it is missing or JSON `null` (Go's nil interface).
    fn non_nil(&self) -> Option<&Value> {
        self.json().filter(|v| !v.is_null())
    }
}

fn str_val(s: String) -> Val {
    Val::Json(Value::String(s))
}

fn bool_val(b: bool) -> Val {
    Val::Json(Value::Bool(b))
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

fn num_f64(n: Num) -> f64 {
    match n {
        // Precision loss beyond 2^53 is acceptable for comparisons.
        #[allow(clippy::cast_precision_loss)]
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

/// Go's type name for the equivalent `interface{}` value.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) => match num(n) {
            Num::Int(_) => "int",
            Num::Float(_) => "float64",
        },
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Go's truthiness: false, 0, "", nil and empty collections are false.
fn truth(v: &Val) -> bool {
    match v.json() {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => match num(n) {
            Num::Int(i) => i != 0,
            Num::Float(f) => f != 0.0,
        },
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
    }
}

fn sorted_entries(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut e: Vec<_> = m.iter().collect();
    e.sort_by(|a, b| a.0.cmp(b.0));
    e
}

fn num_str(n: &Number) -> String {
    match num(n) {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => fmt_g(f, None, false),
    }
}

/// Appends `v` formatted as Go's `%v`.
fn write_v(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&num_str(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_v(out, e);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, e)) in sorted_entries(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_v(out, e);
            }
            out.push(']');
        }
    }
}

fn go_v(v: &Value) -> String {
    let mut s = String::new();
    write_v(&mut s, v);
    s
}

/// How an action prints its final value.
fn print_top(v: &Val) -> String {
    match v.non_nil() {
        None => "<no value>".to_string(),
        Some(x) => go_v(x),
    }
}

// ------------------------------------------------------------------ floats

/// Significant digits (no trailing zeros) and decimal-point position of a
/// `{:e}`-formatted non-negative number: value = 0.DIGITS × 10^dp.
fn sci_digits(s: &str) -> (Vec<u8>, i64) {
    let (m, e) = s.split_once('e').unwrap_or((s, "0"));
    let mut digits: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    let exp: i64 = e.parse().unwrap_or(0);
    (digits, exp + 1)
}

fn exp_suffix(exp: i64, upper: bool) -> String {
    format!(
        "{}{}{:02}",
        if upper { 'E' } else { 'e' },
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    )
}

fn digit_at(d: &[u8], i: i64) -> char {
    usize::try_from(i)
        .ok()
        .and_then(|i| d.get(i))
        .map_or('0', |&b| char::from(b))
}

/// Go's `%e` layout from digits: d.ddd e±XX with `decimals` digits.
fn layout_e(d: &[u8], dp: i64, decimals: i64, upper: bool) -> String {
    let mut s = String::new();
    s.push(digit_at(d, 0));
    if decimals > 0 {
        s.push('.');
        for k in 1..=decimals {
            s.push(digit_at(d, k));
        }
    }
    let exp = if d.is_empty() { 0 } else { dp - 1 };
    s.push_str(&exp_suffix(exp, upper));
    s
}

/// Go's `%f` layout from digits with `decimals` fractional digits.
fn layout_f(d: &[u8], dp: i64, decimals: i64) -> String {
    let mut s = String::new();
    if dp > 0 {
        for k in 0..dp {
            s.push(digit_at(d, k));
        }
    } else {
        s.push('0');
    }
    if decimals > 0 {
        s.push('.');
        for k in 0..decimals {
            let j = dp + k;
            s.push(if j >= 0 { digit_at(d, j) } else { '0' });
        }
    }
    s
}

fn shortest_digits(a: f64) -> (Vec<u8>, i64) {
    if a == 0.0 {
        (Vec::new(), 0)
    } else {
        sci_digits(&format!("{a:e}"))
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Go's `strconv.FormatFloat(f, 'g', prec, 64)`; `None` is the shortest
/// representation, which is also what `%v` prints.
fn fmt_g(f: f64, prec: Option<usize>, upper: bool) -> String {
    let a = f.abs();
    let (digits, dp) = match prec {
        _ if a == 0.0 => (Vec::new(), 0),
        None => shortest_digits(a),
        Some(p) => sci_digits(&format!("{:.*e}", p.clamp(1, EXACT_DIGITS) - 1, a)),
    };
    let nd = to_i64(digits.len());
    // Go: for the shortest form the %e/%f decision uses a precision of 6.
    let (p, eprec) = match prec {
        None => (nd, 6),
        Some(p) => {
            let p = to_i64(p.max(1));
            (p, if p > nd && nd >= dp { nd } else { p })
        }
    };
    let exp = dp - 1;
    let body = if exp < -4 || exp >= eprec {
        layout_e(&digits, dp, p.min(nd) - 1, upper)
    } else {
        let p = if p > dp { nd } else { p };
        layout_f(&digits, dp, (p - dp).max(0))
    };
    if f.is_sign_negative() {
        format!("-{body}")
    } else {
        body
    }
}

/// More digits than any `f64` has, exactly: Rust's formatter panics on huge
/// precisions, so digits past this are written as zeros (they are zeros).
const EXACT_DIGITS: usize = 1100;

/// Go's `%e` with the given precision.
fn fmt_e(f: f64, prec: usize, upper: bool) -> String {
    let s = format!("{:.*e}", prec.min(EXACT_DIGITS), f);
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i64 = e.parse().unwrap_or(0);
    let zeros = "0".repeat(prec.saturating_sub(EXACT_DIGITS));
    format!("{m}{zeros}{}", exp_suffix(exp, upper))
}

/// Go's `%f` with the given precision.
fn fmt_f(f: f64, prec: usize) -> String {
    let s = format!("{:.*}", prec.min(EXACT_DIGITS), f);
    format!("{s}{}", "0".repeat(prec.saturating_sub(EXACT_DIGITS)))
}

/// `encoding/json`'s float64 encoding.
fn json_float(f: f64) -> String {
    let a = f.abs();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let (d, dp) = shortest_digits(a);
    let nd = to_i64(d.len());
    let body = if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let mut s = layout_e(&d, dp, nd - 1, false);
        // Go cleans up e-07 to e-7.
        let n = s.len();
        if n >= 4 && s.get(n - 4..n - 1) == Some("e-0") {
            s.remove(n - 2);
        }
        s
    } else {
        layout_f(&d, dp, (nd - dp).max(0))
    };
    format!("{sign}{body}")
}

// ------------------------------------------------------------------ JSON

/// Encodes like Docker's `json` helper: Go's `encoding/json` with sorted map
/// keys and `SetEscapeHTML(false)`, without the trailing newline.
fn json_encode(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&match num(n) {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => json_float(f),
        }),
        Value::String(s) => json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_encode(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, e)) in sorted_entries(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                json_encode(e, out);
            }
            out.push('}');
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ------------------------------------------------------------------ execution

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'t> {
    src: &'t str,
    root: &'t Val,
    vars: Vec<(String, Val)>,
    out: String,
}

type EResult<T> = Result<T, TemplateError>;

impl Exec<'_> {
    fn err(&self, pos: usize, node: &dyn fmt::Display, msg: impl Into<String>) -> TemplateError {
        let (line, col) = line_col(self.src, pos);
        TemplateError::Exec {
            line,
            col,
            node: node.to_string(),
            msg: msg.into(),
        }
    }

    fn lookup(&self, name: &str) -> Option<&Val> {
        if name == "$" {
            return Some(self.root);
        }
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn set_var(&mut self, name: &str, v: Val) -> bool {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                true
            }
            None => false,
        }
    }

    fn walk(&mut self, dot: &Val, nodes: &[Node]) -> EResult<Flow> {
        for node in nodes {
            let flow = match node {
                Node::Text(s) => {
                    self.out.push_str(s);
                    Flow::Normal
                }
                Node::Action(p) => {
                    let v = self.pipe(dot, p)?;
                    if p.decl.is_empty() {
                        let s = print_top(&v);
                        self.out.push_str(&s);
                    }
                    Flow::Normal
                }
                Node::If(c) => self.if_with(dot, c, false)?,
                Node::With(c) => self.if_with(dot, c, true)?,
                Node::Range(c) => self.range(dot, c)?,
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if !matches!(flow, Flow::Normal) {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn if_with(&mut self, dot: &Val, c: &Control, with: bool) -> EResult<Flow> {
        let mark = self.vars.len();
        let v = self.pipe(dot, &c.pipe)?;
        let flow = if truth(&v) {
            if with {
                self.walk(&v, &c.list)?
            } else {
                self.walk(dot, &c.list)?
            }
        } else if let Some(e) = &c.else_list {
            self.walk(dot, e)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn range(&mut self, dot: &Val, c: &Control) -> EResult<Flow> {
        let mark = self.vars.len();
        let v = self.run_cmds(dot, &c.pipe)?;
        if !c.pipe.is_assign {
            for d in &c.pipe.decl {
                self.vars.push((d.clone(), Val::NoValue));
            }
        }
        let mut ran = false;
        match v {
            Val::NoValue | Val::Json(Value::Null) => {}
            Val::Json(Value::Array(a)) => {
                for (i, e) in a.into_iter().enumerate() {
                    ran = true;
                    if self.iteration(c, Value::from(i), e)? {
                        break;
                    }
                }
            }
            Val::Json(Value::Object(m)) => {
                let mut entries: Vec<(String, Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, e) in entries {
                    ran = true;
                    if self.iteration(c, Value::String(k), e)? {
                        break;
                    }
                }
            }
            Val::Json(Value::Number(n)) if matches!(num(&n), Num::Int(_)) => {
                if c.pipe.decl.len() > 1 {
                    return Err(self.err(
                        c.pipe.pos,
                        &c.pipe,
                        "can't use 2 variables to range over an integer",
                    ));
                }
                let Num::Int(count) = num(&n) else {
                    return Ok(Flow::Normal);
                };
                let count = i64::try_from(count).unwrap_or(i64::MAX);
                for i in 0..count {
                    ran = true;
                    if self.iteration(c, Value::from(i), Value::from(i))? {
                        break;
                    }
                }
            }
            Val::Json(other) => {
                return Err(self.err(
                    c.pipe.pos,
                    &c.pipe,
                    format!("range can't iterate over {}", go_v(&other)),
                ))
            }
        }
        if !ran {
            if let Some(e) = &c.else_list {
                self.walk(dot, e)?;
            }
        }
        self.vars.truncate(mark);
        Ok(Flow::Normal)
    }

    /// Runs one range iteration; returns true on `{{break}}`.
    fn iteration(&mut self, c: &Control, key: Value, elem: Value) -> EResult<bool> {
        match c.pipe.decl.as_slice() {
            [v] => {
                self.set_var(v, Val::Json(elem.clone()));
            }
            [k, v] => {
                self.set_var(k, Val::Json(key));
                self.set_var(v, Val::Json(elem.clone()));
            }
            _ => {}
        }
        let mark = self.vars.len();
        let flow = self.walk(&Val::Json(elem), &c.list)?;
        self.vars.truncate(mark);
        Ok(matches!(flow, Flow::Break))
    }

    fn run_cmds(&mut self, dot: &Val, p: &Pipe) -> EResult<Val> {
        let mut fin: Option<Val> = None;
        for cmd in &p.cmds {
            fin = Some(self.cmd(dot, cmd, fin)?);
        }
        Ok(fin.unwrap_or(Val::NoValue))
    }

    fn pipe(&mut self, dot: &Val, p: &Pipe) -> EResult<Val> {
        let v = self.run_cmds(dot, p)?;
        for d in &p.decl {
            if p.is_assign {
                if !self.set_var(d, v.clone()) {
                    return Err(self.err(p.pos, p, format!("undefined variable: {d}")));
                }
            } else {
                self.vars.push((d.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn cmd(&mut self, dot: &Val, cmd: &Cmd, fin: Option<Val>) -> EResult<Val> {
        let Some(first) = cmd.args.first() else {
            return Ok(Val::NoValue);
        };
        let rest = cmd.args.get(1..).unwrap_or(&[]);
        let has_args = !rest.is_empty() || fin.is_some();
        match &first.kind {
            ExprKind::Func(name) => self.call(dot, name, rest, fin, cmd.pos, cmd),
            ExprKind::Field(_) | ExprKind::Var(..) | ExprKind::Chain(..) => {
                self.field_expr(dot, first, has_args)
            }
            _ => {
                if has_args {
                    return Err(self.err(
                        first.pos,
                        first,
                        format!("can't give argument to non-function {first}"),
                    ));
                }
                self.arg(dot, first)
            }
        }
    }

    fn field_expr(&mut self, dot: &Val, e: &Expr, has_args: bool) -> EResult<Val> {
        let (base, names) = match &e.kind {
            ExprKind::Field(names) => (dot.clone(), names),
            ExprKind::Var(name, names) => {
                let Some(base) = self.lookup(name) else {
                    return Err(self.err(e.pos, e, format!("undefined variable: {name}")));
                };
                if names.is_empty() {
                    if has_args {
                        return Err(self.err(
                            e.pos,
                            e,
                            format!("can't give argument to non-function {e}"),
                        ));
                    }
                    return Ok(base.clone());
                }
                return eval_fields(base.json(), names, has_args)
                    .map_err(|m| self.err(e.pos, e, m));
            }
            ExprKind::Chain(inner, names) => (self.arg(dot, inner)?, names),
            _ => return self.arg(dot, e),
        };
        eval_fields(base.json(), names, has_args).map_err(|m| self.err(e.pos, e, m))
    }

    fn arg(&mut self, dot: &Val, e: &Expr) -> EResult<Val> {
        Ok(match &e.kind {
            ExprKind::Dot => dot.clone(),
            ExprKind::Nil => Val::Json(Value::Null),
            ExprKind::Bool(b) => bool_val(*b),
            ExprKind::Num(n, _) => Val::Json(Value::Number(n.clone())),
            ExprKind::Str(s, _) => str_val(s.clone()),
            ExprKind::Field(_) | ExprKind::Var(..) | ExprKind::Chain(..) => {
                self.field_expr(dot, e, false)?
            }
            ExprKind::Pipe(p) => self.pipe(dot, p)?,
            ExprKind::Func(name) => self.call(dot, name, &[], None, e.pos, e)?,
        })
    }

    fn call(
        &mut self,
        dot: &Val,
        name: &str,
        args: &[Expr],
        fin: Option<Val>,
        pos: usize,
        node: &dyn fmt::Display,
    ) -> EResult<Val> {
        if name == "and" || name == "or" {
            if args.is_empty() && fin.is_none() {
                return Err(self.err(
                    pos,
                    node,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            let stop_on = name == "or";
            let mut v = Val::NoValue;
            for a in args {
                v = self.arg(dot, a)?;
                if truth(&v) == stop_on {
                    return Ok(v);
                }
            }
            return Ok(fin.unwrap_or(v));
        }
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            vals.push(self.arg(dot, a)?);
        }
        vals.extend(fin);
        call_builtin(name, vals).map_err(|e| match e {
            CallErr::Plain(m) => self.err(pos, node, m),
            CallErr::Call(m) => self.err(pos, node, format!("error calling {name}: {m}")),
        })
    }
}

/// Walks `.A.B.C` from `recv` (None = missing value).
fn eval_fields(recv: Option<&Value>, names: &[String], has_args: bool) -> Result<Val, String> {
    let mut cur = recv;
    for (i, name) in names.iter().enumerate() {
        cur = match cur {
            None => return Ok(Val::NoValue),
            Some(Value::Object(m)) => {
                if has_args && i + 1 == names.len() {
                    return Err(format!("{name} is not a method but has arguments"));
                }
                m.get(name)
            }
            Some(Value::Null) => {
                return Err(format!("nil pointer evaluating interface {{}}.{name}"))
            }
            Some(v) => {
                return Err(format!(
                    "can't evaluate field {name} in type {}",
                    go_type(v)
                ))
            }
        };
    }
    Ok(cur.map_or(Val::NoValue, |v| Val::Json(v.clone())))
}

// ------------------------------------------------------------------ builtins

enum CallErr {
    /// Reported as is (argument count and type errors).
    Plain(String),
    /// Reported as `error calling NAME: ...`.
    Call(String),
}

type CallResult = Result<Val, CallErr>;

fn arity(name: &str, want: &str, got: usize) -> CallErr {
    CallErr::Plain(format!(
        "wrong number of args for {name}: want {want} got {got}"
    ))
}

fn want_str(v: &Val) -> Result<&str, CallErr> {
    match v {
        Val::Json(Value::String(s)) => Ok(s),
        Val::NoValue => Err(CallErr::Plain("invalid value; expected string".to_string())),
        Val::Json(o) => Err(CallErr::Plain(format!(
            "wrong type for value; expected string; got {}",
            go_type(o)
        ))),
    }
}

fn want_int(v: &Val) -> Result<i64, CallErr> {
    match v {
        Val::Json(Value::Number(n)) if n.is_i64() => n
            .as_i64()
            .ok_or_else(|| CallErr::Plain("integer overflow".to_string())),
        Val::NoValue => Err(CallErr::Plain("invalid value; expected int".to_string())),
        Val::Json(o) => Err(CallErr::Plain(format!(
            "wrong type for value; expected int; got {}",
            go_type(o)
        ))),
    }
}

/// Largest count `pad` accepts, to keep a typo from exhausting memory.
const MAX_PAD: i64 = 1 << 20;

fn call_builtin(name: &str, args: Vec<Val>) -> CallResult {
    let n = args.len();
    match (name, args.as_slice()) {
        ("not", [a]) => Ok(bool_val(!truth(a))),
        ("len", [a]) => builtin_len(a),
        ("eq", [a, rest @ ..]) => {
            if rest.is_empty() {
                return Err(CallErr::Call("missing argument for comparison".to_string()));
            }
            for b in rest {
                if values_eq(a, b).map_err(CallErr::Call)? {
                    return Ok(bool_val(true));
                }
            }
            Ok(bool_val(false))
        }
        ("ne", [a, b]) => Ok(bool_val(!values_eq(a, b).map_err(CallErr::Call)?)),
        ("lt", [a, b]) => Ok(bool_val(values_lt(a, b).map_err(CallErr::Call)?)),
        ("le", [a, b]) => Ok(bool_val(values_le(a, b).map_err(CallErr::Call)?)),
        ("gt", [a, b]) => Ok(bool_val(!values_le(a, b).map_err(CallErr::Call)?)),
        ("ge", [a, b]) => Ok(bool_val(!values_lt(a, b).map_err(CallErr::Call)?)),
        ("index", [_, ..]) => {
            let mut it = args.into_iter();
            let item = it.next().unwrap_or(Val::NoValue);
            builtin_index(item, it)
        }
        ("slice", [item, idx @ ..]) => builtin_slice(item, idx),
        ("print", _) => Ok(str_val(sprint(&args))),
        ("println", _) => Ok(str_val(sprintln(&args))),
        ("printf", [f, rest @ ..]) => Ok(str_val(sprintf(want_str(f)?, rest))),
        ("html", _) => Ok(str_val(html_escape(&eval_args(&args)))),
        ("urlquery", _) => Ok(str_val(query_escape(&eval_args(&args)))),
        ("json", [a]) => {
            let mut s = String::new();
            json_encode(a.json().unwrap_or(&Value::Null), &mut s);
            Ok(str_val(s))
        }
        ("split", [s, sep]) => {
            let (s, sep) = (want_str(s)?, want_str(sep)?);
            let parts: Vec<Value> = if sep.is_empty() {
                s.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                s.split(sep).map(|p| Value::String(p.to_string())).collect()
            };
            Ok(Val::Json(Value::Array(parts)))
        }
        ("join", [list, sep]) => {
            let sep = want_str(sep)?;
            match list.non_nil() {
                None => Ok(str_val(String::new())),
                Some(Value::Array(a)) => {
                    let parts: Vec<String> = a.iter().map(go_v).collect();
                    Ok(str_val(parts.join(sep)))
                }
                Some(o) => Err(CallErr::Plain(format!(
                    "wrong type for value; expected []string; got {}",
                    go_type(o)
                ))),
            }
        }
        ("title", [s]) => Ok(str_val(title(want_str(s)?))),
        ("lower", [s]) => Ok(str_val(want_str(s)?.to_lowercase())),
        ("upper", [s]) => Ok(str_val(want_str(s)?.to_uppercase())),
        ("pad", [s, pre, suf]) => {
            let (s, pre, suf) = (want_str(s)?, want_int(pre)?, want_int(suf)?);
            if s.is_empty() {
                return Ok(str_val(String::new()));
            }
            let count = |c: i64| match usize::try_from(c) {
                Ok(c) if c <= MAX_PAD as usize => Ok(c),
                Ok(_) => Err(CallErr::Call(format!("pad count too large: {c}"))),
                Err(_) => Err(CallErr::Call("negative Repeat count".to_string())),
            };
            Ok(str_val(format!(
                "{}{s}{}",
                " ".repeat(count(pre)?),
                " ".repeat(count(suf)?)
            )))
        }
        ("truncate", [s, len]) => {
            let (s, len) = (want_str(s)?, want_int(len)?);
            let Ok(len) = usize::try_from(len) else {
                return Err(CallErr::Call(format!("slice bounds out of range [:{len}]")));
            };
            if s.len() < len {
                return Ok(str_val(s.to_string()));
            }
            let mut end = len;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Ok(str_val(s.get(..end).unwrap_or("").to_string()))
        }
        ("not" | "len" | "json" | "title" | "lower" | "upper", _) => Err(arity(name, "1", n)),
        ("ne" | "lt" | "le" | "gt" | "ge" | "split" | "join" | "truncate", _) => {
            Err(arity(name, "2", n))
        }
        ("pad", _) => Err(arity(name, "3", n)),
        ("eq" | "index" | "slice" | "printf", _) => Err(arity(name, "at least 1", n)),
        _ => Err(CallErr::Plain(format!("function {name:?} not defined"))),
    }
}

fn builtin_len(a: &Val) -> CallResult {
    let n = match a.non_nil() {
        None => return Err(CallErr::Call("len of nil pointer".to_string())),
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(v)) => v.len(),
        Some(Value::Object(m)) => m.len(),
        Some(o) => return Err(CallErr::Call(format!("len of type {}", go_type(o)))),
    };
    Ok(Val::Json(Value::from(n)))
}

/// Go's `indexArg`: an integer index in `0..=cap`.
fn index_arg(idx: &Val, cap: usize) -> Result<usize, CallErr> {
    let x: i128 = match idx.non_nil() {
        None => {
            return Err(CallErr::Call(
                "cannot index slice/array with nil".to_string(),
            ))
        }
        Some(Value::Number(n)) => match num(n) {
            Num::Int(i) => i,
            Num::Float(_) => {
                return Err(CallErr::Call(
                    "cannot index slice/array with type float64".to_string(),
                ))
            }
        },
        Some(o) => {
            return Err(CallErr::Call(format!(
                "cannot index slice/array with type {}",
                go_type(o)
            )))
        }
    };
    match usize::try_from(x) {
        Ok(i) if i <= cap => Ok(i),
        _ => Err(CallErr::Call(format!("index out of range: {x}"))),
    }
}

fn builtin_index(item: Val, idxs: impl Iterator<Item = Val>) -> CallResult {
    let mut cur = match item {
        Val::NoValue | Val::Json(Value::Null) => {
            return Err(CallErr::Call("index of untyped nil".to_string()))
        }
        Val::Json(v) => v,
    };
    for idx in idxs {
        cur = match cur {
            Value::Array(mut a) => {
                let i = index_arg(&idx, a.len())?;
                if i >= a.len() {
                    return Err(CallErr::Call(format!("index out of range: {i}")));
                }
                a.swap_remove(i)
            }
            Value::String(s) => {
                let i = index_arg(&idx, s.len())?;
                match s.as_bytes().get(i) {
                    Some(b) => Value::from(*b),
                    None => return Err(CallErr::Call(format!("index out of range: {i}"))),
                }
            }
            Value::Object(mut m) => match &idx {
                Val::Json(Value::String(k)) => m.remove(k).unwrap_or(Value::Null),
                Val::NoValue | Val::Json(Value::Null) => {
                    return Err(CallErr::Call("value is nil; should be string".to_string()))
                }
                Val::Json(o) => {
                    return Err(CallErr::Call(format!(
                        "value has type {}; should be string",
                        go_type(o)
                    )))
                }
            },
            Value::Null => return Err(CallErr::Call("index of nil pointer".to_string())),
            o => {
                return Err(CallErr::Call(format!(
                    "can't index item of type {}",
                    go_type(&o)
                )))
            }
        };
    }
    Ok(Val::Json(cur))
}

fn builtin_slice(item: &Val, idx: &[Val]) -> CallResult {
    let Some(v) = item.non_nil() else {
        return Err(CallErr::Call("slice of untyped nil".to_string()));
    };
    if idx.len() > 3 {
        return Err(CallErr::Call(format!(
            "too many slice indexes: {}",
            idx.len()
        )));
    }
    let len = match v {
        Value::String(s) => {
            if idx.len() == 3 {
                return Err(CallErr::Call("cannot 3-index slice a string".to_string()));
            }
            s.len()
        }
        Value::Array(a) => a.len(),
        o => {
            return Err(CallErr::Call(format!(
                "can't slice item of type {}",
                go_type(o)
            )))
        }
    };
    let mut bounds = [0, len, len];
    for (slot, i) in bounds.iter_mut().zip(idx) {
        *slot = index_arg(i, len)?;
    }
    let [lo, hi, max] = bounds;
    if lo > hi {
        return Err(CallErr::Call(format!("invalid slice index: {lo} > {hi}")));
    }
    if idx.len() == 3 && hi > max {
        return Err(CallErr::Call(format!("invalid slice index: {hi} > {max}")));
    }
    Ok(Val::Json(match v {
        Value::String(s) => Value::String(
            String::from_utf8_lossy(s.as_bytes().get(lo..hi).unwrap_or(&[])).into_owned(),
        ),
        Value::Array(a) => Value::Array(a.get(lo..hi).unwrap_or(&[]).to_vec()),
        _ => Value::Null,
    }))
}

/// Basic comparison kinds, as Go's `eq`/`lt` see them.
enum Basic<'v> {
    Nil,
    Bool(bool),
    Num(Num),
    Str(&'v str),
    Other,
}

fn basic(v: &Val) -> Basic<'_> {
    match v.non_nil() {
        None => Basic::Nil,
        Some(Value::Bool(b)) => Basic::Bool(*b),
        Some(Value::Number(n)) => Basic::Num(num(n)),
        Some(Value::String(s)) => Basic::Str(s),
        Some(_) => Basic::Other,
    }
}

const INCOMPATIBLE: &str = "incompatible types for comparison";
const BAD_TYPE: &str = "invalid type for comparison";

fn num_cmp(a: Num, b: Num) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        _ => num_f64(a).partial_cmp(&num_f64(b)),
    }
}

fn values_eq(a: &Val, b: &Val) -> Result<bool, String> {
    Ok(match (basic(a), basic(b)) {
        (Basic::Nil, Basic::Nil) => true,
        (Basic::Nil, _) | (_, Basic::Nil) => false,
        (Basic::Bool(x), Basic::Bool(y)) => x == y,
        (Basic::Num(x), Basic::Num(y)) => num_cmp(x, y) == Some(std::cmp::Ordering::Equal),
        (Basic::Str(x), Basic::Str(y)) => x == y,
        (Basic::Other, Basic::Other) => {
            let t = a.json().map_or("<nil>", go_type);
            return Err(format!("non-comparable type {t}"));
        }
        _ => return Err(INCOMPATIBLE.to_string()),
    })
}

fn values_lt(a: &Val, b: &Val) -> Result<bool, String> {
    match (basic(a), basic(b)) {
        (Basic::Num(x), Basic::Num(y)) => Ok(num_cmp(x, y) == Some(std::cmp::Ordering::Less)),
        (Basic::Str(x), Basic::Str(y)) => Ok(x < y),
        (Basic::Nil | Basic::Bool(_) | Basic::Other, _)
        | (_, Basic::Nil | Basic::Bool(_) | Basic::Other) => Err(BAD_TYPE.to_string()),
        _ => Err(INCOMPATIBLE.to_string()),
    }
}

fn values_le(a: &Val, b: &Val) -> Result<bool, String> {
    Ok(values_lt(a, b)? || values_eq(a, b)?)
}

/// strings.Title: upper-cases the first letter of each word.
fn title(s: &str) -> String {
    let is_sep = |c: char| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else if c.is_alphanumeric() {
            false
        } else {
            c.is_whitespace()
        }
    };
    let mut prev = ' ';
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_sep(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Argument to print-like functions: Go's `fmt.Sprint` of `interface{}`.
fn sprint_one(v: &Val) -> String {
    match v.non_nil() {
        None => "<nil>".to_string(),
        Some(x) => go_v(x),
    }
}

fn is_string(v: &Val) -> bool {
    matches!(v, Val::Json(Value::String(_)))
}

/// fmt.Sprint: spaces between operands when neither side is a string.
fn sprint(args: &[Val]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let s = is_string(a);
        if i > 0 && !s && !prev_string {
            out.push(' ');
        }
        out.push_str(&sprint_one(a));
        prev_string = s;
    }
    out
}

/// fmt.Sprintln: always spaces, plus a newline.
fn sprintln(args: &[Val]) -> String {
    let parts: Vec<String> = args.iter().map(sprint_one).collect();
    let mut out = parts.join(" ");
    out.push('\n');
    out
}

/// text/template's `evalArgs` for `html` and `urlquery`.
fn eval_args(args: &[Val]) -> String {
    if let [Val::Json(Value::String(s))] = args {
        return s.clone();
    }
    let printable: Vec<Val> = args
        .iter()
        .map(|a| match a.non_nil() {
            None => str_val("<no value>".to_string()),
            Some(_) => a.clone(),
        })
        .collect();
    sprint(&printable)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ------------------------------------------------------------------ printf

/// Flags, width and precision of one `%` verb.
#[derive(Debug, Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's limit on widths and precisions.
const MAX_WIDTH: usize = 1_000_000;

fn pad(s: String, sp: &Spec) -> String {
    let Some(w) = sp.width else { return s };
    let n = s.chars().count();
    if n >= w {
        return s;
    }
    let fill = w - n;
    if sp.minus {
        format!("{s}{}", " ".repeat(fill))
    } else if sp.zero {
        format!("{}{s}", "0".repeat(fill))
    } else {
        format!("{}{s}", " ".repeat(fill))
    }
}

fn pad_spaces(s: String, sp: &Spec) -> String {
    pad(s, &Spec { zero: false, ..*sp })
}

fn sign_of(neg: bool, sp: &Spec) -> &'static str {
    if neg {
        "-"
    } else if sp.plus {
        "+"
    } else if sp.space {
        " "
    } else {
        ""
    }
}

fn fmt_int(n: i128, verb: char, sp: &Spec) -> Option<String> {
    let a = n.unsigned_abs();
    let mut digits = match verb {
        'd' | 'v' => a.to_string(),
        'b' => format!("{a:b}"),
        'o' | 'O' => format!("{a:o}"),
        'x' => format!("{a:x}"),
        'X' => format!("{a:X}"),
        'c' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            return Some(pad(c.to_string(), sp));
        }
        'q' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let mut s = String::from('\'');
            quote_char(&mut s, c, '\'');
            s.push('\'');
            return Some(pad(s, sp));
        }
        'U' => return Some(pad(format!("U+{a:04X}"), sp)),
        _ => return None,
    };
    let sign = sign_of(n < 0, sp);
    let min_digits = match (sp.prec, sp.zero && !sp.minus, sp.width) {
        (Some(p), _, _) => {
            if p == 0 && a == 0 {
                digits.clear();
            }
            p
        }
        (None, true, Some(w)) => w.saturating_sub(sign.len()),
        _ => 0,
    };
    if digits.len() < min_digits {
        digits = format!("{}{digits}", "0".repeat(min_digits - digits.len()));
    }
    let prefix = match verb {
        'b' if sp.sharp => "0b",
        'o' if sp.sharp && !digits.starts_with('0') => "0",
        'x' if sp.sharp => "0x",
        'X' if sp.sharp => "0X",
        'O' => "0o",
        _ => "",
    };
    Some(pad_spaces(format!("{sign}{prefix}{digits}"), sp))
}

fn fmt_float(f: f64, verb: char, sp: &Spec) -> Option<String> {
    let a = f.abs();
    let body = match verb {
        'v' | 'g' => fmt_g(a, sp.prec, false),
        'G' => fmt_g(a, sp.prec, true),
        'e' => fmt_e(a, sp.prec.unwrap_or(6), false),
        'E' => fmt_e(a, sp.prec.unwrap_or(6), true),
        'f' | 'F' => fmt_f(a, sp.prec.unwrap_or(6)),
        _ => return None,
    };
    let sign = sign_of(f.is_sign_negative(), sp);
    if let (true, false, Some(w)) = (sp.zero, sp.minus, sp.width) {
        let len = sign.len() + body.len();
        if len < w {
            return Some(format!("{sign}{}{body}", "0".repeat(w - len)));
        }
    }
    Some(pad_spaces(format!("{sign}{body}"), sp))
}

fn fmt_str(s: &str, verb: char, sp: &Spec) -> Option<String> {
    let t: &str = match sp.prec {
        Some(p) => match s.char_indices().nth(p) {
            Some((i, _)) => s.get(..i).unwrap_or(s),
            None => s,
        },
        None => s,
    };
    Some(match verb {
        'v' | 's' => pad(t.to_string(), sp),
        'q' => {
            if sp.sharp && !t.contains('`') && !t.chars().any(|c| c != '\t' && c.is_control()) {
                pad(format!("`{t}`"), sp)
            } else {
                pad(go_quote(t), sp)
            }
        }
        'x' | 'X' => {
            let bytes = match sp.prec {
                Some(p) => s.as_bytes().get(..p).unwrap_or(s.as_bytes()),
                None => s.as_bytes(),
            };
            let mut out = String::new();
            for (i, b) in bytes.iter().enumerate() {
                if sp.space && i > 0 {
                    out.push(' ');
                }
                if sp.sharp && (sp.space || i == 0) {
                    out.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                if verb == 'x' {
                    out.push_str(&format!("{b:02x}"));
                } else {
                    out.push_str(&format!("{b:02X}"));
                }
            }
            pad(out, sp)
        }
        _ => return None,
    })
}

fn quote_char(out: &mut String, c: char, quote: char) {
    match c {
        c if c == quote || c == '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if c == ' ' || !(c.is_control() || c.is_whitespace()) => out.push(c),
        c if u32::from(c) < 0x80 => out.push_str(&format!("\\x{:02x}", u32::from(c))),
        c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
    }
}

/// strconv.Quote.
fn go_quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        quote_char(&mut out, c, '"');
    }
    out.push('"');
    out
}

fn bad_verb(verb: char, v: &Value) -> String {
    format!("%!{verb}({}={})", go_type(v), go_v(v))
}

/// Formats one (non-nil) value with a verb; composite values apply the verb
/// to each element, as Go's fmt does.
fn fmt_value(v: &Value, verb: char, sp: &Spec) -> String {
    match v {
        Value::Null => pad("<nil>".to_string(), sp),
        Value::Bool(b) => match verb {
            'v' | 't' => pad(b.to_string(), sp),
            _ => bad_verb(verb, v),
        },
        Value::Number(n) => match num(n) {
            Num::Int(i) => fmt_int(i, verb, sp),
            Num::Float(f) => fmt_float(f, verb, sp),
        }
        .unwrap_or_else(|| bad_verb(verb, v)),
        Value::String(s) => fmt_str(s, verb, sp).unwrap_or_else(|| bad_verb(verb, v)),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(|e| fmt_value(e, verb, sp)).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let parts: Vec<String> = sorted_entries(m)
                .into_iter()
                .map(|(k, e)| {
                    format!(
                        "{}:{}",
                        fmt_str(k, verb, sp)
                            .unwrap_or_else(|| bad_verb(verb, &Value::String(k.clone()))),
                        fmt_value(e, verb, sp)
                    )
                })
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn fmt_arg(v: &Val, verb: char, sp: &Spec) -> String {
    match v.non_nil() {
        None => match verb {
            'v' | 'T' => pad("<nil>".to_string(), sp),
            _ => format!("%!{verb}(<nil>)"),
        },
        Some(x) if verb == 'T' => pad(go_type(x).to_string(), sp),
        Some(x) => fmt_value(x, verb, sp),
    }
}

/// Parses a decimal number at `cs[*i..]`; None if there is none.
fn parse_num(cs: &[char], i: &mut usize) -> Option<usize> {
    let start = *i;
    let mut n: usize = 0;
    while let Some(d) = cs.get(*i).and_then(|c| c.to_digit(10)) {
        n = n.saturating_mul(10).saturating_add(d as usize);
        *i += 1;
    }
    (*i > start).then_some(n)
}

/// Parses an explicit argument index `[n]`; returns Some(ok) if one was there.
fn parse_arg_index(cs: &[char], i: &mut usize, argn: &mut usize, nargs: usize) -> Option<bool> {
    if cs.get(*i) != Some(&'[') {
        return None;
    }
    let mut j = *i + 1;
    let n = parse_num(cs, &mut j);
    if cs.get(j) != Some(&']') {
        // Unterminated: skip to the end of the format like Go does.
        *i = cs.len();
        return Some(false);
    }
    *i = j + 1;
    match n {
        Some(n) if n >= 1 && n <= nargs => {
            *argn = n - 1;
            Some(true)
        }
        _ => Some(false),
    }
}

fn int_arg(v: Option<&Val>) -> Option<i64> {
    match v?.non_nil()? {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// fmt.Sprintf over template values.
fn sprintf(format: &str, args: &[Val]) -> String {
    let cs: Vec<char> = format.chars().collect();
    let mut out = String::new();
    let mut argn = 0usize;
    let mut reordered = false;
    let mut i = 0usize;
    while let Some(&c) = cs.get(i) {
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut sp = Spec::default();
        while let Some(&f) = cs.get(i) {
            match f {
                '#' => sp.sharp = true,
                '0' => sp.zero = !sp.minus,
                '+' => sp.plus = true,
                '-' => {
                    sp.minus = true;
                    sp.zero = false;
                }
                ' ' => sp.space = true,
                _ => break,
            }
            i += 1;
        }
        let mut good_index = true;
        if let Some(ok) = parse_arg_index(&cs, &mut i, &mut argn, args.len()) {
            reordered = true;
            good_index &= ok;
        }
        if cs.get(i) == Some(&'*') {
            i += 1;
            match int_arg(args.get(argn)) {
                Some(w) if w.unsigned_abs() <= MAX_WIDTH as u64 => {
                    if w < 0 {
                        sp.minus = true;
                        sp.zero = false;
                    }
                    sp.width = usize::try_from(w.unsigned_abs()).ok();
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            argn += 1;
        } else if let Some(w) = parse_num(&cs, &mut i) {
            if w > MAX_WIDTH {
                out.push_str("%!(BADWIDTH)");
            } else {
                sp.width = Some(w);
            }
        }
        if cs.get(i) == Some(&'.') {
            i += 1;
            if let Some(ok) = parse_arg_index(&cs, &mut i, &mut argn, args.len()) {
                reordered = true;
                good_index &= ok;
            }
            if cs.get(i) == Some(&'*') {
                i += 1;
                match int_arg(args.get(argn)) {
                    Some(p) if p >= 0 && p.unsigned_abs() <= MAX_WIDTH as u64 => {
                        sp.prec = usize::try_from(p).ok();
                    }
                    Some(p) if p < 0 => sp.prec = None,
                    _ => out.push_str("%!(BADPREC)"),
                }
                argn += 1;
            } else {
                let p = parse_num(&cs, &mut i).unwrap_or(0);
                if p > MAX_WIDTH {
                    out.push_str("%!(BADPREC)");
                } else {
                    sp.prec = Some(p);
                }
            }
        }
        if let Some(ok) = parse_arg_index(&cs, &mut i, &mut argn, args.len()) {
            reordered = true;
            good_index &= ok;
        }
        let Some(&verb) = cs.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        if !good_index {
            out.push_str(&format!("%!{verb}(BADINDEX)"));
            continue;
        }
        match args.get(argn) {
            None => out.push_str(&format!("%!{verb}(MISSING)")),
            Some(a) => {
                out.push_str(&fmt_arg(a, verb, &sp));
                argn += 1;
            }
        }
    }
    if !reordered && argn < args.len() {
        out.push_str("%!(EXTRA ");
        for (k, a) in args.iter().skip(argn).enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            match a.non_nil() {
                None => out.push_str("<nil>"),
                Some(v) => out.push_str(&format!("{}={}", go_type(v), go_v(v))),
            }
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "Id": "abc123",
            "Name": "/web",
            "Names": ["web", "frontend"],
            "State": {"Pid": 4242, "Running": true, "ExitCode": 0, "Health": null},
            "Mounts": [
                {"Type": "bind", "Source": "/srv/<data>&co", "Destination": "/data"},
                {"Type": "volume", "Source": "logs", "Destination": "/logs"}
            ],
            "Config": {"Labels": {"a.b": "dotted", "z": "last", "com.example": "x"}, "Env": null},
            "A": [[1, 2, 3], []],
            "Ratio": 0.25,
            "Big": 12345678.0,
            "Tiny": 0.00001,
            "Count": 3.0
        })
    }

    fn render(src: &str) -> String {
        let t = Template::parse(src).expect("template parses");
        t.render(&doc()).expect("template renders")
    }

    fn render_err(src: &str) -> String {
        let t = Template::parse(src).expect("template parses");
        match t.render(&doc()) {
            Ok(s) => panic!("expected an execution error, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn parse_err(src: &str) -> String {
        match Template::parse(src) {
            Ok(_) => panic!("expected a parse error for {src:?}"),
            Err(e) => {
                assert!(matches!(e, TemplateError::Parse { .. }), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn field_chain() {
        assert_eq!(render("{{.State.Pid}}"), "4242");
        assert_eq!(render("pid={{ .State.Pid }}!"), "pid=4242!");
        assert_eq!(render("{{.Config.Labels.z}}"), "last");
    }

    #[test]
    fn json_of_array_of_objects() {
        assert_eq!(
            render("{{json .Mounts}}"),
            r#"[{"Destination":"/data","Source":"/srv/<data>&co","Type":"bind"},{"Destination":"/logs","Source":"logs","Type":"volume"}]"#
        );
        assert_eq!(render("{{json .Name}}"), r#""/web""#);
        assert_eq!(render("{{json .Nope}}"), "null");
        assert_eq!(render("{{json .Config.Env}}"), "null");
        assert_eq!(render("{{json .State.Running}}"), "true");
        assert_eq!(render("{{json .Big}} {{json .Ratio}}"), "12345678 0.25");
        assert_eq!(
            render(r#"{{json "tab\tquote\"nl\nctl\u0001ls\u2028"}}"#),
            r#""tab\tquote\"nl\nctl\u0001ls\u2028""#
        );
    }

    #[test]
    fn json_float_encoding_matches_go() {
        assert_eq!(json_float(1e21), "1e+21");
        assert_eq!(json_float(1e20), "100000000000000000000");
        assert_eq!(json_float(1e-7), "1e-7");
        assert_eq!(json_float(0.000001), "0.000001");
        assert_eq!(json_float(-2.5), "-2.5");
        assert_eq!(json_float(0.0), "0");
    }

    #[test]
    fn missing_key_prints_no_value() {
        assert_eq!(render("{{.Nope}}"), "<no value>");
        assert_eq!(render("{{.Nope.Deeper.Still}}"), "<no value>");
        assert_eq!(render("{{.State.Health}}"), "<no value>");
        assert_eq!(render("{{.Config.Labels.missing}}"), "<no value>");
    }

    #[test]
    fn field_on_non_object_is_error() {
        let e = render_err("{{.Name.Foo}}");
        assert_eq!(
            e,
            r#"template: :1:2: executing "" at <.Name.Foo>: can't evaluate field Foo in type string"#
        );
        let e = render_err("{{.State.Health.Status}}");
        assert!(
            e.contains("nil pointer evaluating interface {}.Status"),
            "{e}"
        );
        let e = render_err("x\n {{.State.Pid.X}}");
        assert!(e.starts_with("template: :2:3: "), "{e}");
        assert!(e.contains("in type int"), "{e}");
    }

    #[test]
    fn range_over_array() {
        assert_eq!(
            render("{{range .Mounts}}{{.Destination}} {{end}}"),
            "/data /logs "
        );
        assert_eq!(
            render("{{range $i, $m := .Mounts}}{{$i}}={{$m.Type}},{{end}}"),
            "0=bind,1=volume,"
        );
        assert_eq!(
            render("{{range $m := .Mounts}}{{$m.Source}}@{{$.Name}} {{end}}"),
            "/srv/<data>&co@/web logs@/web "
        );
    }

    #[test]
    fn range_else_break_continue_and_int() {
        assert_eq!(render("{{range .Nope}}x{{else}}empty{{end}}"), "empty");
        assert_eq!(render("{{range .Config.Env}}x{{else}}none{{end}}"), "none");
        assert_eq!(render("{{range index .A 1}}x{{else}}[]{{end}}"), "[]");
        assert_eq!(
            render(r#"{{range .Names}}{{if eq . "web"}}{{continue}}{{end}}{{.}}{{break}}{{end}}"#),
            "frontend"
        );
        assert_eq!(render("{{range 3}}{{.}}{{end}}"), "012");
        assert!(render_err("{{range .Name}}{{end}}").contains("range can't iterate over /web"));
    }

    #[test]
    fn index_function() {
        assert_eq!(render(r#"{{index .Config.Labels "a.b"}}"#), "dotted");
        assert_eq!(render(r#"{{index .Config.Labels "none"}}"#), "<no value>");
        assert_eq!(render("{{index .Names 1}}"), "frontend");
        assert_eq!(render("{{index .A 0 2}}"), "3");
        assert_eq!(render("{{(index .Mounts 1).Destination}}"), "/logs");
        let e = render_err("{{index .Names 5}}");
        assert!(e.contains("at <index .Names 5>"), "{e}");
        assert!(
            e.contains("error calling index: index out of range: 5"),
            "{e}"
        );
    }

    #[test]
    fn if_else() {
        assert_eq!(render("{{if .State.Running}}up{{else}}down{{end}}"), "up");
        assert_eq!(
            render("{{if .State.ExitCode}}failed{{else}}ok{{end}}"),
            "ok"
        );
        assert_eq!(render("{{if .Nope}}yes{{else}}no{{end}}"), "no");
        assert_eq!(
            render("{{if .Nope}}a{{else if .State.ExitCode}}b{{else if .Names}}c{{else}}d{{end}}"),
            "c"
        );
        assert_eq!(render("{{if index .A 1}}x{{else}}empty{{end}}"), "empty");
    }

    #[test]
    fn with_else() {
        assert_eq!(render("{{with .State}}{{.Pid}}{{end}}"), "4242");
        assert_eq!(render("{{with .Nope}}x{{else}}none{{end}}"), "none");
        assert_eq!(
            render("{{with .Nope}}a{{else with .Names}}{{index . 0}}{{end}}"),
            "web"
        );
        assert_eq!(render("{{with $s := .State}}{{$s.Pid}}{{end}}"), "4242");
    }

    #[test]
    fn range_map_with_key_and_value() {
        assert_eq!(
            render("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}"),
            "a.b=dotted;com.example=x;z=last;"
        );
        assert_eq!(
            render("{{range .Config.Labels}}{{.}} {{end}}"),
            "dotted x last "
        );
    }

    #[test]
    fn printf_widths_and_verbs() {
        assert_eq!(
            render(r#"{{printf "%-8s|%6d|%06.2f|%5s|" .Name .State.Pid .Ratio "ab"}}"#),
            "/web    |  4242|000.25|   ab|"
        );
        assert_eq!(
            render(r#"{{printf "%q %v %t %x %X %% %s" .Name .Names true 255 "hi" .Names}}"#),
            r#""/web" [web frontend] true ff 6869 % [web frontend]"#
        );
        assert_eq!(
            render(r#"{{printf "%d|%5.1f|%e" 7 3.14159 1234.5}}"#),
            "7|  3.1|1.234500e+03"
        );
        assert_eq!(
            render(r#"{{printf "%.2s|%-4d|%+d" "abcdef" 1 5}}"#),
            "ab|1   |+5"
        );
        assert_eq!(render(r#"{{printf "%s" .State.Pid}}"#), "%!s(int=4242)");
        assert_eq!(render(r#"{{printf "%d %d" 1}}"#), "1 %!d(MISSING)");
        assert_eq!(render(r#"{{printf "%d" 1 "x"}}"#), "1%!(EXTRA string=x)");
        assert_eq!(
            render(r#"{{printf "%v|%s" .Nope .Nope}}"#),
            "<nil>|%!s(<nil>)"
        );
        assert_eq!(render(r#"{{.Name | printf "name=%s"}}"#), "name=/web");
    }

    #[test]
    fn docker_string_functions() {
        assert_eq!(render(r#"{{join .Names ","}}"#), "web,frontend");
        assert_eq!(render(r#"{{join .Config.Env ","}}"#), "");
        assert_eq!(render("{{upper .Name}}"), "/WEB");
        assert_eq!(render(r#"{{lower "MiXeD"}}"#), "mixed");
        assert_eq!(
            render(r#"{{title "hello big-world foo_bar"}}"#),
            "Hello Big-World Foo_bar"
        );
        assert_eq!(render(r#"{{split "a:b::c" ":"}}"#), "[a b  c]");
        assert_eq!(render(r#"{{len (split "a,b" ",")}}"#), "2");
        assert_eq!(render(r#"[{{pad "x" 2 1}}][{{pad "" 2 1}}]"#), "[  x ][]");
        assert_eq!(
            render(r#"{{truncate .Id 3}}|{{truncate "ab" 5}}"#),
            "abc|ab"
        );
        assert_eq!(render(r#"{{truncate "héllo" 2}}"#), "h");
        assert!(render_err("{{upper .State.Pid}}")
            .contains("wrong type for value; expected string; got int"));
        assert!(render_err("{{upper .Nope}}").contains("invalid value; expected string"));
    }

    #[test]
    fn nested_parentheses() {
        assert_eq!(render("{{len (index .A 0)}}"), "3");
        assert_eq!(render("{{len (index (index .A 0) 0 | print)}}"), "1");
        assert_eq!(
            render(r#"{{upper (printf "%s-%d" (index .Names 0) (len .Names))}}"#),
            "WEB-2"
        );
    }

    #[test]
    fn table_format() {
        let t = Template::parse(r"table {{.ID}}\t{{.Image}}").expect("parses");
        assert!(t.is_table());
        assert_eq!(t.fields(), vec!["ID".to_string(), "Image".to_string()]);
        let row = json!({"ID": "abc", "Image": "alpine"});
        assert_eq!(t.render(&row).expect("renders"), "abc\talpine");

        let t = Template::parse(r#"table {{.ID}}\n{{join .Names ","}}"#).expect("parses");
        assert_eq!(t.fields(), vec!["ID".to_string(), "Names".to_string()]);
        let row = json!({"ID": "x", "Names": ["a", "b"]});
        assert_eq!(t.render(&row).expect("renders"), "x\na,b");

        let t = Template::parse(r"{{.ID}}\t{{.Image}}").expect("parses");
        assert!(!t.is_table());
        assert_eq!(
            t.render(&json!({"ID": 1, "Image": 2})).expect("renders"),
            r"1\t2"
        );

        let t = Template::parse("table").expect("parses");
        assert!(t.is_table());
        assert!(t.fields().is_empty());
        assert!(!Template::parse("tables {{.X}}").expect("parses").is_table());

        let t = Template::parse("{{if .A}}{{.B.C}}{{end}}{{range .D}}{{.E}}{{end}}{{$.F}}")
            .expect("parses");
        assert_eq!(t.fields(), vec!["A", "B.C", "D", "F"]);
    }

    #[test]
    fn trim_markers() {
        assert_eq!(render("a  {{- .Name -}}  b"), "a/webb");
        assert_eq!(render("a \n {{- .Name}} b"), "a/web b");
        assert_eq!(render("a {{.Name -}} \n\t b"), "a /webb");
        assert_eq!(
            render("{{range .Names -}}\n  {{.}}\n{{- end}}"),
            "webfrontend"
        );
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(render("x {{-3}}"), "x -3");
    }

    #[test]
    fn comments() {
        assert_eq!(render("a{{/* hidden */}}b"), "ab");
        assert_eq!(render("a {{- /* hidden */ -}} b"), "ab");
        parse_err("{{/* never closed }}");
        parse_err("{{/* x */ .Name}}");
    }

    #[test]
    fn parse_errors() {
        let e = parse_err("{{.Name");
        assert!(e.contains("unclosed action"), "{e}");
        let e = parse_err("x {{nosuch .Name}}");
        assert_eq!(e, r#"template: :1:4: function "nosuch" not defined"#);
        let e = parse_err("a{{end}}");
        assert!(e.contains("unexpected {{end}}"), "{e}");
        assert!(parse_err("{{else}}").contains("unexpected {{else}}"));
        assert!(parse_err("{{if .A}}x").contains("unexpected EOF"));
        assert!(parse_err("{{range .A}}x{{else}}y").contains("unexpected EOF"));
        assert!(parse_err("{{$x}}").contains(r#"undefined variable "$x""#));
        assert!(parse_err(r#"{{"open}}"#).contains("unterminated quoted string"));
        assert!(parse_err("{{(.A}}").contains("unclosed left paren"));
        assert!(parse_err("{{.A)}}").contains("unexpected right paren"));
        assert!(parse_err("{{}}").contains("missing value for command"));
        assert!(parse_err("{{.A |}}").contains("missing command after |"));
        assert!(parse_err("{{break}}").contains("outside {{range}}"));
        assert!(parse_err(r#"{{template "x"}}"#).contains("not supported"));
        assert!(parse_err("{{.A | 3}}").contains("non executable command"));
        assert!(parse_err("{{nil}}").contains("nil is not a command"));
        assert!(parse_err("{{12ab}}").contains("bad number syntax"));
        assert!(parse_err("{{#}}").contains("unrecognized character"));
        assert!(parse_err(r#"{{"a\q"}}"#).contains("escape"));
        assert!(parse_err("{{if 1}}{{$v := 1}}{{end}}{{$v}}").contains("undefined variable"));
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let ok = format!("{{{{{}1{}}}}}", "(".repeat(150), ")".repeat(150));
        assert_eq!(render(&ok), "1");
        let deep = format!("{{{{{}1{}}}}}", "(".repeat(5000), ")".repeat(5000));
        assert!(parse_err(&deep).contains("nested too deeply"));
        let ifs = format!("{}x{}", "{{if 1}}".repeat(5000), "{{end}}".repeat(5000));
        assert!(parse_err(&ifs).contains("nested too deeply"));
    }

    #[test]
    fn value_printing_like_go() {
        assert_eq!(
            render("{{.Ratio}} {{.Big}} {{.Tiny}} {{.Count}}"),
            "0.25 1.2345678e+07 1e-05 3"
        );
        assert_eq!(render("{{.Names}}"), "[web frontend]");
        assert_eq!(
            render("{{.Config.Labels}}"),
            "map[a.b:dotted com.example:x z:last]"
        );
        assert_eq!(
            render("{{.State}}"),
            "map[ExitCode:0 Health:<nil> Pid:4242 Running:true]"
        );
        assert_eq!(render("{{.A}}"), "[[1 2 3] []]");
        assert_eq!(
            render("{{true}} {{1.50}} {{0x1F}} {{1e3}} {{'a'}}"),
            "true 1.5 31 1000 97"
        );
        assert_eq!(fmt_g(1e6, None, false), "1e+06");
        assert_eq!(fmt_g(123456.0, None, false), "123456");
        assert_eq!(fmt_g(0.0001, None, false), "0.0001");
        assert_eq!(fmt_g(-2.5, None, false), "-2.5");
        assert_eq!(fmt_g(1234.5678, Some(3), false), "1.23e+03");
    }

    #[test]
    fn literals_and_escapes() {
        assert_eq!(render(r#"{{"a\tb\x41\u00e9\101\\"}}"#), "a\tbAéA\\");
        assert_eq!(render(r"{{`raw\n`}}"), r"raw\n");
        assert_eq!(render(r#"{{print 'x' "y"}}"#), "120y");
        assert_eq!(render("{{print nil}}"), "<nil>");
    }

    #[test]
    fn variables() {
        assert_eq!(render("{{$n := .Name}}{{$n}}"), "/web");
        assert_eq!(render("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}"), "2");
        assert!(render("{{$}}").starts_with("map[A:[[1 2 3] []]"));
        assert_eq!(
            render("{{with .State}}{{$.Name}}:{{.Pid}}{{end}}"),
            "/web:4242"
        );
        assert_eq!(render("{{$m := index .Mounts 0}}{{$m.Type}}"), "bind");
    }

    #[test]
    fn logic_and_comparison() {
        assert_eq!(render("{{and .State.Running .Name}}"), "/web");
        assert_eq!(render("{{and .Nope (index .Names 99)}}"), "<no value>");
        assert_eq!(render(r#"{{or .Nope "" "fallback"}}"#), "fallback");
        assert_eq!(render("{{not .State.Running}}"), "false");
        assert_eq!(render(r#"{{eq .Name "/db" "/web"}}"#), "true");
        assert_eq!(render("{{eq .State.ExitCode 0.0}}"), "true");
        assert_eq!(render("{{ne .State.Pid 1}}"), "true");
        assert_eq!(
            render(r#"{{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1 2.5}}"#),
            "true true true false"
        );
        assert_eq!(
            render("{{if and .State.Running (gt .State.Pid 100)}}big{{end}}"),
            "big"
        );
        assert!(render_err(r#"{{eq .Name 1}}"#).contains("incompatible types for comparison"));
        assert!(render_err("{{lt true false}}").contains("invalid type for comparison"));
    }

    #[test]
    fn print_functions() {
        assert_eq!(render(r#"{{print 1 2 "a" 3 "b" "c"}}"#), "1 2a3bc");
        assert_eq!(render(r#"{{println "a" 1}}"#), "a 1\n");
        assert_eq!(
            render(r#"{{html "<a href='x'>&"}}"#),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        assert_eq!(render(r#"{{urlquery "a b&c/d"}}"#), "a+b%26c%2Fd");
        assert_eq!(
            render(r#"{{slice "hello" 1 3}} {{slice .Names 1}}"#),
            "el [frontend]"
        );
    }

    #[test]
    fn pipeline_argument_errors() {
        assert!(render_err(r#"{{.Name "x"}}"#).contains("Name is not a method but has arguments"));
        assert!(render_err(r#"{{"x" 1}}"#).contains("can't give argument to non-function"));
        assert!(render_err("{{not 1 2}}").contains("wrong number of args for not: want 1 got 2"));
        assert!(render_err("{{len .Nope}}").contains("error calling len"));
    }
}
