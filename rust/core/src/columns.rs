//! Read access to the Arrow columns every kernel takes, whatever layout
//! they arrived in: text, token lists (and the builder of new ones), and
//! document ids turned into row keys. Nothing here knows how text becomes
//! tokens, so `tokenize` and every other kernel import from it, never the
//! other way round.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, GenericListArray, LargeListArray, ListArray, OffsetSizeTrait, UInt32Array,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};

use crate::error::{reserve, Result, TokenmillError};
use crate::rng;

/// A column of documents, read as bytes and checked as UTF-8 row by row.
///
/// String layouts are read through their binary twins (a zero-copy cast)
/// because arrays that cross the C data interface are not validated: a
/// Parquet file from another writer can carry invalid UTF-8 in a string
/// column, and handing such bytes on as `&str` would be undefined behaviour.
/// Checking each row as it is read costs far less than tokenizing it.
pub enum TextColumn {
    Binary(arrow_array::BinaryArray),
    LargeBinary(arrow_array::LargeBinaryArray),
    BinaryView(arrow_array::BinaryViewArray),
}

impl TextColumn {
    /// # Errors
    ///
    /// [`TokenmillError::Schema`] when the array is not a string or binary array.
    pub fn try_new(column: &str, array: &dyn Array) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Utf8 => Self::Binary(array.as_string::<i32>().clone().into()),
            DataType::LargeUtf8 => Self::LargeBinary(array.as_string::<i64>().clone().into()),
            DataType::Utf8View => Self::BinaryView(array.as_string_view().clone().to_binary_view()),
            DataType::Binary => Self::Binary(array.as_binary::<i32>().clone()),
            DataType::LargeBinary => Self::LargeBinary(array.as_binary::<i64>().clone()),
            DataType::BinaryView => Self::BinaryView(array.as_binary_view().clone()),
            other => {
                return Err(TokenmillError::schema(
                    column,
                    format!("expected a string column of text, found {other}"),
                    "pass the text column with --text-column, or cast it to string",
                ))
            }
        })
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Binary(a) => a.len(),
            Self::LargeBinary(a) => a.len(),
            Self::BinaryView(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes of row `row`; a null reads as empty.
    pub fn bytes(&self, row: usize) -> &[u8] {
        match self {
            Self::Binary(a) if !a.is_null(row) => a.value(row),
            Self::LargeBinary(a) if !a.is_null(row) => a.value(row),
            Self::BinaryView(a) if !a.is_null(row) => a.value(row),
            _ => b"",
        }
    }

    /// The text of row `row`; a null reads as the empty document.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Data`] when the row is not valid UTF-8.
    pub fn get(&self, row: usize) -> Result<&str> {
        std::str::from_utf8(self.bytes(row)).map_err(|err| {
            TokenmillError::data(
                row,
                format!(
                    "text is not valid UTF-8 (bad byte at offset {})",
                    err.valid_up_to()
                ),
                "re-encode the source as UTF-8 before this stage",
            )
        })
    }
}

/// A column of documents as the contrastive kernels take it: token ids
/// (`list<uint32>` or `large_list<uint32>`) or text, decided once here
/// rather than by each kernel.
pub enum Documents<'a> {
    Tokens {
        ids: &'a [u32],
        offsets: TokenOffsets<'a>,
    },
    Text(TextColumn),
}

impl<'a> Documents<'a> {
    /// Reads `array` as token lists when it is one, else as text.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Schema`] for a column of neither kind (with `fix`
    /// as the advice); [`TokenmillError::Data`] for a null token list or id.
    pub fn try_new(column: &str, array: &'a dyn Array, fix: &str) -> Result<Self> {
        match any_token_lists(column, array) {
            Ok((ids, offsets)) => return Ok(Self::Tokens { ids, offsets }),
            // Not a token column: read it as text below.
            Err(TokenmillError::Schema { .. }) => {}
            Err(other) => return Err(other),
        }
        let texts = TextColumn::try_new(column, array).map_err(|_| {
            TokenmillError::schema(
                column,
                format!(
                    "expected text or list<uint32> token ids, found {}",
                    array.data_type()
                ),
                fix,
            )
        })?;
        Ok(Self::Text(texts))
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Tokens { offsets, .. } => offsets.rows(),
            Self::Text(texts) => texts.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The Arrow type of a token column: `list<item: uint32>`.
pub fn token_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt32, false)))
}

/// Builds a `list<uint32>` array from flat values and per-row lengths.
///
/// # Errors
///
/// [`TokenmillError::Config`] when the values overflow 32-bit list offsets.
pub fn list_of_u32(values: Vec<u32>, lengths: &[usize]) -> Result<ListArray> {
    if values.len() > i32::MAX as usize {
        return Err(TokenmillError::config(
            format!(
                "one batch holds {} tokens, more than a list array can index",
                values.len()
            ),
            "lower --batch-size",
        ));
    }
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths.iter().copied());
    let values = UInt32Array::new(ScalarBuffer::from(values), None);
    Ok(ListArray::try_new(
        Arc::new(Field::new("item", DataType::UInt32, false)),
        offsets,
        Arc::new(values),
        None,
    )?)
}

