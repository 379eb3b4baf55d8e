//! Helpers shared by the functions: reading string arguments of any string type without
//! per-row allocation, and constant arguments.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;

/// Call `f` with each row of a string array (None for NULL).
pub fn for_each_str<'a>(array: &'a ArrayRef, mut f: impl FnMut(Option<&'a str>)) -> Result<()> {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(f),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(f),
        DataType::Utf8View => array.as_string_view().iter().for_each(f),
        DataType::Null => (0..array.len()).for_each(|_| f(None)),
        other => return exec_err!("expected a string argument, got {other}"),
    }
    Ok(())
}

/// The text of a constant string argument; None when NULL.
pub fn scalar_str(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v.as_deref(),
        _ => None,
    }
}

/// An argument that is usually a constant (a profile, a kind) but may vary per row.
pub enum TextArg {
    Const(Option<String>),
    Rows(Vec<Option<String>>),
}

impl TextArg {
    pub fn from(value: &ColumnarValue, rows: usize) -> Result<TextArg> {
        match value {
            ColumnarValue::Scalar(s) => {
                if !s.data_type().is_null()
                    && !matches!(
                        s.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    )
                {
                    return exec_err!("expected a string argument, got {}", s.data_type());
                }
                Ok(TextArg::Const(scalar_str(s).map(str::to_string)))
            }
            ColumnarValue::Array(a) => {
                let mut out = Vec::with_capacity(rows);
                for_each_str(a, |v| out.push(v.map(str::to_string)))?;
                Ok(TextArg::Rows(out))
            }
        }
    }

    pub fn get(&self, row: usize) -> Option<&str> {
        match self {
            TextArg::Const(v) => v.as_deref(),
            TextArg::Rows(v) => v.get(row).and_then(|s| s.as_deref()),
        }
    }
}

/// True when every argument is a constant, so the result can be a constant too.
pub fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

/// Turn a one-row result back into a scalar when the inputs were all constants.
pub fn finish(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar && array.len() == 1 {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

/// An argument as an array; a constant is expanded to one row when every argument is a
/// constant (the result is then folded back into a constant), else to `rows` rows.
pub fn arg_array(value: &ColumnarValue, all_const: bool, rows: usize) -> Result<ArrayRef> {
    match value {
        ColumnarValue::Array(a) => Ok(a.clone()),
        ColumnarValue::Scalar(s) => s.to_array_of_size(if all_const { 1 } else { rows }),
    }
}

pub fn is_string(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}
