//! Tokens: the template text split into text, delimiters, words and literals, with Go's escapes.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kw {
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
    pub(super) fn name(self) -> &'static str {
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
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

pub(super) static EOF_TOKEN: Token = Token {
    tok: Tok::Eof,
    pos: 0,
};

pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub(super) fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

pub(super) fn describe(t: &Tok) -> String {
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

pub(super) struct Lexer<'s> {
    pub(super) src: &'s str,
    pub(super) pos: usize,
    pub(super) toks: Vec<Token>,
    pub(super) table: bool,
}

impl<'s> Lexer<'s> {
    pub(super) fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        parse_err(self.src, pos, msg)
    }

    pub(super) fn rest(&self) -> &'s str {
        self.src.get(self.pos..).unwrap_or("")
    }

    pub(super) fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(super) fn push(&mut self, tok: Tok, pos: usize) {
        self.toks.push(Token { tok, pos });
    }

    /// Length of the right delimiter at `pos` (`}}` or ` -}}`) and whether it
    /// carries a trim marker.
    pub(super) fn right_delim_at(&self, pos: usize) -> Option<(usize, bool)> {
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

    pub(super) fn at_terminator(&self) -> bool {
        match self.peek_char() {
            None => true,
            Some(c) => {
                is_space(c)
                    || matches!(c, '.' | ',' | '|' | ':' | ')' | '(')
                    || self.rest().starts_with("}}")
            }
        }
    }

    pub(super) fn check_terminator(&self) -> Result<(), TemplateError> {
        if self.at_terminator() {
            return Ok(());
        }
        let c = self.peek_char().unwrap_or('\u{FFFD}');
        Err(self.err(self.pos, format!("bad character {}", unicode_desc(c))))
    }

    pub(super) fn scan_alnum(&mut self) {
        while let Some(c) = self.peek_char() {
            if !is_alnum(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    pub(super) fn run(mut self) -> Result<Vec<Token>, TemplateError> {
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
    pub(super) fn lex_action(&mut self, open: usize) -> Result<bool, TemplateError> {
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

    pub(super) fn lex_quote(&mut self) -> Result<(), TemplateError> {
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

    pub(super) fn lex_raw(&mut self) -> Result<(), TemplateError> {
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

    pub(super) fn lex_char(&mut self) -> Result<(), TemplateError> {
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

    pub(super) fn lex_number(&mut self) -> Result<(), TemplateError> {
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

pub(super) fn unicode_desc(c: char) -> String {
    format!("U+{:04X} '{}'", u32::from(c), c)
}

pub(super) fn parse_number(text: &str) -> Result<Number, String> {
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

pub(super) enum Esc {
    Byte(u8),
    Char(char),
}

pub(super) fn read_hex(it: &mut std::str::Chars<'_>, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for _ in 0..n {
        v = v.checked_mul(16)? + it.next()?.to_digit(16)?;
    }
    Some(v)
}

/// Reads one escape sequence after a backslash, as Go's `strconv.Unquote`.
pub(super) fn read_escape(it: &mut std::str::Chars<'_>, quote: char) -> Option<Esc> {
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

pub(super) fn unescape(s: &str, quote: char) -> Result<String, String> {
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
