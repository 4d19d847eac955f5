use std::path::PathBuf;

/// What can go wrong opening, appending to, listing, checkpointing or
/// verifying the log. Problems *found in* the log are not errors: they are
/// [`crate::Problem`]s in a [`crate::VerifyReport`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The entry's line would be longer than [`crate::MAX_LINE`].
    #[error("refused: the record would be a {len}-byte line, over the {max}-byte bound")]
    TooLarge { len: usize, max: usize },
    /// The entry cannot be recorded as given (an action that is not a dotted
    /// name, a detail key that looks like a secret, ...).
    #[error("refused: {0}")]
    Invalid(String),
    /// The write did not complete; the file may end in a partial line,
    /// which the next append steps over.
    #[error("appending to {}: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
    #[error("the audit log {} has no record to checkpoint", .0.display())]
    Empty(PathBuf),
    /// A checkpoint key file that cannot be read, created or trusted. Names
    /// the file, never its bytes.
    #[error("checkpoint key {}: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(String),
}

impl AuditError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> AuditError {
        let path = path.into();
        move |source| AuditError::Io { op, path, source }
    }
}
