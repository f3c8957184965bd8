//! The Python exception tree, and the one place core errors become Python ones.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError};
use pyo3::prelude::*;
use pyo3_arrow::error::PyArrowError;
use tokenmill_core::TokenmillError;

create_exception!(
    tokenmill,
    TokenmillError_,
    PyException,
    "Base of every error tokenmill raises on purpose."
);
create_exception!(
    tokenmill,
    SchemaError,
    TokenmillError_,
    "A column is missing or has the wrong type."
);
create_exception!(
    tokenmill,
    ShardError,
    TokenmillError_,
    "A shard file cannot be read: truncated, corrupt, empty, or not Parquet/Arrow."
);
create_exception!(
    tokenmill,
    DataError,
    TokenmillError_,
    "A row holds a value the stage refuses; the exception's `row` names it."
);
create_exception!(
    tokenmill,
    ConfigError,
    TokenmillError_,
    "A parameter or option is outside its domain."
);
create_exception!(
    tokenmill,
    TokenizerError,
    ConfigError,
    "A tokenizer file does not parse, or lacks a token the stage needs."
);
create_exception!(
    tokenmill,
    InternalError,
    TokenmillError_,
    "A bug in tokenmill; please report it with the command that raised it."
);

/// What every binding returns on failure: a core error, or a Python one
/// already raised on the way (argument conversion, pyarrow).
pub enum BindingError {
    Core(TokenmillError),
    Python(PyErr),
}

pub type BindingResult<T> = Result<T, BindingError>;

impl From<TokenmillError> for BindingError {
    fn from(err: TokenmillError) -> Self {
        Self::Core(err)
    }
}

impl From<PyErr> for BindingError {
    fn from(err: PyErr) -> Self {
        Self::Python(err)
    }
}

impl From<PyArrowError> for BindingError {
    fn from(err: PyArrowError) -> Self {
        Self::Python(err.into())
    }
}

impl From<BindingError> for PyErr {
    fn from(err: BindingError) -> Self {
        let core = match err {
            BindingError::Python(err) => return err,
            BindingError::Core(core) => core,
        };
        let message = core.to_string();
        let row = match &core {
            TokenmillError::Data { row, .. } => Some(*row),
            _ => None,
        };
        let (problem, fix) = match &core {
            TokenmillError::Schema { problem, fix, .. }
            | TokenmillError::Data { problem, fix, .. }
            | TokenmillError::Config { problem, fix }
            | TokenmillError::Tokenizer { problem, fix } => (problem.clone(), fix.clone()),
            _ => (message.clone(), String::new()),
        };
        let err = match core {
            TokenmillError::Schema { .. } => SchemaError::new_err(message),
            TokenmillError::Config { .. } => ConfigError::new_err(message),
            TokenmillError::Tokenizer { .. } => TokenizerError::new_err(message),
            TokenmillError::Arrow(_) => ShardError::new_err(message),
            TokenmillError::Data { .. } => DataError::new_err(message),
            TokenmillError::Io(io) => return PyOSError::new_err(io.to_string()),
        };
        // The stage runner rewrites the message with the file name and the
        // absolute row, so it needs the parts. Setting attributes on a fresh
        // exception cannot fail; if it did, the message still says it all.
        Python::attach(|py| {
            let value = err.value(py);
            let _ = value.setattr("row", row);
            let _ = value.setattr("problem", problem);
            let _ = value.setattr("fix", fix);
        });
        err
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("TokenmillError", py.get_type::<TokenmillError_>())?;
    module.add("SchemaError", py.get_type::<SchemaError>())?;
    module.add("ShardError", py.get_type::<ShardError>())?;
    module.add("DataError", py.get_type::<DataError>())?;
    module.add("ConfigError", py.get_type::<ConfigError>())?;
    module.add("TokenizerError", py.get_type::<TokenizerError>())?;
    module.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
