//! Walking the tree over a JSON document: fields, variables, control flow.

use super::*;

pub(super) enum Flow {
    Normal,
    Break,
    Continue,
}

pub(super) struct Exec<'t> {
    pub(super) src: &'t str,
    pub(super) root: &'t Val,
    pub(super) vars: Vec<(String, Val)>,
    pub(super) out: String,
}

pub(super) type EResult<T> = Result<T, TemplateError>;

impl Exec<'_> {
    pub(super) fn err(
        &self,
        pos: usize,
        node: &dyn fmt::Display,
        msg: impl Into<String>,
    ) -> TemplateError {
        let (line, col) = line_col(self.src, pos);
        TemplateError::Exec {
            line,
            col,
            node: node.to_string(),
            msg: msg.into(),
        }
    }

    pub(super) fn lookup(&self, name: &str) -> Option<&Val> {
        if name == "$" {
            return Some(self.root);
        }
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    pub(super) fn set_var(&mut self, name: &str, v: Val) -> bool {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                true
            }
            None => false,
        }
    }

    pub(super) fn walk(&mut self, dot: &Val, nodes: &[Node]) -> EResult<Flow> {
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

    pub(super) fn if_with(&mut self, dot: &Val, c: &Control, with: bool) -> EResult<Flow> {
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

    pub(super) fn range(&mut self, dot: &Val, c: &Control) -> EResult<Flow> {
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
    pub(super) fn iteration(&mut self, c: &Control, key: Value, elem: Value) -> EResult<bool> {
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

    pub(super) fn run_cmds(&mut self, dot: &Val, p: &Pipe) -> EResult<Val> {
        let mut fin: Option<Val> = None;
        for cmd in &p.cmds {
            fin = Some(self.cmd(dot, cmd, fin)?);
        }
        Ok(fin.unwrap_or(Val::NoValue))
    }

    pub(super) fn pipe(&mut self, dot: &Val, p: &Pipe) -> EResult<Val> {
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

    pub(super) fn cmd(&mut self, dot: &Val, cmd: &Cmd, fin: Option<Val>) -> EResult<Val> {
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

    pub(super) fn field_expr(&mut self, dot: &Val, e: &Expr, has_args: bool) -> EResult<Val> {
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

    pub(super) fn arg(&mut self, dot: &Val, e: &Expr) -> EResult<Val> {
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

    pub(super) fn call(
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
pub(super) fn eval_fields(
    recv: Option<&Value>,
    names: &[String],
    has_args: bool,
) -> Result<Val, String> {
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