/// The flat ids and row offsets of a `list<uint32>` token column.
///
/// # Errors
///
/// [`TokenmillError::Schema`] for any other type, [`TokenmillError::Data`]
/// for a null list or a null id.
pub fn token_lists<'a>(column: &str, tokens: &'a dyn Array) -> Result<(&'a [u32], &'a [i32])> {
    let list = tokens
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| token_schema_error(column, tokens))?;
    checked_lists(column, tokens, list)
}

/// Row offsets into a token column's flat ids, from `list` (i32) or
/// `large_list` (i64) arrays: a corpus past 2^31 ids needs the latter.
#[derive(Clone, Copy, Debug)]
pub enum TokenOffsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
}

impl TokenOffsets<'_> {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        match self {
            Self::Small(o) => o.len() - 1,
            Self::Large(o) => o.len() - 1,
        }
    }

    /// Where row `row`'s ids lie in the flat ids.
    #[inline]
    pub fn range(&self, row: usize) -> std::ops::Range<usize> {
        // Offsets of a valid list array are non-negative and ascending.
        match self {
            Self::Small(o) => o[row] as usize..o[row + 1] as usize,
            Self::Large(o) => o[row] as usize..o[row + 1] as usize,
        }
    }
}

/// As [`token_lists`], for `list<uint32>` or `large_list<uint32>`.
///
/// # Errors
///
/// As [`token_lists`].
pub fn any_token_lists<'a>(
    column: &str,
    tokens: &'a dyn Array,
) -> Result<(&'a [u32], TokenOffsets<'a>)> {
    if let Some(list) = tokens.as_any().downcast_ref::<LargeListArray>() {
        let (ids, offsets) = checked_lists(column, tokens, list)?;
        return Ok((ids, TokenOffsets::Large(offsets)));
    }
    let (ids, offsets) = token_lists(column, tokens)?;
    Ok((ids, TokenOffsets::Small(offsets)))
}

fn token_schema_error(column: &str, tokens: &dyn Array) -> TokenmillError {
    TokenmillError::schema(
        column,
        format!(
            "expected list<uint32> token ids, found {}",
            tokens.data_type()
        ),
        "run `tokenmill tokenize` first, or name the token column with --token-column",
    )
}

fn checked_lists<'a, O: OffsetSizeTrait>(
    column: &str,
    tokens: &dyn Array,
    list: &'a GenericListArray<O>,
) -> Result<(&'a [u32], &'a [O])> {
    let values = list
        .values()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| token_schema_error(column, tokens))?;
    let offsets: &[O] = list.value_offsets();
    if list.null_count() > 0 {
        let row = (0..list.len()).find(|&i| list.is_null(i)).unwrap_or(0);
        return Err(TokenmillError::data(
            row,
            "the token list is null",
            "drop or fill null rows before this stage",
        ));
    }
    // Offsets index the values buffer, which a sliced array shares with its parent.
    let (first, last) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    if let Some(at) = (first..last).find(|&i| values.is_null(i)) {
        let row = offsets.partition_point(|&o| o.as_usize() <= at) - 1;
        return Err(TokenmillError::data(
            row,
            "a token id is null",
            "re-tokenize this shard; token ids are never null",
        ));
    }
    Ok((values.values(), offsets))
}

/// Stable row keys from a document id column.
///
/// # Errors
///
/// [`TokenmillError::Schema`] for an id column of another type, and
/// [`TokenmillError::Data`] for a null id (a row without identity cannot get
/// a reproducible random stream).
pub fn row_keys_from_ids(column: &str, ids: &dyn Array) -> Result<Vec<u64>> {
    fn ints<T>(ids: &arrow_array::PrimitiveArray<T>) -> Vec<Option<i128>>
    where
        T: arrow_array::ArrowPrimitiveType,
        T::Native: Into<i128>,
    {
        ids.iter().map(|v| v.map(Into::into)).collect()
    }
    let keys: Vec<Option<u64>> = match ids.data_type() {
        DataType::Int8 => keyed_ints(ints(ids.as_primitive::<Int8Type>())),
        DataType::Int16 => keyed_ints(ints(ids.as_primitive::<Int16Type>())),
        DataType::Int32 => keyed_ints(ints(ids.as_primitive::<Int32Type>())),
        DataType::Int64 => keyed_ints(ints(ids.as_primitive::<Int64Type>())),
        DataType::UInt8 => keyed_ints(ints(ids.as_primitive::<UInt8Type>())),
        DataType::UInt16 => keyed_ints(ints(ids.as_primitive::<UInt16Type>())),
        DataType::UInt32 => keyed_ints(ints(ids.as_primitive::<UInt32Type>())),
        DataType::UInt64 => keyed_ints(ints(ids.as_primitive::<UInt64Type>())),
        _ => {
            let text = TextColumn::try_new(column, ids).map_err(|_| {
                TokenmillError::schema(
                    column,
                    format!(
                        "a document id column must hold strings or integers, found {}",
                        ids.data_type()
                    ),
                    "name another id column with --id-column, or pass --id-column '' to key rows by position",
                )
            })?;
            (0..text.len())
                .map(|row| {
                    if ids.is_null(row) {
                        None
                    } else {
                        Some(rng::row_key_from_bytes(text.bytes(row)))
                    }
                })
                .collect()
        }
    };
    keys.into_iter()
        .enumerate()
        .map(|(row, key)| {
            key.ok_or_else(|| {
                TokenmillError::data(
                    row,
                    format!("the id column '{column}' is null"),
                    "give every row an id, or pass --id-column '' to key rows by position",
                )
            })
        })
        .collect()
}

