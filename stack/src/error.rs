//! Errors and warnings. Every problem in a stack file is reported against the file,
//! line and column of the node at fault and the dotted field path, so a user can fix
//! it without guessing which of several `-c` files or which service is meant.

use std::fmt;
use std::path::PathBuf;

/// Where a node starts: an index into the loaded file list, 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub file: usize,
    pub line: usize,
    pub col: usize,
}

/// A position resolved to a file name, as shown to users.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// Why a stack could not be loaded. Nothing is returned on error: a bad file never
/// partially loads.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// No `-c` file was given.
    #[error("no stack file given (use -c FILE)")]
    NoFiles,
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is bigger than [`crate::MAX_FILE_SIZE`].
    #[error("{}: file is {size} bytes, larger than the {limit}-byte limit for stack files", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// YAML that does not parse, or hits a cap (alias expansion, nesting).
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },
    /// A field whose value is wrong, unknown or inconsistent with others.
    #[error("{location}: {field}: {message}")]
    Invalid {
        location: Location,
        field: String,
        message: String,
    },
}

impl StackError {
    /// The location at fault, when the error concerns a place in a file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            StackError::Syntax { location, .. } | StackError::Invalid { location, .. } => {
                Some(location)
            }
            _ => None,
        }
    }
}

/// Something in the file that was accepted but will not be honoured (for example
/// `build:`), or a variable that was not set. One warning per key, never silent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub location: Location,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.field, self.message)
    }
}

/// The files being loaded, so a [`Pos`] can be turned into a [`Location`], and the
/// warnings gathered so far.
#[derive(Debug, Default)]
pub(crate) struct Diag {
    pub files: Vec<PathBuf>,
    pub warnings: Vec<Warning>,
}

impl Diag {
    pub fn location(&self, pos: Pos) -> Location {
        Location {
            file: self.files.get(pos.file).cloned().unwrap_or_default(),
            line: pos.line,
            col: pos.col,
        }
    }

    pub fn invalid(&self, pos: Pos, field: &str, message: impl Into<String>) -> StackError {
        StackError::Invalid {
            location: self.location(pos),
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn syntax(&self, pos: Pos, message: impl Into<String>) -> StackError {
        StackError::Syntax {
            location: self.location(pos),
            message: message.into(),
        }
    }

    pub fn warn(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        let w = Warning {
            location: self.location(pos),
            field: field.to_string(),
            message: message.into(),
        };
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, StackError>;
