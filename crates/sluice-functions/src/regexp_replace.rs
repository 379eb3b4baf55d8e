//! `regexp_replace` with a fast path for the commonest cleaning pattern: deleting every
//! character of a class, as in `regexp_replace(phone, '[^0-9]', '', 'g')`.
//!
//! DataFusion runs the regex once per match, and a formatted phone number has one match
//! per separator: on the 10M-row benchmark pipeline that one call cost about 5% of the
//! CPU. A class of ASCII characters is a byte set, and deleting it is one pass over the
//! bytes. Every other use (other patterns, flags or replacements, per-row patterns) goes
//! to DataFusion's function unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericStringArray, OffsetSizeTrait, StringViewBuilder,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use super::args::scalar_str;

/// DataFusion's `regexp_replace`, answering deletions of a character class itself.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RegexpReplace {
    builtin: Arc<ScalarUDF>,
}

impl RegexpReplace {
    pub fn new() -> Self {
        Self {
            builtin: datafusion::functions::regex::regexp_replace(),
        }
    }
}

impl ScalarUDFImpl for RegexpReplace {
    fn name(&self) -> &str {
        self.builtin.name()
    }

    fn signature(&self) -> &Signature {
        self.builtin.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.builtin.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(class) = deleted_class(&args.args) {
            if let ColumnarValue::Array(values) = &args.args[0] {
                if let Some(out) = delete_class(values, &class) {
                    return Ok(ColumnarValue::Array(out));
                }
            }
        }
        self.builtin.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.builtin.documentation()
    }
}

/// The byte class a call deletes: a constant one-class pattern, an empty replacement and
/// exactly the `g` flag. None when the call is anything else.
fn deleted_class(args: &[ColumnarValue]) -> Option<ByteClass> {
    let constant = |i: usize| match args.get(i) {
        Some(ColumnarValue::Scalar(value)) => scalar_str(value),
        _ => None,
    };
    if args.len() != 4 || constant(2) != Some("") || constant(3) != Some("g") {
        return None;
    }
    ByteClass::parse(constant(1)?)
}

/// A regex character class of ASCII characters, as the set of bytes it matches.
/// A negated class also matches every non-ASCII character.
#[derive(Debug, PartialEq)]
pub(crate) struct ByteClass {
    ascii: [bool; 128],
    negated: bool,
}

impl ByteClass {
    /// `[...]` or `[^...]` of printable ASCII characters and ranges such as `0-9`; no
    /// escapes, nested classes or `[:name:]`. Anything else is None (DataFusion's path).
    pub(crate) fn parse(pattern: &str) -> Option<ByteClass> {
        let inner = pattern.strip_prefix('[')?.strip_suffix(']')?;
        let (negated, items) = match inner.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let chars: Vec<u8> = items.bytes().collect();
        let plain = |c: u8| (c.is_ascii_graphic() || c == b' ') && !b"[]\\".contains(&c);
        // `&&`, `--` and `~~` are set operations in the regex crate's classes.
        let set_operation = ["&&", "--", "~~"].iter().any(|op| items.contains(op));
        if chars.is_empty() || set_operation || !chars.iter().all(|&c| plain(c)) {
            return None;
        }
        let mut ascii = [false; 128];
        let mut i = 0;
        while i < chars.len() {
            let first = chars[i];
            if i + 2 < chars.len() && chars[i + 1] == b'-' {
                let last = chars[i + 2];
                if first > last || last == b'-' || first == b'-' {
                    return None;
                }
                (first..=last).for_each(|c| ascii[c as usize] = true);
                i += 3;
            } else {
                // A '-' is literal only first or last, as in the regex crate.
                if first == b'-' && i != 0 && i != chars.len() - 1 {
                    return None;
                }
                ascii[first as usize] = true;
                i += 1;
            }
        }
        Some(ByteClass { ascii, negated })
    }

    /// Whether the regex would delete this byte. Bytes of multi-byte UTF-8 characters
    /// are all >= 0x80: a negated ASCII class deletes every one (the whole character),
    /// a plain one none, so the output stays valid UTF-8.
    #[inline]
    fn deletes(&self, byte: u8) -> bool {
        let listed = byte < 128 && self.ascii[byte as usize];
        listed != self.negated
    }

    fn delete_into(&self, value: &str, out: &mut Vec<u8>) {
        out.extend(value.bytes().filter(|&b| !self.deletes(b)));
    }
}

/// None when the fast path does not apply to this array; DataFusion's path answers then.
fn delete_class(values: &ArrayRef, class: &ByteClass) -> Option<ArrayRef> {
    match values.data_type() {
        DataType::Utf8 => delete_in_offsets(values.as_string::<i32>(), class),
        DataType::LargeUtf8 => delete_in_offsets(values.as_string::<i64>(), class),
        DataType::Utf8View => {
            let views = values.as_string_view();
            let mut builder = StringViewBuilder::with_capacity(views.len());
            let mut scratch = Vec::new();
            for value in views.iter() {
                match value {
                    Some(value) => {
                        scratch.clear();
                        class.delete_into(value, &mut scratch);
                        // Only whole characters were deleted from valid UTF-8.
                        builder.append_value(std::str::from_utf8(&scratch).ok()?);
                    }
                    None => builder.append_null(),
                }
            }
            Some(Arc::new(builder.finish()))
        }
        _ => None,
    }
}

