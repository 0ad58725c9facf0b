//! The core's own errors. The D-Bus adapter maps each to its wire error
//! (`org.hyperhive.Hive1.Error.<Variant>`, see `api::Error`); callers inside the core
//! branch on the variant (a missing spec is not a broken one), never on message text.
//! Every message names what it is about: the agent, unit, approval or path.

/// What a core operation could not do, and why, in one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: nothing was touched.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NoSuchAgent(String),
    #[error("{0}")]
    NoSuchApproval(String),
    /// The approval was decided already (or failed); the second decision changed nothing.
    #[error("{0}")]
    AlreadyDecided(String),
    /// The operation was attempted and failed; the message says where.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// Keeps the whole context chain on one line ("agent a: creating unit …: …").
    pub fn failed(err: anyhow::Error) -> Self {
        Self::Failed(format!("{err:#}"))
    }
}

/// A refused spec is bad input: the admin is shown its one line.
impl From<crate::spec::SpecError> for Error {
    fn from(e: crate::spec::SpecError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}
