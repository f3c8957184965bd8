//! Python values to Rust ones and back, written once per type.
//!
//! An option that Python spells as a string (`"span-poisson"`, `"bfd"`) is
//! an enum here. [`Wrap`] reads it by name wherever a binding takes it, and
//! writes it back by the same name wherever one exports it, from the one
//! table of names its [`Named`] impl holds: a new spelling is one line, and
//! every binding refuses an unknown one with the same [`ConfigError`].
//!
//! [`ConfigError`]: crate::error::ConfigError

use std::convert::Infallible;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::Borrowed;
use tokenmill_core::corrupt::{MaskLength, PrefixLayout};
use tokenmill_core::TokenmillError;

use crate::error::{BindingError, BindingResult};

/// A Rust value crossing into or out of Python by a conversion of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrap<T>(pub T);

/// An enum Python names with strings.
pub trait Named: Copy + PartialEq + 'static {
    /// What a value is, for errors: "mask length".
    const WHAT: &'static str;
    /// How a user sets it, for the fix: "--mask-length".
    const FLAG: &'static str;
    /// Every value under its one name, in the order errors list them.
    const NAMES: &'static [(&'static str, Self)];

    /// The value's name, as Python spells it.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, value)| *value == self)
            .map(|(name, _)| *name)
            .expect("every value is in NAMES")
    }

    /// # Errors
    ///
    /// [`TokenmillError::Config`] naming the accepted names when `name` is none of them.
    fn from_name(name: &str) -> Result<Self, TokenmillError> {
        if let Some((_, value)) = Self::NAMES.iter().find(|(n, _)| *n == name) {
            return Ok(*value);
        }
        let names = one_of(Self::NAMES.iter().map(|(n, _)| *n));
        Err(TokenmillError::config(
            format!("{} '{name}' is not {names}", Self::WHAT),
            format!("pass {} {names}", Self::FLAG),
        ))
    }
}

/// "a", "a or b", "a, b or c".
fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

impl<'a, 'py, T: Named> FromPyObject<'a, 'py> for Wrap<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let name = obj.cast::<PyString>().map_err(|_| {
            let names = one_of(T::NAMES.iter().map(|(n, _)| *n));
            BindingError::from(TokenmillError::config(
                format!("{} must be a string, not {}", T::WHAT, type_name(&obj)),
                format!("pass {} {names}", T::FLAG),
            ))
        })?;
        let name = name.to_cow()?;
        Ok(Self(T::from_name(&name).map_err(BindingError::from)?))
    }
}

fn type_name(obj: &Borrowed<'_, '_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

impl<'py, T: Named> IntoPyObject<'py> for Wrap<T> {
    type Target = PyString;
    type Output = Bound<'py, PyString>;
    type Error = Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyString::intern(py, self.0.name()).clone())
    }
}

impl Named for MaskLength {
    const WHAT: &'static str = "mask length";
    const FLAG: &'static str = "--mask-length";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("subword", Self::Subword),
        ("word", Self::Word),
        ("span-poisson", Self::SpanPoisson),
    ];
}

impl Named for PrefixLayout {
    const WHAT: &'static str = "layout";
    const FLAG: &'static str = "--layout";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("decoder", Self::Decoder),
        ("encoder-decoder", Self::EncoderDecoder),
    ];
}

/// One option of a kernel's options struct `O`, under its Python name: how
/// a keyword argument sets it and how its value reads back (the default,
/// when read from `O::default()`). A table of knobs is a binding's whole
/// knowledge of a mode's options; [`knob!`] writes each entry in one line.
pub struct Knob<O> {
    pub name: &'static str,
    pub get: for<'py> fn(&O, Python<'py>) -> PyResult<Bound<'py, PyAny>>,
    pub set: fn(&mut O, &Bound<'_, PyAny>) -> PyResult<()>,
}

