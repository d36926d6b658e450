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

use crate::error::{Diag, Pos, Result};
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
    },
    Map {
        entries: Vec<(Key, Node)>,
        merges: Vec<Node>,
        key: Option<Key>,
        pos: Pos,
        anchor: usize,
    },
}

struct Builder<'d> {
    diag: &'d Diag,
    file: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    root: Option<Node>,
}

/// Parses one YAML document into a tree. An empty document yields `None`.
pub(crate) fn parse(text: &str, file: usize, diag: &Diag) -> Result<Option<Node>> {
    let mut b = Builder {
        diag,
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
    };
    let mut documents = 0;
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| {
            let m = e.marker();
            diag.syntax(
                Pos {
                    file,
                    line: m.line(),
                    col: m.col() + 1,
                },
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        let pos = b.pos(&span);
        match ev {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(diag.syntax(pos, "a stack file must hold a single YAML document"));
                }
            }
            Event::Alias(id) => {
                let Some(size) = b.anchors.get(&id).map(|(_, size)| *size) else {
                    return Err(diag.syntax(pos, "alias refers to an unknown anchor"));
                };
                // Check the budget before copying: a YAML bomb fails here, unallocated.
                b.budget(size, pos)?;
                let node = b
                    .anchors
                    .get(&id)
                    .map(|(n, _)| n.clone())
                    .unwrap_or(Node::new(Value::Null, pos));
                b.push(node)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                b.budget(1, pos)?;
                let mut plain = style == ScalarStyle::Plain;
                if let Some(tag) = tag {
                    if tag.is_yaml_core_schema() && tag.suffix == "str" {
                        plain = false;
                    } else if !tag.is_yaml_core_schema() {
                        return Err(diag.syntax(
                            pos,
                            format!("unsupported YAML tag {}{}", tag.handle, tag.suffix),
                        ));
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
                b.anchor(anchor, &node);
                b.push(node)?;
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if let Some(tag) = tag {
                    if !tag.is_yaml_core_schema() {
                        return Err(diag.syntax(
                            pos,
                            format!("unsupported YAML tag {}{}", tag.handle, tag.suffix),
                        ));
                    }
                }
                b.budget(1, pos)?;
                if b.stack.len() >= MAX_DEPTH {
                    return Err(diag.syntax(pos, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                b.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        pos,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        entries: Vec::new(),
                        merges: Vec::new(),
                        key: None,
                        pos,
                        anchor,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = b
                    .stack
                    .pop()
                    .ok_or_else(|| diag.syntax(pos, "unbalanced YAML events"))?;
                let (node, anchor) = match frame {
                    Frame::Seq { items, pos, anchor } => (
                        Node {
                            value: Value::Seq(items),
                            pos,
                        },
                        anchor,
                    ),
                    Frame::Map {
                        entries,
                        merges,
                        pos,
                        anchor,
                        ..
                    } => (b.finish_map(entries, merges, pos)?, anchor),
                };
                b.anchor(anchor, &node);
                b.push(node)?;
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

    fn anchor(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), node.count()));
        }
    }

    fn push(&mut self, node: Node) -> Result<()> {
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
                    });
                }
                Some(k) if k.name == "<<" => merges.push(node),
                Some(k) => {
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
