//! A positioned YAML tree built from `saphyr-parser` events.
//!
//! We build our own tree rather than use a generic loader because we need, at once:
//! the position of every node (for `file:line:col` errors on semantic problems, not
//! only syntax), merge keys (`<<`), and hard caps that a loader which expands aliases
//! eagerly cannot give: a budget on the nodes materialised (alias expansion included,
//! so a "billion laughs" file fails before it allocates) and a nesting depth.
//!
//! Scalars keep their source text and whether they were plain (unquoted); typing
//! happens later, per field, the way Compose casts values after interpolation.

use crate::error::{Diag, Pos, Result, StackError};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// Most nodes one file may expand to, aliases included.
pub const MAX_NODES: usize = 200_000;
/// Deepest nesting of mappings and sequences.
pub const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Str { text: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Key {
    pub name: String,
    pub pos: Pos,
    /// The Compose merge tag on this key's value (`!reset`, `!override`).
    pub tag: Tag,
}

/// Compose's merge tags: `!reset` drops what earlier files (or an `extends` base)
/// set for the key; `!override` replaces it whole instead of merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Tag {
    #[default]
    None,
    Reset,
    Override,
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Node {
        Node { value, pos }
    }

    pub fn str(text: impl Into<String>, pos: Pos) -> Node {
        Node {
            value: Value::Str {
                text: text.into(),
                plain: false,
            },
            pos,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// A short description for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Str { text, .. } => format!("{text:?}"),
            Value::Seq(_) => "a sequence".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            Value::Seq(s) => s.iter().map(Node::count).sum(),
            Value::Map(m) => m.iter().map(|(_, v)| 1 + v.count()).sum(),
            _ => 0,
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
        tag: Tag,
    },
    Map {
        entries: Vec<(Key, Node)>,
        merges: Vec<Node>,
        key: Option<Key>,
        pos: Pos,
        anchor: usize,
        tag: Tag,
    },
}

struct Builder<'d> {
    diag: &'d Diag,
    /// Whether Compose's `!reset` / `!override` tags are accepted.
    compose_tags: bool,
    /// Tags of anchored nodes, so an alias of a tagged node keeps its tag.
    anchor_tags: HashMap<usize, Tag>,
    file: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    root: Option<Node>,
}

/// Parses one YAML document into a tree. An empty document yields `None`.
pub(crate) fn parse(text: &str, file: usize, diag: &Diag) -> Result<Option<Node>> {
    parse_with(text, file, diag, true)
}

/// Most closing brackets re-indented before a file is given up on (see [`parse_with`]).
const MAX_BRACKET_FIXES: usize = 64;

/// Parses, accepting what Compose's YAML parser (go-yaml) accepts and saphyr does not:
/// a flow collection's closing `]`/`}` on its own line at the indentation of the key
/// that opened it, after quoted items (`test: [\n    "CMD", "x"\n  ]`, common in
/// healthchecks and commands). saphyr reports that bracket as badly indented
/// (saphyr-rs/saphyr#108); the line is then indented like the item above it and the
/// file parsed again. Only that bracket's column changes, never a value.
fn parse_with(text: &str, file: usize, diag: &Diag, compose_tags: bool) -> Result<Option<Node>> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for _ in 0..MAX_BRACKET_FIXES {
        match parse_once(&text, file, diag, compose_tags) {
            Err(Failure::UnindentedBracket(line)) => {
                text = std::borrow::Cow::Owned(indent_closing_bracket(&text, line))
            }
            Err(Failure::Error(e)) => return Err(e),
            Ok(root) => return Ok(root),
        }
    }
    parse_once(&text, file, diag, compose_tags).map_err(|f| match f {
        Failure::Error(e) => e,
        Failure::UnindentedBracket(line) => diag.syntax(
            Pos {
                file,
                line: line + 1,
                col: 1,
            },
            "invalid YAML: invalid indentation",
        ),
    })
}

enum Failure {
    Error(StackError),
    /// saphyr's "invalid indentation" on this (0-based) line, which starts with a
    /// closing bracket.
    UnindentedBracket(usize),
}

impl From<StackError> for Failure {
    fn from(e: StackError) -> Failure {
        Failure::Error(e)
    }
}

