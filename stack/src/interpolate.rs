//! Variable interpolation, as the Compose spec defines it: `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
//! `${VAR:+replacement}`, `${VAR+replacement}`, and `$$` for a literal `$`.
//! Defaults and replacements may themselves contain interpolations.

use std::collections::HashMap;

/// Why a template could not be expanded; the caller adds the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolationError {
    /// Malformed template (`${`, `$1`, `${A B}`...).
    Invalid(String),
    /// A `:?` / `?` variable was unset (or empty); carries the user's message.
    Required { var: String, message: String },
}

/// The result of expanding one string.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    pub text: String,
    /// Variables used without a value and without a default (they expand to "").
    pub unset: Vec<String>,
}

/// Expands `input` against `env`.
pub(crate) fn interpolate(
    input: &str,
    env: &HashMap<String, String>,
) -> Result<Expanded, InterpolationError> {
    let mut out = Expanded::default();
    out.text = expand(input, env, &mut out.unset, input)?;
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn invalid(whole: &str) -> InterpolationError {
    InterpolationError::Invalid(format!(
        "invalid interpolation format in {whole:?}: you may need to escape any $ with another $"
    ))
}

fn expand(
    input: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
    whole: &str,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(input.len());
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some(&c) if is_name_start(c) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && is_name_char(chars[end]) {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                match env.get(&name) {
                    Some(v) => out.push_str(v),
                    None => unset.push(name),
                }
                i = end;
            }
            Some('{') => {
                // Find the matching close brace, allowing nested ${...} in defaults.
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '{' if j > 0 && chars[j - 1] == '$' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(invalid(whole));
                }
                let body: String = chars[i + 2..j].iter().collect();
                out.push_str(&braced(&body, env, unset, whole)?);
                i = j + 1;
            }
            // Not a variable: compose-go keeps the `$` as written (`$1`, `a $`).
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn braced(
    body: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
    whole: &str,
) -> Result<String, InterpolationError> {
    let name_len = body
        .char_indices()
        .find(|&(_, c)| !is_name_char(c))
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    let name = &body[..name_len];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(invalid(whole));
    }
    let rest = &body[name_len..];
    let value = env.get(name);
    let (colon, rest) = match rest.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    // With a colon, an empty value counts as unset.
    let set = match value {
        Some(v) => !(colon && v.is_empty()),
        None => false,
    };
    let Some(op) = rest.chars().next() else {
        if colon {
            return Err(invalid(whole));
        }
        return Ok(match value {
            Some(v) => v.clone(),
            None => {
                unset.push(name.to_string());
                String::new()
            }
        });
    };
    let arg = &rest[op.len_utf8()..];
    match op {
        '-' => {
            if set {
                Ok(value.cloned().unwrap_or_default())
            } else {
                expand(arg, env, unset, whole)
            }
        }
        '+' => {
            if set {
                expand(arg, env, unset, whole)
            } else {
                Ok(String::new())
            }
        }
        '?' => {
            if set {
                Ok(value.cloned().unwrap_or_default())
            } else {
                let message = expand(arg, env, unset, whole)?;
                Err(InterpolationError::Required {
                    var: name.to_string(),
                    message,
                })
            }
        }
        _ => Err(invalid(whole)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("A", "alpha"), ("EMPTY", ""), ("N", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(s: &str) -> String {
        interpolate(s, &env()).expect("valid template").text
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(ok("$A"), "alpha");
        assert_eq!(ok("${A}"), "alpha");
        assert_eq!(ok("x-$A-y"), "x-alpha-y");
        assert_eq!(ok("${A}_b"), "alpha_b");
        assert_eq!(ok("$A_b"), "");
        assert_eq!(ok("no dollars"), "no dollars");
        assert_eq!(ok("héllo ${A} wörld"), "héllo alpha wörld");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(ok("$$"), "$");
        assert_eq!(ok("$$A"), "$A");
        assert_eq!(ok("echo $${HOME}"), "echo ${HOME}");
        assert_eq!(ok("$$$A"), "$alpha");
    }

    #[test]
    fn defaults_distinguish_unset_from_empty() {
        assert_eq!(ok("${MISSING:-d}"), "d");
        assert_eq!(ok("${MISSING-d}"), "d");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${A:-d}"), "alpha");
        assert_eq!(ok("${MISSING:-}"), "");
        assert_eq!(ok("${MISSING:-a b:c}"), "a b:c");
    }

    #[test]
    fn nested_defaults_are_expanded() {
        assert_eq!(ok("${MISSING:-${A}}"), "alpha");
        assert_eq!(ok("${MISSING:-${OTHER:-x}-y}"), "x-y");
    }

    #[test]
    fn replacement_forms() {
        assert_eq!(ok("${A:+set}"), "set");
        assert_eq!(ok("${EMPTY:+set}"), "");
        assert_eq!(ok("${EMPTY+set}"), "set");
        assert_eq!(ok("${MISSING+set}"), "");
    }

    #[test]
    fn required_variables_fail_with_the_message() {
        let e = interpolate("${MISSING:?need MISSING}", &env()).expect_err("must fail");
        assert_eq!(
            e,
            InterpolationError::Required {
                var: "MISSING".into(),
                message: "need MISSING".into()
            }
        );
        assert!(interpolate("${EMPTY:?x}", &env()).is_err());
        assert_eq!(ok("${EMPTY?x}"), "");
        assert!(interpolate("${MISSING?x}", &env()).is_err());
        assert_eq!(ok("${N:?x}"), "3");
    }

    #[test]
    fn unset_variables_are_reported() {
        let e = interpolate("$NOPE and ${ALSO}", &env()).expect("valid");
        assert_eq!(e.text, " and ");
        assert_eq!(e.unset, vec!["NOPE".to_string(), "ALSO".to_string()]);
        // A default means "not a problem".
        assert!(interpolate("${NOPE:-x}", &env())
            .expect("valid")
            .unset
            .is_empty());
    }

    #[test]
    fn a_dollar_not_starting_a_variable_is_kept() {
        assert_eq!(ok("$"), "$");
        assert_eq!(ok("a $"), "a $");
        assert_eq!(ok("$1 and $-"), "$1 and $-");
        assert_eq!(ok("cost: 5$ ${A}"), "cost: 5$ alpha");
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in [
            "${", "${A", "${}", "${1A}", "${A B}", "${A:}", "${A:x}", "a ${ b",
        ] {
            assert!(
                matches!(
                    interpolate(bad, &env()),
                    Err(InterpolationError::Invalid(_))
                ),
                "{bad:?} should be invalid"
            );
        }
    }
}
