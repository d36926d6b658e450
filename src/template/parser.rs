//! The syntax tree and the parser that builds it from tokens (Go's `text/template/parse`).

use super::*;

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If(Control),
    Range(Control),
    With(Control),
    Break,
    Continue,
}

#[derive(Debug, Clone)]
pub(super) struct Control {
    pub(super) pipe: Pipe,
    pub(super) list: Vec<Node>,
    pub(super) else_list: Option<Vec<Node>>,
}

#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub(super) pos: usize,
    pub(super) decl: Vec<String>,
    pub(super) is_assign: bool,
    pub(super) cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub(super) pos: usize,
    pub(super) args: Vec<Expr>,
}

#[derive(Debug, Clone)]
pub(super) struct Expr {
    pub(super) pos: usize,
    pub(super) kind: ExprKind,
}

#[derive(Debug, Clone)]
pub(super) enum ExprKind {
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
pub(super) const FUNCS: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "eq", "ne", "lt", "le", "gt", "ge", "print",
    "printf", "println", "html", "urlquery", "json", "join", "split", "title", "lower", "upper",
    "pad", "truncate",
];

pub(super) enum ListEnd {
    End(usize),
    Else(usize),
    Eof,
}

pub(super) struct Parser<'s> {
    pub(super) src: &'s str,
    pub(super) toks: Vec<Token>,
    pub(super) i: usize,
    /// Variables in scope (besides `$`), for undefined-variable checks.
    pub(super) vars: Vec<String>,
    pub(super) range_depth: usize,
    /// Current nesting of control structures and parentheses.
    pub(super) depth: usize,
}

/// Deepest nesting of control structures and parentheses accepted, so that
/// hostile input cannot overflow the stack of the recursive parser/evaluator.
pub(super) const MAX_NESTING: usize = 200;

pub(super) type PResult<T> = Result<T, TemplateError>;

impl Parser<'_> {
    pub(super) fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        parse_err(self.src, pos, msg)
    }

    pub(super) fn unexpected(&self, t: &Token, context: &str) -> TemplateError {
        self.err(
            t.pos,
            format!("unexpected {} in {context}", describe(&t.tok)),
        )
    }

    pub(super) fn next(&mut self) -> Token {
        let t = self.toks.get(self.i).unwrap_or(&EOF_TOKEN).clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    pub(super) fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }

    pub(super) fn peek(&self) -> &Token {
        self.toks.get(self.i).unwrap_or(&EOF_TOKEN)
    }

    pub(super) fn next_non_space(&mut self) -> Token {
        loop {
            let t = self.next();
            if t.tok != Tok::Space {
                return t;
            }
        }
    }

    pub(super) fn peek_non_space(&mut self) -> Token {
        let t = self.next_non_space();
        self.backup();
        t
    }

    pub(super) fn var_defined(&self, name: &str) -> bool {
        name == "$" || self.vars.iter().any(|v| v == name)
    }

    pub(super) fn parse(mut self) -> PResult<Vec<Node>> {
        let (nodes, end) = self.list()?;
        match end {
            ListEnd::Eof => Ok(nodes),
            ListEnd::End(p) => Err(self.err(p, "unexpected {{end}}")),
            ListEnd::Else(p) => Err(self.err(p, "unexpected {{else}}")),
        }
    }

    pub(super) fn expect_right(&mut self, context: &str) -> PResult<()> {
        let t = self.next_non_space();
        if t.tok == Tok::RightDelim {
            Ok(())
        } else {
            Err(self.unexpected(&t, context))
        }
    }

    pub(super) fn list(&mut self) -> PResult<(Vec<Node>, ListEnd)> {
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

    pub(super) fn nest<T>(
        &mut self,
        pos: usize,
        f: impl FnOnce(&mut Self) -> PResult<T>,
    ) -> PResult<T> {
        if self.depth >= MAX_NESTING {
            return Err(self.err(pos, "template nested too deeply"));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    pub(super) fn control(&mut self, kw: Kw, pos: usize) -> PResult<Node> {
        self.nest(pos, |p| p.control_inner(kw, pos))
    }

    pub(super) fn control_inner(&mut self, kw: Kw, pos: usize) -> PResult<Node> {
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
    pub(super) fn pipeline(&mut self, context: &str, paren: bool) -> PResult<Pipe> {
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
    pub(super) fn command(&mut self) -> PResult<(Cmd, bool)> {
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

    pub(super) fn operand(&mut self) -> PResult<Option<Expr>> {
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

    pub(super) fn term(&mut self) -> PResult<Option<Expr>> {
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