/// Whether saphyr's error is the closing bracket case [`parse_with`] repairs.
fn unindented_bracket(text: &str, e: &saphyr_parser::ScanError) -> Option<usize> {
    if e.info() != "invalid indentation" {
        return None;
    }
    let line = e.marker().line().checked_sub(1)?;
    let l = text.lines().nth(line)?;
    let rest = l.trim_start_matches(' ');
    (l.len() - rest.len() == e.marker().col() && (rest.starts_with(']') || rest.starts_with('}')))
        .then_some(line)
}

/// Indents (0-based) line `line` like the nearest content line above it, or by one
/// more space when that one is no deeper.
fn indent_closing_bracket(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let own = lines.get(line).map_or(0, |l| indent(l));
    let above = lines[..line.min(lines.len())]
        .iter()
        .rev()
        .find(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map_or(0, |l| indent(l));
    let pad = if above > own { above - own } else { 1 };
    let mut out = String::with_capacity(text.len() + pad);
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if i == line {
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l);
    }
    out
}

fn parse_once(
    text: &str,
    file: usize,
    diag: &Diag,
    compose_tags: bool,
) -> std::result::Result<Option<Node>, Failure> {
    let mut b = Builder {
        diag,
        compose_tags,
        anchor_tags: HashMap::new(),
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
    };
    let mut documents = 0;
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| {
            if let Some(line) = unindented_bracket(text, &e) {
                return Failure::UnindentedBracket(line);
            }
            let m = e.marker();
            Failure::Error(diag.syntax(
                Pos {
                    file,
                    line: m.line(),
                    col: m.col() + 1,
                },
                format!("invalid YAML: {}", e.info()),
            ))
        })?;
        let pos = b.pos(&span);
        match ev {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(diag
                        .syntax(pos, "a stack file must hold a single YAML document")
                        .into());
                }
            }
            Event::Alias(id) => {
                let Some(size) = b.anchors.get(&id).map(|(_, size)| *size) else {
                    return Err(diag.syntax(pos, "alias refers to an unknown anchor").into());
                };
                // Check the budget before copying: a YAML bomb fails here, unallocated.
                b.budget(size, pos)?;
                let node = b
                    .anchors
                    .get(&id)
                    .map(|(n, _)| n.clone())
                    .unwrap_or(Node::new(Value::Null, pos));
                let tag = b.anchor_tags.get(&id).copied().unwrap_or_default();
                b.push(node, tag)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                b.budget(1, pos)?;
                let mut plain = style == ScalarStyle::Plain;
                let mut ctag = Tag::None;
                if let Some(tag) = tag {
                    if tag.is_yaml_core_schema() && tag.suffix == "str" {
                        plain = false;
                    } else if !tag.is_yaml_core_schema() {
                        ctag = b.compose_tag(&tag.handle, &tag.suffix, pos)?;
                    }
                }
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Str {
                        text: text.into_owned(),
                        plain,
                    }
                };
                let node = Node { value, pos };
                b.anchor(anchor, &node, ctag);
                b.push(node, ctag)?;
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                let mut ctag = Tag::None;
                if let Some(tag) = tag {
                    if !tag.is_yaml_core_schema() {
                        ctag = b.compose_tag(&tag.handle, &tag.suffix, pos)?;
                    }
                }
                b.budget(1, pos)?;
                if b.stack.len() >= MAX_DEPTH {
                    return Err(diag
                        .syntax(pos, format!("nesting deeper than {MAX_DEPTH} levels"))
                        .into());
                }
                b.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        pos,
                        anchor,
                        tag: ctag,
                    }
                } else {
                    Frame::Map {
                        entries: Vec::new(),
                        merges: Vec::new(),
                        key: None,
                        pos,
                        anchor,
                        tag: ctag,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = b
                    .stack
                    .pop()
                    .ok_or_else(|| diag.syntax(pos, "unbalanced YAML events"))?;
                let (node, anchor, tag) = match frame {
                    Frame::Seq {
                        items,
                        pos,
                        anchor,
                        tag,
                    } => (
                        Node {
                            value: Value::Seq(items),
                            pos,
                        },
                        anchor,
                        tag,
                    ),
                    Frame::Map {
                        entries,
                        merges,
                        pos,
                        anchor,
                        tag,
                        ..
                    } => (b.finish_map(entries, merges, pos)?, anchor, tag),
                };
                b.anchor(anchor, &node, tag);
                b.push(node, tag)?;
            }
        }
    }
    Ok(b.root)
}

