//! Go's `fmt` verbs for `printf`: flags, width, precision, `%v %d %s %q %x %e %f %g`.

use super::*;

/// Flags, width and precision of one `%` verb.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Spec {
    pub(super) minus: bool,
    pub(super) plus: bool,
    pub(super) sharp: bool,
    pub(super) space: bool,
    pub(super) zero: bool,
    pub(super) width: Option<usize>,
    pub(super) prec: Option<usize>,
}

/// Go's limit on widths and precisions.
pub(super) const MAX_WIDTH: usize = 1_000_000;

pub(super) fn pad(s: String, sp: &Spec) -> String {
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

pub(super) fn pad_spaces(s: String, sp: &Spec) -> String {
    pad(s, &Spec { zero: false, ..*sp })
}

pub(super) fn sign_of(neg: bool, sp: &Spec) -> &'static str {
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

pub(super) fn fmt_int(n: i128, verb: char, sp: &Spec) -> Option<String> {
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

pub(super) fn fmt_float(f: f64, verb: char, sp: &Spec) -> Option<String> {
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

pub(super) fn fmt_str(s: &str, verb: char, sp: &Spec) -> Option<String> {
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

pub(super) fn quote_char(out: &mut String, c: char, quote: char) {
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
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        quote_char(&mut out, c, '"');
    }
    out.push('"');
    out
}

pub(super) fn bad_verb(verb: char, v: &Value) -> String {
    format!("%!{verb}({}={})", go_type(v), go_v(v))
}

/// Formats one (non-nil) value with a verb; composite values apply the verb
/// to each element, as Go's fmt does.
pub(super) fn fmt_value(v: &Value, verb: char, sp: &Spec) -> String {
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

pub(super) fn fmt_arg(v: &Val, verb: char, sp: &Spec) -> String {
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
pub(super) fn parse_num(cs: &[char], i: &mut usize) -> Option<usize> {
    let start = *i;
    let mut n: usize = 0;
    while let Some(d) = cs.get(*i).and_then(|c| c.to_digit(10)) {
        n = n.saturating_mul(10).saturating_add(d as usize);
        *i += 1;
    }
    (*i > start).then_some(n)
}

/// Parses an explicit argument index `[n]`; returns Some(ok) if one was there.
pub(super) fn parse_arg_index(
    cs: &[char],
    i: &mut usize,
    argn: &mut usize,
    nargs: usize,
) -> Option<bool> {
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

pub(super) fn int_arg(v: Option<&Val>) -> Option<i64> {
    match v?.non_nil()? {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// fmt.Sprintf over template values.
pub(super) fn sprintf(format: &str, args: &[Val]) -> String {
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
