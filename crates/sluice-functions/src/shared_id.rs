//! `shared_id(namespace, key [, key ...])`: a deterministic RFC 9562 version 5 UUID, so any
//! language with a UUIDv5 function derives the same shared user identifier.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use uuid::Uuid;

use super::args::{all_scalar, arg_array, finish, for_each_str, is_string, TextArg};
use super::FunctionDoc;

pub const DOC: FunctionDoc = FunctionDoc {
    name: "shared_id",
    kind: "scalar",
    signature: "shared_id(namespace VARCHAR, key, [key ...]) -> VARCHAR",
    description:
        "Deterministic UUIDv5 (RFC 9562) of the keys' text joined with U+001F. The namespace is a \
                  UUID or a name standing for uuid5(NAMESPACE_DNS, name). NULL if any key is NULL.",
    example: "SELECT shared_id('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'www.example.com')",
};

const SEPARATOR: char = '\u{1f}';

/// A namespace UUID literal, or a name hashed under the DNS namespace.
pub fn namespace(text: &str) -> Uuid {
    Uuid::parse_str(text.trim())
        .unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_DNS, text.as_bytes()))
}

/// The shared id of keys under a namespace, written into `out` (hyphenated, lowercase).
pub fn shared_id_of<'a>(
    ns: &Uuid,
    keys: &[&str],
    name_buf: &mut String,
    out: &'a mut [u8; 36],
) -> &'a str {
    name_buf.clear();
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            name_buf.push(SEPARATOR);
        }
        name_buf.push_str(k);
    }
    Uuid::new_v5(ns, name_buf.as_bytes())
        .hyphenated()
        .encode_lower(out)
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SharedId {
    signature: Signature,
}

impl SharedId {
    pub fn new() -> Self {
        SharedId {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SharedId {
    fn name(&self) -> &str {
        "shared_id"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() < 2 {
            return plan_err!("shared_id takes a namespace and at least one key: shared_id(namespace, key [, key ...])");
        }
        if !is_string(&arg_types[0]) {
            return plan_err!(
                "shared_id: the namespace must be text (a UUID or a name), got {}",
                arg_types[0]
            );
        }
        arg_types
            .iter()
            .map(|t| {
                if is_string(t) && !t.is_null() {
                    Ok(t.clone())
                } else if t.is_null()
                    || t.is_integer()
                    || matches!(
                        t,
                        DataType::Date32
                            | DataType::Date64
                            | DataType::Timestamp(_, _)
                            | DataType::Boolean
                    )
                    || t.is_floating()
                {
                    Ok(DataType::Utf8)
                } else {
                    plan_err!("shared_id: keys must be text, numbers or dates, got {t}")
                }
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_const = all_scalar(&args.args);
        let rows = if all_const { 1 } else { args.number_rows };
        let ns_arg = TextArg::from(&args.args[0], rows)?;
        let keys: Vec<ArrayRef> = args.args[1..]
            .iter()
            .map(|a| {
                let arr = arg_array(a, all_const, rows)?;
                if is_string(arr.data_type()) {
                    Ok(arr)
                } else {
                    Ok(cast(&arr, &DataType::Utf8)?)
                }
            })
            .collect::<Result<_>>()?;
        // Gather each key column as borrowed text, row-major access below.
        let mut columns: Vec<Vec<Option<&str>>> = Vec::with_capacity(keys.len());
        for k in &keys {
            let mut col = Vec::with_capacity(rows);
            for_each_str(k, |v| col.push(v))?;
            columns.push(col);
        }
        let const_ns = match &ns_arg {
            TextArg::Const(Some(t)) => Some(namespace(t)),
            TextArg::Const(None) => None,
            TextArg::Rows(_) => None,
        };
        let mut out = StringBuilder::with_capacity(rows, rows * 36);
        let mut name_buf = String::with_capacity(64);
        let mut uuid_buf = [0u8; 36];
        let mut row_keys: Vec<&str> = Vec::with_capacity(columns.len());
        for row in 0..rows {
            let ns = match (&const_ns, &ns_arg) {
                (Some(ns), _) => *ns,
                (None, TextArg::Rows(_)) => match ns_arg.get(row) {
                    Some(t) => namespace(t),
                    None => {
                        out.append_null();
                        continue;
                    }
                },
                (None, TextArg::Const(_)) => {
                    out.append_null();
                    continue;
                }
            };
            row_keys.clear();
            let mut null = false;
            for col in &columns {
                match col.get(row).copied().flatten() {
                    Some(v) => row_keys.push(v),
                    None => {
                        null = true;
                        break;
                    }
                }
            }
            if null {
                out.append_null();
            } else {
                out.append_value(shared_id_of(&ns, &row_keys, &mut name_buf, &mut uuid_buf));
            }
        }
        if columns.iter().any(|c| c.len() != rows) {
            return exec_err!("shared_id: argument lengths differ");
        }
        finish(Arc::new(out.finish()), all_const)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9562 Appendix A.4: UUIDv5 of "www.example.com" in the DNS namespace.
    #[test]
    fn rfc9562_vector() {
        let mut name = String::new();
        let mut out = [0u8; 36];
        let ns = namespace("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        assert_eq!(
            shared_id_of(&ns, &["www.example.com"], &mut name, &mut out),
            "2ed6657d-e927-568b-95e1-2665a8aea6a2"
        );
    }

    #[test]
    fn names_stand_for_dns_namespace_uuids() {
        assert_eq!(
            namespace("www.example.com").to_string(),
            "2ed6657d-e927-568b-95e1-2665a8aea6a2"
        );
        let mut name = String::new();
        let mut out = [0u8; 36];
        let joined = shared_id_of(
            &namespace("sluice.identity"),
            &["a", "b"],
            &mut name,
            &mut out,
        )
        .to_string();
        let expected =
            Uuid::new_v5(&namespace("sluice.identity"), "a\u{1f}b".as_bytes()).to_string();
        assert_eq!(joined, expected);
    }
}
