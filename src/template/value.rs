//! Values during evaluation and how Go prints them: `%v`, floats, JSON.

use super::*;

/// A value during evaluation: either Go's "invalid" value (missing map key,
/// nothing piped) or a JSON value.
#[derive(Debug, Clone)]
pub(super) enum Val {
    NoValue,
    Json(Value),
}

impl Val {
    pub(super) fn json(&self) -> Option<&Value> {
        match self {
            Val::NoValue => None,
            Val::Json(v) => Some(v),
        }
    }

    /// The value unless it is missing or JSON `null` (Go's nil interface).
    pub(super) fn non_nil(&self) -> Option<&Value> {
        self.json().filter(|v| !v.is_null())
    }
}

pub(super) fn str_val(s: String) -> Val {
    Val::Json(Value::String(s))
}

pub(super) fn bool_val(b: bool) -> Val {
    Val::Json(Value::Bool(b))
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
    Int(i128),
    Float(f64),
}

pub(super) fn num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

pub(super) fn num_f64(n: Num) -> f64 {
    match n {
        // Precision loss beyond 2^53 is acceptable for comparisons.
        #[allow(clippy::cast_precision_loss)]
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

/// Go's type name for the equivalent `interface{}` value.
pub(super) fn go_type(v: &Value) -> &'static str {
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
pub(super) fn truth(v: &Val) -> bool {
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

pub(super) fn sorted_entries(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut e: Vec<_> = m.iter().collect();
    e.sort_by(|a, b| a.0.cmp(b.0));
    e
}

pub(super) fn num_str(n: &Number) -> String {
    match num(n) {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => fmt_g(f, None, false),
    }
}

/// Appends `v` formatted as Go's `%v`.
pub(super) fn write_v(out: &mut String, v: &Value) {
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

pub(super) fn go_v(v: &Value) -> String {
    let mut s = String::new();
    write_v(&mut s, v);
    s
}

/// How an action prints its final value.
pub(super) fn print_top(v: &Val) -> String {
    match v.non_nil() {
        None => "<no value>".to_string(),
        Some(x) => go_v(x),
    }
}

// ------------------------------------------------------------------ floats

/// Significant digits (no trailing zeros) and decimal-point position of a
/// `{:e}`-formatted non-negative number: value = 0.DIGITS × 10^dp.
pub(super) fn sci_digits(s: &str) -> (Vec<u8>, i64) {
    let (m, e) = s.split_once('e').unwrap_or((s, "0"));
    let mut digits: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    let exp: i64 = e.parse().unwrap_or(0);
    (digits, exp + 1)
}

pub(super) fn exp_suffix(exp: i64, upper: bool) -> String {
    format!(
        "{}{}{:02}",
        if upper { 'E' } else { 'e' },
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    )
}

pub(super) fn digit_at(d: &[u8], i: i64) -> char {
    usize::try_from(i)
        .ok()
        .and_then(|i| d.get(i))
        .map_or('0', |&b| char::from(b))
}

/// Go's `%e` layout from digits: d.ddd e±XX with `decimals` digits.
pub(super) fn layout_e(d: &[u8], dp: i64, decimals: i64, upper: bool) -> String {
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
pub(super) fn layout_f(d: &[u8], dp: i64, decimals: i64) -> String {
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

pub(super) fn shortest_digits(a: f64) -> (Vec<u8>, i64) {
    if a == 0.0 {
        (Vec::new(), 0)
    } else {
        sci_digits(&format!("{a:e}"))
    }
}

pub(super) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Go's `strconv.FormatFloat(f, 'g', prec, 64)`; `None` is the shortest
/// representation, which is also what `%v` prints.
pub(super) fn fmt_g(f: f64, prec: Option<usize>, upper: bool) -> String {
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
pub(super) const EXACT_DIGITS: usize = 1100;

/// Go's `%e` with the given precision.
pub(super) fn fmt_e(f: f64, prec: usize, upper: bool) -> String {
    let s = format!("{:.*e}", prec.min(EXACT_DIGITS), f);
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i64 = e.parse().unwrap_or(0);
    let zeros = "0".repeat(prec.saturating_sub(EXACT_DIGITS));
    format!("{m}{zeros}{}", exp_suffix(exp, upper))
}

/// Go's `%f` with the given precision.
pub(super) fn fmt_f(f: f64, prec: usize) -> String {
    let s = format!("{:.*}", prec.min(EXACT_DIGITS), f);
    format!("{s}{}", "0".repeat(prec.saturating_sub(EXACT_DIGITS)))
}

/// `encoding/json`'s float64 encoding.
pub(super) fn json_float(f: f64) -> String {
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
pub(super) fn json_encode(v: &Value, out: &mut String) {
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

pub(super) fn json_string(s: &str, out: &mut String) {
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
