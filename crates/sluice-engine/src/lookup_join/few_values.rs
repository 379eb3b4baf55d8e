//! Build-side text columns that hold a few short values (countries, plans, tiers), gathered
//! through a dictionary: see [`FewValues`].

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, UInt32Array};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{internal_err, HashMap, Result};

use crate::prefetch::prefetch;

/// The longest value a dictionary holds: each value is copied as one 16-byte store.
const WIDTH: usize = 16;

/// At most this many distinct values; the code after the last one is the empty value,
/// which probe rows without a build row take.
const MOST_VALUES: usize = u8::MAX as usize;

/// How many rows ahead a gather prefetches a build row's code.
const PREFETCH_AHEAD: usize = 16;

/// A `Utf8` build column without NULLs whose values are few and at most 16 bytes long, as
/// one code per build row into a dictionary of the values.
///
/// `take` on a text column reads two offsets and the bytes of a random build row, and
/// copies the bytes with a call to `memcpy`: on benches/pipeline the accounts' `country`,
/// taken for 9.2M events from 500K accounts, cost 20 ns a row, 5.5% of the samples. Here a
/// row reads one byte of a table a quarter of the offsets' size and stores 16 bytes.
pub(super) struct FewValues {
    codes: Vec<u8>,
    /// Each code's value, padded with zeros to [`WIDTH`] bytes.
    padded: Vec<[u8; WIDTH]>,
    lengths: Vec<u8>,
}

impl FewValues {
    /// The column's dictionary, when it has one: `Utf8`, no NULLs, at most
    /// [`MOST_VALUES`] distinct values, none longer than [`WIDTH`] bytes.
    pub(super) fn of(column: &ArrayRef) -> Option<FewValues> {
        if column.data_type() != &DataType::Utf8 || column.null_count() > 0 {
            return None;
        }
        let strings = column.as_string::<i32>();
        let mut code_of: HashMap<&[u8], u8> = HashMap::new();
        let mut padded = Vec::new();
        let mut lengths = Vec::new();
        let mut codes = Vec::with_capacity(strings.len());
        for value in strings.iter().flatten() {
            let bytes = value.as_bytes();
            let code = match code_of.get(bytes) {
                Some(&code) => code,
                None => {
                    if bytes.len() > WIDTH || padded.len() == MOST_VALUES {
                        return None;
                    }
                    let mut block = [0u8; WIDTH];
                    block[..bytes.len()].copy_from_slice(bytes);
                    let code = padded.len() as u8;
                    padded.push(block);
                    lengths.push(bytes.len() as u8);
                    code_of.insert(bytes, code);
                    code
                }
            };
            codes.push(code);
        }
        // The empty value, for rows without a build row (their NULL is in the indices).
        padded.push([0u8; WIDTH]);
        lengths.push(0);
        Some(FewValues {
            codes,
            padded,
            lengths,
        })
    }

    /// The column's values at `indices` (a NULL index gives NULL), as `take` gives them.
    pub(super) fn gather(&self, indices: &UInt32Array) -> Result<ArrayRef> {
        let rows = indices.values();
        let empty = (self.padded.len() - 1) as u8;
        let mut codes = Vec::with_capacity(rows.len());
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        let mut end = 0usize;
        offsets.push(0i32);
        for (i, &row) in rows.iter().enumerate() {
            if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                if let Some(code) = self.codes.get(ahead as usize) {
                    prefetch(code);
                }
            }
            let code = if indices.is_valid(i) {
                match self.codes.get(row as usize) {
                    Some(&code) => code,
                    None => return internal_err!("LookupJoinExec: build row {row} out of range"),
                }
            } else {
                empty
            };
            codes.push(code);
            end += self.lengths[code as usize] as usize;
            offsets.push(end as i32);
        }
        if end > i32::MAX as usize {
            return internal_err!("LookupJoinExec: {end} bytes gathered into one text column");
        }
        // Every row stores a whole block; the next row's block overwrites the padding.
        let mut values = vec![0u8; end + WIDTH];
        for (code, &at) in codes.iter().zip(&offsets) {
            let at = at as usize;
            values[at..at + WIDTH].copy_from_slice(&self.padded[*code as usize]);
        }
        values.truncate(end);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let array =
            StringArray::try_new(offsets, Buffer::from_vec(values), indices.nulls().cloned())?;
        Ok(Arc::new(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::compute::take;

    fn gathered_alike(column: ArrayRef, indices: UInt32Array) {
        let few = FewValues::of(&column).expect("a dictionary");
        let ours = few.gather(&indices).unwrap();
        let arrows = take(&column, &indices, None).unwrap();
        assert_eq!(ours.as_ref(), arrows.as_ref());
    }

    #[test]
    fn gathers_what_take_gathers_with_and_without_build_rows() {
        let column: ArrayRef = Arc::new(StringArray::from(vec![
            "DE",
            "",
            "sixteen-bytes-xx",
            "DE",
            "ünï",
            "US",
        ]));
        gathered_alike(
            column.clone(),
            UInt32Array::from(vec![5, 0, 2, 2, 1, 4, 3, 0, 5]),
        );
        gathered_alike(
            column.clone(),
            UInt32Array::from(vec![Some(2), None, Some(4), None, None, Some(1)]),
        );
        gathered_alike(column, UInt32Array::from(Vec::<u32>::new()));
    }

    #[test]
    fn columns_of_many_long_or_missing_values_have_no_dictionary() {
        let long: ArrayRef = Arc::new(StringArray::from(vec!["DE", "seventeen-bytes-x"]));
        assert!(FewValues::of(&long).is_none());
        let many: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..=MOST_VALUES).map(|i| format!("v{i}")),
        ));
        assert!(FewValues::of(&many).is_none());
        let just_enough: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..MOST_VALUES).map(|i| format!("v{i}")),
        ));
        assert!(FewValues::of(&just_enough).is_some());
        let nulls: ArrayRef = Arc::new(StringArray::from(vec![Some("DE"), None]));
        assert!(FewValues::of(&nulls).is_none());
    }
}