impl Builder<'_> {
    fn pos(&self, span: &Span) -> Pos {
        Pos {
            file: self.file,
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    fn budget(&mut self, n: usize, pos: Pos) -> Result<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.diag.syntax(
                pos,
                format!("document expands to more than {MAX_NODES} nodes (too many aliases: is this a YAML bomb?)"),
            ));
        }
        Ok(())
    }

    fn anchor(&mut self, anchor: usize, node: &Node, tag: Tag) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), node.count()));
            self.anchor_tags.insert(anchor, tag);
        }
    }

    /// A non-core tag: Compose's merge tags where allowed, otherwise an error.
    fn compose_tag(&self, handle: &str, suffix: &str, pos: Pos) -> Result<Tag> {
        match (self.compose_tags, handle, suffix) {
            (true, "!", "reset") => Ok(Tag::Reset),
            (true, "!", "override") => Ok(Tag::Override),
            _ => Err(self
                .diag
                .syntax(pos, format!("unsupported YAML tag {handle}{suffix}"))),
        }
    }

    fn push(&mut self, node: Node, tag: Tag) -> Result<()> {
        let diag = self.diag;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                merges,
                key,
                ..
            }) => match key.take() {
                None => {
                    let name = match node.value {
                        Value::Str { text, .. } => text,
                        Value::Null => String::new(),
                        _ => return Err(diag.syntax(node.pos, "mapping keys must be scalars")),
                    };
                    *key = Some(Key {
                        name,
                        pos: node.pos,
                        tag: Tag::None,
                    });
                }
                Some(k) if k.name == "<<" => merges.push(node),
                Some(mut k) => {
                    k.tag = tag;
                    if entries.iter().any(|(e, _)| e.name == k.name) {
                        return Err(
                            diag.syntax(k.pos, format!("duplicate key {:?} in mapping", k.name))
                        );
                    }
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }

    /// Applies merge keys: explicit keys win, then earlier merged mappings over later.
    fn finish_map(
        &mut self,
        mut entries: Vec<(Key, Node)>,
        merges: Vec<Node>,
        pos: Pos,
    ) -> Result<Node> {
        for m in merges {
            let sources: Vec<Node> = match m.value {
                Value::Map(_) => vec![m],
                Value::Seq(items) => items,
                _ => {
                    return Err(self.diag.syntax(
                        m.pos,
                        "merge key << expects a mapping or a sequence of mappings",
                    ))
                }
            };
            for src in sources {
                let Value::Map(src_entries) = src.value else {
                    return Err(self.diag.syntax(
                        src.pos,
                        "merge key << expects a mapping or a sequence of mappings",
                    ));
                };
                for (k, v) in src_entries {
                    if !entries.iter().any(|(e, _)| e.name == k.name) {
                        entries.push((k, v));
                    }
                }
            }
        }
        Ok(Node {
            value: Value::Map(entries),
            pos,
        })
    }
}

/// A YAML document read by the same bounded parser as stack files (node budget, depth
/// cap, no custom tags), for other YAML the project reads: agent.yaml, cloud-init files.
/// Keeping one parser means one set of YAML-bomb limits, and positions for every node.
pub struct Document {
    root: Node,
    diag: Diag,
}

/// One step into a document: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl Document {
    /// Parses `text` (read from `path`, named in errors). An empty document is `None`.
    pub fn parse(text: &str, path: &std::path::Path) -> Result<Option<Document>> {
        let diag = Diag {
            files: vec![path.to_path_buf()],
            warnings: Vec::new(),
        };
        let root = parse_with(text, 0, &diag, false)?;
        Ok(root.map(|root| Document { root, diag }))
    }

    /// The document as JSON, plain scalars typed by YAML 1.2's core schema (`true`,
    /// `12`, `1.5`, `0x1f`; quoted scalars stay strings), as serde_yaml typed them.
    pub fn to_json(&self) -> serde_json::Value {
        json_of(&self.root)
    }

    /// Where the node at `path` starts; the deepest existing node on the way when the
    /// path leaves the document.
    pub fn location(&self, path: &[Step]) -> crate::Location {
        let mut node = &self.root;
        for step in path {
            let next = match (step, &node.value) {
                (Step::Key(k), Value::Map(m)) => {
                    m.iter().find(|(key, _)| key.name == *k).map(|(_, v)| v)
                }
                (Step::Index(i), Value::Seq(s)) => s.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        self.diag.location(node.pos)
    }

    /// Where key `name` of the mapping at `path` is written (for "unknown field").
    pub fn key_location(&self, path: &[Step], name: &str) -> Option<crate::Location> {
        let mut node = &self.root;
        for step in path {
            node = match (step, &node.value) {
                (Step::Key(k), Value::Map(m)) => {
                    m.iter().find(|(key, _)| key.name == *k).map(|(_, v)| v)?
                }
                (Step::Index(i), Value::Seq(s)) => s.get(*i)?,
                _ => return None,
            };
        }
        node.as_map()?
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, _)| self.diag.location(k.pos))
    }
}

