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

mod exec;
mod funcs;
mod lexer;
mod parser;
mod printf;
#[cfg(test)]
mod tests;
mod value;

use exec::*;
use funcs::*;
use lexer::*;
use parser::*;
use printf::*;
use value::*;

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