fn delete_in_offsets<O: OffsetSizeTrait>(
    values: &GenericStringArray<O>,
    class: &ByteClass,
) -> Option<ArrayRef> {
    let offsets = values.value_offsets();
    let first = offsets.first().map_or(0, |o| o.as_usize());
    let last = offsets.last().map_or(0, |o| o.as_usize());
    let mut bytes = Vec::with_capacity(last - first);
    let mut ends = Vec::with_capacity(values.len() + 1);
    ends.push(O::usize_as(0));
    for i in 0..values.len() {
        if values.is_valid(i) {
            class.delete_into(values.value(i), &mut bytes);
        }
        ends.push(O::usize_as(bytes.len()));
    }
    let offsets = OffsetBuffer::new(ends.into());
    let out =
        GenericStringArray::<O>::try_new(offsets, Buffer::from_vec(bytes), values.nulls().cloned());
    Some(Arc::new(out.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::config::ConfigOptions;
    use datafusion::common::ScalarValue;

    fn invoke(values: ArrayRef, pattern: &str, replacement: &str, flags: &str) -> ArrayRef {
        invoke_udf(
            &ScalarUDF::from(RegexpReplace::new()),
            values,
            pattern,
            replacement,
            flags,
        )
    }

    fn invoke_udf(
        udf: &ScalarUDF,
        values: ArrayRef,
        pattern: &str,
        replacement: &str,
        flags: &str,
    ) -> ArrayRef {
        let text = |s: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.to_string())));
        let data_type = values.data_type().clone();
        let args = ScalarFunctionArgs {
            number_rows: values.len(),
            args: vec![
                ColumnarValue::Array(values),
                text(pattern),
                text(replacement),
                text(flags),
            ],
            arg_fields: (0..4)
                .map(|_| Arc::new(Field::new("a", data_type.clone(), true)))
                .collect(),
            return_field: Arc::new(Field::new("r", data_type, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match udf.invoke_with_args(args).unwrap() {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(s) => s.to_array().unwrap(),
        }
    }

    fn strings(array: &ArrayRef) -> Vec<Option<String>> {
        let mut out = Vec::new();
        super::super::args::for_each_str(array, |v| out.push(v.map(String::from))).unwrap();
        out
    }

    #[test]
    fn the_fast_path_answers_what_the_regex_does() {
        let rows: Vec<Option<&str>> = vec![
            Some("+1 (555) 010-9999"),
            None,
            Some(""),
            Some("٣٤ 12 ü-7"),
            Some("abc-XYZ_09 ~"),
        ];
        let patterns = [
            "[^0-9]",
            "[0-9]",
            "[^a-z0-9]",
            "[- ]",
            "[^-a-c9]",
            "[ _~-]",
            "[^A-Z]",
        ];
        for pattern in patterns {
            assert!(ByteClass::parse(pattern).is_some(), "{pattern}");
            for values in [
                Arc::new(StringArray::from(rows.clone())) as ArrayRef,
                Arc::new(datafusion::arrow::array::LargeStringArray::from(
                    rows.clone(),
                )),
                Arc::new(datafusion::arrow::array::StringViewArray::from(
                    rows.clone(),
                )),
            ] {
                let class = ByteClass::parse(pattern).unwrap();
                let fast = delete_class(&values, &class).unwrap();
                assert_eq!(fast.data_type(), values.data_type());
                let builtin = datafusion::functions::regex::regexp_replace();
                let regex = invoke_udf(&builtin, Arc::clone(&values), pattern, "", "g");
                assert_eq!(
                    strings(&fast),
                    strings(&regex),
                    "{pattern} {:?}",
                    values.data_type()
                );
                let ours = invoke(Arc::clone(&values), pattern, "", "g");
                assert_eq!(strings(&ours), strings(&regex));
            }
        }
        let phones = invoke(Arc::new(StringArray::from(rows)), "[^0-9]", "", "g");
        assert_eq!(
            strings(&phones),
            [Some("15550109999"), None, Some(""), Some("127"), Some("09")]
                .map(|v| v.map(String::from))
        );
    }

    #[test]
    fn other_patterns_keep_datafusions_path() {
        for pattern in [
            "[^\\d]",
            "[[:digit:]]",
            "[^0-9]+",
            "[a-]x]",
            "[z-a]",
            "[]",
            "\\d",
            "[^é]",
        ] {
            assert_eq!(ByteClass::parse(pattern), None, "{pattern}");
        }
        let values: ArrayRef = Arc::new(StringArray::from(vec!["a1b22"]));
        // Not the deletion form: a replacement, or only the first match.
        assert_eq!(
            strings(&invoke(Arc::clone(&values), "[0-9]", "#", "g")),
            [Some("a#b##".into())]
        );
        assert_eq!(
            strings(&invoke(Arc::clone(&values), "[0-9]", "", "i")),
            [Some("ab22".into())]
        );
    }
}