fn keyed_ints(ids: Vec<Option<i128>>) -> Vec<Option<u64>> {
    ids.into_iter()
        .map(|id| id.map(rng::row_key_from_int))
        .collect()
}

/// Row keys for rows without an id column: shard name and absolute row index.
///
/// # Errors
///
/// [`TokenmillError::Config`] when the rows run past row `u64::MAX` or
/// their keys do not fit in memory.
pub fn row_keys_from_position(shard: &str, first_row: u64, rows: usize) -> Result<Vec<u64>> {
    if rows > 0 && first_row.checked_add(rows as u64 - 1).is_none() {
        return Err(TokenmillError::config(
            format!("{rows} rows from row {first_row} run past row {}", u64::MAX),
            "number rows from 0 within each shard",
        ));
    }
    let mut keys = reserve(rows, "row keys")?;
    keys.extend((0..rows as u64).map(|i| rng::row_key_from_position(shard, first_row + i)));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BinaryArray, Int64Array, StringArray};

    #[test]
    fn binary_rows_must_be_utf8() {
        let array = BinaryArray::from(vec![b"ok".as_ref(), b"\xff\xfe".as_ref()]);
        let text = TextColumn::try_new("text", &array).unwrap();
        assert_eq!(text.get(0).unwrap(), "ok");
        let err = text.get(1).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 1, .. }), "{err}");
    }

    #[test]
    fn string_arrays_with_invalid_bytes_are_caught_not_trusted() {
        // What an unvalidated import through the C data interface can hand over.
        let data = arrow_data::ArrayData::builder(DataType::Utf8)
            .len(2)
            .add_buffer(arrow_buffer::Buffer::from_slice_ref([0i32, 2, 4]))
            .add_buffer(arrow_buffer::Buffer::from_slice_ref(b"ok\xff\xfe"));
        // SAFETY: deliberately invalid UTF-8, never read as &str by the code under test.
        let array = StringArray::from(unsafe { data.build_unchecked() });
        let text = TextColumn::try_new("text", &array).unwrap();
        assert_eq!(text.get(0).unwrap(), "ok");
        assert!(matches!(
            text.get(1),
            Err(TokenmillError::Data { row: 1, .. })
        ));
    }

    #[test]
    fn numeric_text_column_is_a_schema_error() {
        let array = Int64Array::from(vec![1, 2]);
        let err = TextColumn::try_new("text", &array).err().unwrap();
        assert!(err.to_string().contains("column 'text'"), "{err}");
    }

    #[test]
    fn integer_and_string_ids_key_differently() {
        let ints = row_keys_from_ids("id", &Int64Array::from(vec![7])).unwrap();
        let strings = row_keys_from_ids("id", &StringArray::from(vec!["7"])).unwrap();
        assert_ne!(ints, strings);
        // The same id gives the same key whatever the integer width.
        let narrow = row_keys_from_ids("id", &arrow_array::Int32Array::from(vec![7])).unwrap();
        assert_eq!(ints, narrow);
    }

    #[test]
    fn position_keys_past_the_last_row_or_memory_are_refused() {
        let keys = row_keys_from_position("s", u64::MAX - 1, 2).unwrap();
        assert_eq!(keys, row_keys_from_position("s", u64::MAX - 1, 2).unwrap());
        assert_eq!(
            row_keys_from_position("s", u64::MAX, 0).unwrap(),
            Vec::<u64>::new()
        );
        for (first, rows) in [(u64::MAX, 2), (1, usize::MAX), (0, 1 << 60)] {
            let err = row_keys_from_position("s", first, rows).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn null_id_is_reported_with_its_row() {
        let ids = StringArray::from(vec![Some("a"), None]);
        let err = row_keys_from_ids("id", &ids).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 1, .. }), "{err}");
    }
}