/// A [`Knob`] for a field read and written as it is (`"name" => field`),
/// through [`Wrap`] (`"name" => field as Wrap`), or through code of its own
/// (`"name" => |o| value, |o, v: T| assignment`).
macro_rules! knob {
    ($name:literal => $field:ident) => {
        $crate::conversion::Knob {
            name: $name,
            get: |o, py| pyo3::IntoPyObjectExt::into_bound_py_any(o.$field.clone(), py),
            set: |o, value| {
                o.$field = $crate::conversion::extract_option(value, $name)?;
                Ok(())
            },
        }
    };
    ($name:literal => $field:ident as Wrap) => {
        $crate::conversion::Knob {
            name: $name,
            get: |o, py| {
                pyo3::IntoPyObjectExt::into_bound_py_any($crate::conversion::Wrap(o.$field), py)
            },
            set: |o, value| {
                let $crate::conversion::Wrap(v) = $crate::conversion::extract_option(value, $name)?;
                o.$field = v;
                Ok(())
            },
        }
    };
    ($name:literal => |$o:ident| $get:expr, |$o2:ident, $v:ident: $t:ty| $set:expr) => {
        $crate::conversion::Knob {
            name: $name,
            get: |$o, py| pyo3::IntoPyObjectExt::into_bound_py_any($get, py),
            set: |$o2, value| {
                let $v: $t = $crate::conversion::extract_option(value, $name)?;
                $set;
                Ok(())
            },
        }
    };
}
pub(crate) use knob;

/// A keyword option's value, a type error naming the option as PyO3 names
/// an argument.
pub fn extract_option<'py, T>(value: &Bound<'py, PyAny>, name: &str) -> PyResult<T>
where
    T: FromPyObjectOwned<'py>,
{
    value.extract::<T>().map_err(|err| {
        let err: PyErr = err.into();
        let py = value.py();
        if err.is_instance_of::<PyTypeError>(py) {
            PyTypeError::new_err(format!("argument '{name}': {}", err.value(py)))
        } else {
            err
        }
    })
}

/// `options` with the keyword arguments `given` applied in the order of
/// `knobs` (so a knob may depend on one before it).
///
/// # Errors
///
/// A [`TokenmillError::Config`] naming the known options for a keyword
/// `knobs` lacks; the knob's error for a value it refuses.
pub fn apply_knobs<O>(
    what: &str,
    mut options: O,
    knobs: &[Knob<O>],
    given: Option<&Bound<'_, PyDict>>,
) -> BindingResult<O> {
    let Some(given) = given else {
        return Ok(options);
    };
    for key in given.keys() {
        let key = key.extract::<String>()?;
        if !knobs.iter().any(|k| k.name == key) {
            let names = one_of(knobs.iter().map(|k| k.name));
            let fix = if knobs.is_empty() {
                format!("{what} takes no options")
            } else {
                format!("pass only {names}")
            };
            return Err(
                TokenmillError::config(format!("{what} has no option '{key}'"), fix).into(),
            );
        }
    }
    for knob in knobs {
        if let Some(value) = given.get_item(knob.name)? {
            (knob.set)(&mut options, &value)?;
        }
    }
    Ok(options)
}

/// Every knob's value in `options`, by name.
pub fn knob_values<'py, O>(
    py: Python<'py>,
    options: &O,
    knobs: &[Knob<O>],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for knob in knobs {
        dict.set_item(knob.name, (knob.get)(options, py)?)?;
    }
    Ok(dict)
}

/// The kind of one UL2 denoiser, as `Corruptor.ul2(denoisers=...)` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenoiserKind {
    Span,
    Prefix,
}

impl Named for DenoiserKind {
    const WHAT: &'static str = "denoiser kind";
    const FLAG: &'static str = "each denoiser the kind";
    const NAMES: &'static [(&'static str, Self)] =
        &[("span", Self::Span), ("prefix", Self::Prefix)];
}

/// How MinHash cuts a text into shingles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShingleKind {
    Word,
    Char,
}

impl Named for ShingleKind {
    const WHAT: &'static str = "shingle kind";
    const FLAG: &'static str = "--shingle";
    const NAMES: &'static [(&'static str, Self)] = &[("word", Self::Word), ("char", Self::Char)];
}

/// How the negative miner ranks the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyKind {
    Random,
    Bm25,
    Embedding,
}

impl Named for StrategyKind {
    const WHAT: &'static str = "strategy";
    const FLAG: &'static str = "--strategy";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("random", Self::Random),
        ("bm25", Self::Bm25),
        ("embedding", Self::Embedding),
    ];
}

/// How the packer fills rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackKind {
    Bfd,
    Concat,
}

impl Named for PackKind {
    const WHAT: &'static str = "strategy";
    const FLAG: &'static str = "--strategy";
    const NAMES: &'static [(&'static str, Self)] = &[("bfd", Self::Bfd), ("concat", Self::Concat)];
}

/// How `make_pairs` cuts a query and a positive out of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    Crop,
    Ict,
}

impl Named for PairKind {
    const WHAT: &'static str = "pair mode";
    const FLAG: &'static str = "--mode";
    const NAMES: &'static [(&'static str, Self)] = &[("crop", Self::Crop), ("ict", Self::Ict)];
}
