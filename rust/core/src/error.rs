//! The one error type of the core. Every fallible kernel returns [`Result`];
//! the Python bindings map each variant once onto a typed exception.

use arrow_schema::ArrowError;
use thiserror::Error;

/// Everything that can go wrong inside a tokenmill kernel.
///
/// Each variant carries what a user needs to act: the column or row at fault
/// and the fix. The caller that knows the file name (the stage runner) adds it.
#[derive(Debug, Error)]
pub enum TokenmillError {
    /// A column is missing or has a type the kernel cannot read.
    #[error("column '{column}': {problem}; {fix}")]
    Schema {
        column: String,
        problem: String,
        fix: String,
    },
    /// One row holds a value the kernel refuses (not UTF-8, id out of range...).
    #[error("row {row}: {problem}; {fix}")]
    Data {
        row: usize,
        problem: String,
        fix: String,
    },
    /// A parameter is outside its domain.
    #[error("{problem}; {fix}")]
    Config { problem: String, fix: String },
    /// A tokenizer file could not be loaded, or lacks a token the stage needs.
    #[error("tokenizer: {problem}; {fix}")]
    Tokenizer { problem: String, fix: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

impl TokenmillError {
    pub fn schema(column: &str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Schema {
            column: column.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn data(row: usize, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Data {
            row,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn config(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Config {
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn tokenizer(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Tokenizer {
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// Shifts the row of a [`TokenmillError::Data`] by `offset`, for kernels
    /// that ran on a slice and report rows relative to it.
    #[must_use]
    pub fn offset_row(self, offset: usize) -> Self {
        match self {
            Self::Data { row, problem, fix } => Self::Data {
                row: row + offset,
                problem,
                fix,
            },
            other => other,
        }
    }
}

pub type Result<T, E = TokenmillError> = std::result::Result<T, E>;

/// An empty vector with room for `len` values, for sizes a caller asks for
/// rather than sizes of data already in memory: a size no memory can hold
/// becomes a clear error instead of an allocation failure, which aborts.
///
/// # Errors
///
/// [`TokenmillError::Config`] when `len` values of `T` do not fit in memory.
pub fn reserve<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| {
        TokenmillError::config(
            format!("{len} {what} do not fit in memory"),
            format!("ask for fewer {what}"),
        )
    })?;
    Ok(values)
}
