//! Go's builtin template functions and Docker's additions (`json`, `join`, `pad`, ...).

use super::*;

pub(super) enum CallErr {
    /// Reported as is (argument count and type errors).
    Plain(String),
    /// Reported as `error calling NAME: ...`.
    Call(String),
}

pub(super) type CallResult = Result<Val, CallErr>;

pub(super) fn arity(name: &str, want: &str, got: usize) -> CallErr {
    CallErr::Plain(format!(
        "wrong number of args for {name}: want {want} got {got}"
    ))
}

pub(super) fn want_str(v: &Val) -> Result<&str, CallErr> {
    match v {
        Val::Json(Value::String(s)) => Ok(s),
        Val::NoValue => Err(CallErr::Plain("invalid value; expected string".to_string())),
        Val::Json(o) => Err(CallErr::Plain(format!(
            "wrong type for value; expected string; got {}",
            go_type(o)
        ))),
    }
}

pub(super) fn want_int(v: &Val) -> Result<i64, CallErr> {
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
pub(super) const MAX_PAD: i64 = 1 << 20;

pub(super) fn call_builtin(name: &str, args: Vec<Val>) -> CallResult {
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

pub(super) fn builtin_len(a: &Val) -> CallResult {
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
pub(super) fn index_arg(idx: &Val, cap: usize) -> Result<usize, CallErr> {
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

pub(super) fn builtin_index(item: Val, idxs: impl Iterator<Item = Val>) -> CallResult {
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

pub(super) fn builtin_slice(item: &Val, idx: &[Val]) -> CallResult {
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
pub(super) enum Basic<'v> {
    Nil,
    Bool(bool),
    Num(Num),
    Str(&'v str),
    Other,
}

pub(super) fn basic(v: &Val) -> Basic<'_> {
    match v.non_nil() {
        None => Basic::Nil,
        Some(Value::Bool(b)) => Basic::Bool(*b),
        Some(Value::Number(n)) => Basic::Num(num(n)),
        Some(Value::String(s)) => Basic::Str(s),
        Some(_) => Basic::Other,
    }
}

pub(super) const INCOMPATIBLE: &str = "incompatible types for comparison";
pub(super) const BAD_TYPE: &str = "invalid type for comparison";

pub(super) fn num_cmp(a: Num, b: Num) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        _ => num_f64(a).partial_cmp(&num_f64(b)),
    }
}

pub(super) fn values_eq(a: &Val, b: &Val) -> Result<bool, String> {
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

pub(super) fn values_lt(a: &Val, b: &Val) -> Result<bool, String> {
    match (basic(a), basic(b)) {
        (Basic::Num(x), Basic::Num(y)) => Ok(num_cmp(x, y) == Some(std::cmp::Ordering::Less)),
        (Basic::Str(x), Basic::Str(y)) => Ok(x < y),
        (Basic::Nil | Basic::Bool(_) | Basic::Other, _)
        | (_, Basic::Nil | Basic::Bool(_) | Basic::Other) => Err(BAD_TYPE.to_string()),
        _ => Err(INCOMPATIBLE.to_string()),
    }
}

pub(super) fn values_le(a: &Val, b: &Val) -> Result<bool, String> {
    Ok(values_lt(a, b)? || values_eq(a, b)?)
}

/// strings.Title: upper-cases the first letter of each word.
pub(super) fn title(s: &str) -> String {
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
pub(super) fn sprint_one(v: &Val) -> String {
    match v.non_nil() {
        None => "<nil>".to_string(),
        Some(x) => go_v(x),
    }
}

pub(super) fn is_string(v: &Val) -> bool {
    matches!(v, Val::Json(Value::String(_)))
}

/// fmt.Sprint: spaces between operands when neither side is a string.
pub(super) fn sprint(args: &[Val]) -> String {
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
pub(super) fn sprintln(args: &[Val]) -> String {
    let parts: Vec<String> = args.iter().map(sprint_one).collect();
    let mut out = parts.join(" ");
    out.push('\n');
    out
}

/// text/template's `evalArgs` for `html` and `urlquery`.
pub(super) fn eval_args(args: &[Val]) -> String {
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

pub(super) fn html_escape(s: &str) -> String {
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

pub(super) fn query_escape(s: &str) -> String {
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
