//! How every binding runs real work: without the GIL, on a fork-safe pool,
//! with panics turned into exceptions.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, ListArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTypeMethods;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyArray;
use rayon::{ThreadPool, ThreadPoolBuilder};
use tokenmill_core::TokenmillError;

use crate::error::{BindingError, BindingResult, InternalError};

/// The pool of the process that built it. A child forked by a PyTorch
/// DataLoader inherits the parent's pool object but none of its threads, so
/// work sent there would wait forever; the child builds its own instead.
struct OwnedPool {
    pid: u32,
    pool: ThreadPool,
}

static POOL: AtomicPtr<OwnedPool> = AtomicPtr::new(std::ptr::null_mut());
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The most worker threads a pool starts, as `tokenmill._threads.MAX_THREADS`
/// (which refuses more from Python): every thread reserves a stack, and a
/// hundred thousand of them stall the machine.
const MAX_THREADS: usize = 1024;

fn configured_threads() -> usize {
    let requested = REQUESTED_THREADS.load(Ordering::Relaxed);
    if requested > 0 {
        return requested.min(MAX_THREADS);
    }
    ["TOKENMILL_NUM_THREADS", "RAYON_NUM_THREADS"]
        .iter()
        .find_map(|var| {
            let threads = std::env::var(var)
                .ok()?
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)?;
            if threads > MAX_THREADS {
                eprintln!(
                    "tokenmill: {var}={threads} is above {MAX_THREADS} worker threads; \
                     using {MAX_THREADS}"
                );
            }
            Some(threads.min(MAX_THREADS))
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(MAX_THREADS)
}

fn pool() -> &'static ThreadPool {
    let pid = std::process::id();
    let current = POOL.load(Ordering::Acquire);
    // SAFETY: non-null pointers in POOL come from Box::leak below and are never freed.
    if let Some(owned) = unsafe { current.as_ref() } {
        if owned.pid == pid {
            return &owned.pool;
        }
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(configured_threads())
        .thread_name(|i| format!("tokenmill-{i}"))
        .build()
        .expect("the OS refused to start worker threads");
    // Pools are built once per process (and again after set_num_threads),
    // so leaking the replaced one costs a few idle threads at most; freeing it
    // could race with a thread still reading it.
    let fresh: &'static OwnedPool = Box::leak(Box::new(OwnedPool { pid, pool }));
    match POOL.compare_exchange(
        current,
        (fresh as *const OwnedPool).cast_mut(),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => &fresh.pool,
        // SAFETY: as above.
        Err(winner) => unsafe { &(*winner).pool },
    }
}

/// Sets the worker threads of later calls; 0 restores the default
/// (`TOKENMILL_NUM_THREADS`, `RAYON_NUM_THREADS`, else every core).
pub fn set_num_threads(threads: usize) {
    REQUESTED_THREADS.store(threads, Ordering::Relaxed);
    POOL.store(std::ptr::null_mut(), Ordering::Release);
}

pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Runs `work` with the GIL released on tokenmill's pool. A panic becomes
/// `tokenmill.InternalError` instead of crossing into Python.
pub fn detach<T, F>(py: Python<'_>, work: F) -> BindingResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, BindingError> + Send,
{
    py.detach(|| guarded(|| pool().install(work)))
}

/// As [`detach`], on the calling thread: for work too small to split, where
/// handing it to a pool thread and waking it would cost more than the work
/// (a collator's batch takes about 100 µs).
pub fn detach_inline<T, F>(py: Python<'_>, work: F) -> BindingResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, BindingError> + Send,
{
    py.detach(|| guarded(work))
}

fn guarded<T>(work: impl FnOnce() -> Result<T, BindingError>) -> BindingResult<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(BindingError::Python(InternalError::new_err(format!(
                "internal error: {what}; please report this with the command that raised it"
            ))))
        }
    }
}

/// The Arrow array a binding was handed for `column`: a pyarrow Array (or
/// anything with `__arrow_c_array__`), or a ChunkedArray (anything with
/// `__arrow_c_stream__`), whose chunks are joined into one array.
///
/// # Errors
///
/// [`TokenmillError::Schema`] for a value that is not Arrow data (a list,
/// a string, a numpy array), or chunks that do not join.
pub fn arrow_input(value: &Bound<'_, PyAny>, column: &str) -> BindingResult<ArrayRef> {
    let input = value.extract::<AnyArray>().map_err(|err| {
        let found = value
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        TokenmillError::schema(
            column,
            format!("expected a pyarrow Array or ChunkedArray, found {found} ({err})"),
            "pass the column as Arrow data, e.g. pyarrow.array(values) or table.column(name)",
        )
    })?;
    let stream = match input {
        AnyArray::Array(array) => return Ok(array.into_inner().0),
        stream @ AnyArray::Stream(_) => stream,
    };
    let (chunks, field) = stream.into_chunked_array()?.into_inner();
    Ok(match chunks.as_slice() {
        [] => arrow_array::new_empty_array(field.data_type()),
        [one] => one.clone(),
        many => {
            let parts: Vec<&dyn Array> = many.iter().map(AsRef::as_ref).collect();
            arrow_select::concat::concat(&parts).map_err(|err| {
                TokenmillError::schema(
                    column,
                    format!("the chunks of the column do not join into one array: {err}"),
                    "pass a smaller batch, or a large_string / large_list column",
                )
            })?
        }
    })
}

/// Hands an array to pyarrow through the Arrow C data interface, without a copy.
pub fn to_pyarrow(py: Python<'_>, array: ArrayRef) -> PyResult<Bound<'_, PyAny>> {
    let exported = Bound::new(py, PyArray::from_array_ref(array))?;
    py.import(intern!(py, "pyarrow"))?
        .getattr(intern!(py, "array"))?
        .call1((exported,))
}

/// A non-null `list<item>` array of `values` cut at `offsets`.
pub fn list_of<T: arrow_array::ArrowPrimitiveType>(
    values: Vec<T::Native>,
    offsets: &[usize],
    item: DataType,
) -> ArrayRef {
    let field = Arc::new(Field::new("item", item, false));
    let values = arrow_array::PrimitiveArray::<T>::new(ScalarBuffer::from(values), None);
    let offsets = OffsetBuffer::<i32>::from_lengths(offsets.windows(2).map(|w| w[1] - w[0]));
    Arc::new(ListArray::new(field, offsets, Arc::new(values), None))
}