fn json_of(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Str { text, plain: false } => J::String(text.clone()),
        Value::Str { text, plain: true } => core_schema(text),
        Value::Seq(items) => J::Array(items.iter().map(json_of).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.name.clone(), json_of(v)))
                .collect(),
        ),
    }
}

/// YAML 1.2 core schema resolution of a plain scalar (null was resolved by the parser).
fn core_schema(text: &str) -> serde_json::Value {
    use serde_json::Value as J;
    match text {
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        _ => {}
    }
    let (sign, digits) = match text.strip_prefix('-') {
        Some(d) => (-1i128, d),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let radix = |prefix: &str, radix: u32| {
        digits
            .strip_prefix(prefix)
            .filter(|d| !d.is_empty())
            .and_then(|d| i128::from_str_radix(d, radix).ok())
    };
    let int = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>().ok()
    } else {
        radix("0x", 16).or_else(|| radix("0o", 8))
    };
    if let Some(n) = int.map(|n| n * sign) {
        if let Ok(n) = i64::try_from(n) {
            return J::from(n);
        }
        if let Ok(n) = u64::try_from(n) {
            return J::from(n);
        }
    }
    let float_like = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if float_like {
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return J::Number(n);
        }
    }
    // .inf and .nan have no JSON form; they stay strings, as nothing we read wants them.
    J::String(text.to_string())
}

/// Writes JSON-shaped data as block-style YAML that [`Document::parse`] (and any YAML
/// 1.2 loader) reads back as the same data: strings are left plain only where they
/// cannot be mistaken for another type or for syntax, otherwise written double-quoted
/// (JSON's escapes are valid in YAML's double-quoted style).
pub fn to_yaml_string(v: &serde_json::Value) -> String {
    let mut out = String::new();
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => emit_map(&mut out, m, 0),
        serde_json::Value::Array(a) if !a.is_empty() => emit_seq(&mut out, a, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn inline(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match v {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Number(n) => n.to_string(),
        J::String(s) => scalar(s),
        J::Array(_) => "[]".into(),
        J::Object(_) => "{}".into(),
    }
}

fn is_block(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(m) => !m.is_empty(),
        _ => false,
    }
}

fn emit_map(out: &mut String, m: &serde_json::Map<String, serde_json::Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a mapping inside a sequence follows the "- " on its line.
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&scalar(k));
        out.push(':');
        emit_value(out, v, indent);
    }
}

fn emit_seq(out: &mut String, a: &[serde_json::Value], indent: usize) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => emit_map(out, m, indent + 2),
            serde_json::Value::Array(a) if !a.is_empty() => emit_seq(out, a, indent + 2),
            other => {
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

/// After `key:`: a scalar on the same line, a collection on the lines below.
fn emit_value(out: &mut String, v: &serde_json::Value, indent: usize) {
    if !is_block(v) {
        out.push(' ');
        out.push_str(&inline(v));
        out.push('\n');
        return;
    }
    out.push('\n');
    match v {
        serde_json::Value::Object(m) => emit_map(out, m, indent + 2),
        serde_json::Value::Array(a) => emit_seq(out, a, indent + 2),
        _ => {}
    }
}

/// A string as a YAML scalar: plain when that reads back as the same string.
fn scalar(s: &str) -> String {
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || matches!(c, '/' | '_' | '.' | '$' | '('));
    let chars_ok = s.chars().all(|c| {
        c.is_alphanumeric()
            || matches!(
                c,
                '/' | '_' | '.' | '-' | ':' | '=' | '+' | '@' | '$' | '(' | ')' | ' ' | ','
            )
    });
    let plain = first_ok
        && chars_ok
        && !s.ends_with([':', ' '])
        && !s.contains(": ")
        && !s.contains(" #")
        && matches!(core_schema(s), serde_json::Value::String(_))
        && !matches!(s, "~" | "null" | "Null" | "NULL" | "<<")
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | ".inf" | ".nan"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}
