//! What a Delta operation's failure was: the message for the user, the store's own error
//! behind it, and whether a commit lost to another writer.

/// What went wrong, said for the user (the caller names the source or model).
pub type Result<T> = std::result::Result<T, DeltaError>;

/// A Delta operation's failure: the message for the user, and the store's own error when
/// the store failed, so that callers can tell why by its type (`std::error::Error::source`).
#[derive(Debug)]
pub struct DeltaError {
    message: String,
    store: Option<object_store::Error>,
}

impl std::fmt::Display for DeltaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeltaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.store
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl DeltaError {
    pub(crate) fn store(e: object_store::Error) -> Self {
        DeltaError {
            message: e.to_string(),
            store: Some(e),
        }
    }

    /// The same failure, its message after `context: `.
    pub fn prefixed(self, context: &str) -> Self {
        DeltaError {
            message: format!("{context}: {}", self.message),
            store: self.store,
        }
    }
}

impl From<String> for DeltaError {
    fn from(message: String) -> Self {
        DeltaError {
            message,
            store: None,
        }
    }
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// Another writer committed to the table first: the version this commit was to take
    /// exists, or what it changed conflicts with this commit.
    Conflict(String),
    /// Anything else, the store's own error kept (a log the credentials may not write).
    Failed(DeltaError),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Conflict(m) => f.write_str(m),
            CommitError::Failed(e) => e.fmt(f),
        }
    }
}

impl From<String> for CommitError {
    fn from(message: String) -> Self {
        CommitError::Failed(DeltaError::from(message))
    }
}

impl From<DeltaError> for CommitError {
    fn from(e: DeltaError) -> Self {
        CommitError::Failed(e)
    }
}

pub(crate) fn commit_error(e: deltalake::DeltaTableError) -> CommitError {
    use deltalake::kernel::transaction::TransactionError;
    use deltalake::DeltaTableError;
    let conflict = matches!(
        &e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::VersionAlreadyExists(_)
                    | TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    );
    match conflict {
        true => CommitError::Conflict(describe(e).to_string()),
        false => CommitError::Failed(describe(e)),
    }
}

/// Delta's errors carry their own type names; keep the message, and the store's error.
pub(crate) fn describe(e: deltalake::DeltaTableError) -> DeltaError {
    match e {
        deltalake::DeltaTableError::ObjectStore { source } => DeltaError::store(source),
        other => DeltaError::from(other.to_string()),
    }
}
