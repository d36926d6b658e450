//! Placement constraints (`node.labels.zone==b`), parsed once and matched against
//! nodes. The set of attributes is Swarm's.

use super::NodeInfo;
use std::fmt;

/// What a constraint looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    NodeId,
    NodeHostname,
    NodeRole,
    NodeLabel(String),
    EngineLabel(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub attribute: Attribute,
    pub equal: bool,
    pub value: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConstraintError {
    #[error("constraint {0:?}: expected ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE")]
    Syntax(String),
    #[error("constraint {0:?}: unknown attribute (want node.id, node.hostname, node.role, node.labels.KEY or engine.labels.KEY)")]
    Attribute(String),
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Self, ConstraintError> {
        let (lhs, rhs, equal) = if let Some((l, r)) = s.split_once("==") {
            (l, r, true)
        } else if let Some((l, r)) = s.split_once("!=") {
            (l, r, false)
        } else {
            return Err(ConstraintError::Syntax(s.into()));
        };
        let (lhs, value) = (lhs.trim(), rhs.trim());
        if lhs.is_empty() || value.is_empty() {
            return Err(ConstraintError::Syntax(s.into()));
        }
        let attribute = match lhs {
            "node.id" => Attribute::NodeId,
            "node.hostname" => Attribute::NodeHostname,
            "node.role" => Attribute::NodeRole,
            _ => {
                if let Some(k) = lhs.strip_prefix("node.labels.").filter(|k| !k.is_empty()) {
                    Attribute::NodeLabel(k.into())
                } else if let Some(k) = lhs.strip_prefix("engine.labels.").filter(|k| !k.is_empty())
                {
                    Attribute::EngineLabel(k.into())
                } else {
                    return Err(ConstraintError::Attribute(s.into()));
                }
            }
        };
        Ok(Constraint {
            attribute,
            equal,
            value: value.into(),
        })
    }

    /// Whether `node` satisfies the constraint. A missing label never equals a value
    /// (and so always satisfies `!=`), as in Swarm. Values compare case-insensitively
    /// for role and hostname.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        let actual: Option<&str> = match &self.attribute {
            Attribute::NodeId => Some(&node.id),
            Attribute::NodeHostname => Some(&node.hostname),
            Attribute::NodeRole => Some(node.role.as_str()),
            Attribute::NodeLabel(k) => node.labels.get(k).map(String::as_str),
            Attribute::EngineLabel(k) => node.engine_labels.get(k).map(String::as_str),
        };
        let eq = match (&self.attribute, actual) {
            (_, None) => false,
            (Attribute::NodeRole | Attribute::NodeHostname, Some(a)) => {
                a.eq_ignore_ascii_case(&self.value)
            }
            (_, Some(a)) => a == self.value,
        };
        eq == self.equal
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lhs = match &self.attribute {
            Attribute::NodeId => "node.id".to_string(),
            Attribute::NodeHostname => "node.hostname".to_string(),
            Attribute::NodeRole => "node.role".to_string(),
            Attribute::NodeLabel(k) => format!("node.labels.{k}"),
            Attribute::EngineLabel(k) => format!("engine.labels.{k}"),
        };
        write!(
            f,
            "{lhs}{}{}",
            if self.equal { "==" } else { "!=" },
            self.value
        )
    }
}
