//! Agent errors, each with a kind that survives the gRPC hop so the CLI can print a
//! clear message and exit with Docker's code.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
    /// The container's process could not run; carries Docker's exit code (125/126/127).
    #[error("{message}")]
    Start { message: String, exit_code: i32 },
    #[error(transparent)]
    Image(#[from] skiff_runtime::image::ImageError),
    #[error("{0}")]
    Internal(String),
}

/// gRPC metadata key carrying the exit code the CLI should use.
pub const EXIT_CODE_KEY: &str = "skiff-exit-code";

/// What kind of failure an error is: each front end maps kinds to its own status codes
/// (gRPC codes in `From<AgentError> for Status`, HTTP codes in the Docker API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    Conflict,
    Invalid,
    /// The object's state forbids the operation ("is not running").
    Precondition,
    /// The container's process could not start (Docker's exit code 125/126/127).
    Start,
    Internal,
}

impl AgentError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AgentError::Internal(e.to_string())
    }

    pub fn kind(&self) -> Kind {
        use skiff_runtime::image::ImageError as I;
        match self {
            AgentError::NotFound(_) | AgentError::Image(I::NotFound(_)) => Kind::NotFound,
            AgentError::Conflict(_) | AgentError::Image(I::Conflict(_)) => Kind::Conflict,
            AgentError::Invalid(_)
            | AgentError::Image(
                I::Reference(_)
                | I::BadReference(_)
                | I::BadArchive(_)
                | I::BadConfig(_)
                | I::BadChange { .. }
                | I::Ambiguous(_),
            ) => Kind::Invalid,
            AgentError::Precondition(_) => Kind::Precondition,
            AgentError::Start { .. } => Kind::Start,
            _ => Kind::Internal,
        }
    }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        AgentError::Internal(e.to_string())
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        let code = match e.kind() {
            Kind::NotFound => Code::NotFound,
            Kind::Conflict => Code::AlreadyExists,
            Kind::Invalid => Code::InvalidArgument,
            Kind::Precondition | Kind::Start => Code::FailedPrecondition,
            Kind::Internal => Code::Internal,
        };
        let mut s = Status::new(code, e.to_string());
        if let AgentError::Start { exit_code, .. } = &e {
            if let Ok(v) = exit_code.to_string().parse() {
                s.metadata_mut().insert(EXIT_CODE_KEY, v);
            }
        }
        s
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
