//! PII normalisation and hashing for ad-platform audiences: `normalize_email`,
//! `normalize_phone` and `hash_pii`, with Meta's and Google's formatting rules
//! (SPEC section 4).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::args::{all_scalar, arg_array, finish, for_each_str, is_string, scalar_str, TextArg};
use super::hashing::DigestColumn;
use super::FunctionDoc;

mod normalize;

use normalize::KINDS;
pub use normalize::{is_sha256_hex, normalize, Kind, Profile};

pub const NORMALIZE_EMAIL_DOC: FunctionDoc = FunctionDoc {
    name: "normalize_email",
    kind: "scalar",
    signature: "normalize_email(value VARCHAR [, profile VARCHAR]) -> VARCHAR",
    description: "Trim, lowercase and NFC an email address; NULL unless it looks like local@domain.tld. \
                  profile 'google' also removes whitespace and, for gmail.com/googlemail.com, dots and +tags.",
    example: "SELECT normalize_email(' John.Smith+promo@GMail.com ', 'google')",
};

pub const NORMALIZE_PHONE_DOC: FunctionDoc = FunctionDoc {
    name: "normalize_phone",
    kind: "scalar",
    signature:
        "normalize_phone(value VARCHAR [, profile VARCHAR [, calling_code VARCHAR]]) -> VARCHAR",
    description:
        "Digits only, international prefix (+ or 00) dropped; with a calling code, one trunk 0 is \
                  dropped and the code prefixed. meta gives digits, google gives E.164 (+digits). \
                  NULL unless 7 to 15 digits.",
    example: "SELECT normalize_phone('010-1234-5678', 'google', '82')",
};

pub const HASH_PII_DOC: FunctionDoc = FunctionDoc {
    name: "hash_pii",
    kind: "scalar",
    signature: "hash_pii(value, kind VARCHAR [, profile VARCHAR [, calling_code VARCHAR]]) -> VARCHAR",
    description: "Normalise by kind (email, phone, first_name, last_name, city, state, zip, country, gender, \
                  dob, external_id) for profile 'meta' (default) or 'google', then lowercase hex SHA-256. \
                  A value that already is a SHA-256 hex digest is returned lower-cased.",
    example: "SELECT hash_pii(' John_Smith@Gmail.com ', 'email')",
};

/// Accept text, numbers (phones and ids often arrive as numbers) and dates for the value;
/// text for the other arguments.
fn coerce(
    name: &str,
    arg_types: &[DataType],
    min: usize,
    max: usize,
    usage: &str,
) -> Result<Vec<DataType>> {
    if arg_types.len() < min || arg_types.len() > max {
        return plan_err!(
            "{name} takes {min} to {max} arguments: {usage}; got {}",
            arg_types.len()
        );
    }
    let mut out = Vec::with_capacity(arg_types.len());
    for (i, t) in arg_types.iter().enumerate() {
        let ok = if i == 0 {
            is_string(t)
                || t.is_integer()
                || matches!(
                    t,
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
                )
        } else {
            is_string(t)
        };
        if !ok {
            return plan_err!(
                "{name}: argument {} must be text, got {t}; usage: {usage}",
                i + 1
            );
        }
        out.push(if is_string(t) && !t.is_null() {
            t.clone()
        } else {
            DataType::Utf8
        });
    }
    Ok(out)
}

/// The value argument as strings: dates become ISO text, numbers their digits.
fn value_strings(array: ArrayRef) -> Result<ArrayRef> {
    if is_string(array.data_type()) {
        Ok(array)
    } else {
        Ok(cast(&array, &DataType::Utf8)?)
    }
}

fn const_arg<'a>(args: &'a ReturnFieldArgs, i: usize) -> Option<&'a str> {
    args.scalar_arguments
        .get(i)
        .copied()
        .flatten()
        .and_then(scalar_str)
}

fn check_profile(name: &str, p: Option<&str>) -> Result<()> {
    match p {
        Some(p) if Profile::parse(p).is_none() => {
            plan_err!("{name}: unknown profile `{p}`, expected 'meta' or 'google'")
        }
        _ => Ok(()),
    }
}

/// Shared body of the three functions: normalise each row, optionally hash it.
fn run(
    name: &str,
    args: &ScalarFunctionArgs,
    fixed_kind: Option<Kind>,
    hash: bool,
) -> Result<ColumnarValue> {
    let all_const = all_scalar(&args.args);
    let rows = if all_const { 1 } else { args.number_rows };
    let values = value_strings(arg_array(&args.args[0], all_const, rows)?)?;
    let (kind_arg, rest) = match fixed_kind {
        Some(_) => (None, 1),
        None => (Some(TextArg::from(&args.args[1], rows)?), 2),
    };
    let profile_arg = args
        .args
        .get(rest)
        .map(|a| TextArg::from(a, rows))
        .transpose()?;
    let code_arg = args
        .args
        .get(rest + 1)
        .map(|a| TextArg::from(a, rows))
        .transpose()?;

    // Constant kinds and profiles (the usual case) are parsed once, not per row; a constant
    // that does not parse is reported by the per-row path.
    let fixed_kind = fixed_kind.or_else(|| match &kind_arg {
        Some(TextArg::Const(Some(k))) => Kind::parse(k),
        _ => None,
    });
    let fixed_profile = match &profile_arg {
        None | Some(TextArg::Const(None)) => Some(Profile::Meta),
        Some(TextArg::Const(Some(p))) => Profile::parse(p),
        Some(TextArg::Rows(_)) => None,
    };
    let mut out = if hash {
        Column::Digests(DigestColumn::with_capacity(values.len()))
    } else {
        Column::Text(StringBuilder::with_capacity(
            values.len(),
            values.len() * 16,
        ))
    };
    let mut buf = String::with_capacity(64);
    let mut row = 0usize;
    let mut error = None;
    for_each_str(&values, |v| {
        let i = row;
        row += 1;
        let Some(v) = v else {
            out.append_null();
            return;
        };
        let kind = match (fixed_kind, &kind_arg) {
            (Some(k), _) => k,
            (None, Some(arg)) => match arg.get(i).map(|k| (k, Kind::parse(k))) {
                Some((_, Some(k))) => k,
                Some((k, None)) => {
                    error.get_or_insert(format!(
                        "{name}: unknown kind `{k}`, expected one of {KINDS}"
                    ));
                    out.append_null();
                    return;
                }
                None => {
                    out.append_null();
                    return;
                }
            },
            (None, None) => unreachable!("kind argument is required when not fixed"),
        };
        let profile = match (fixed_profile, profile_arg.as_ref().and_then(|p| p.get(i))) {
            (Some(p), _) => p,
            (None, None) => Profile::Meta,
            (None, Some(p)) => match Profile::parse(p) {
                Some(p) => p,
                None => {
                    error.get_or_insert(format!(
                        "{name}: unknown profile `{p}`, expected 'meta' or 'google'"
                    ));
                    out.append_null();
                    return;
                }
            },
        };
        let code = code_arg.as_ref().and_then(|c| c.get(i));
        match &mut out {
            Column::Digests(digests) => {
                let trimmed = v.trim();
                if let Some(already) = <&[u8; 64]>::try_from(trimmed.as_bytes())
                    .ok()
                    .filter(|_| is_sha256_hex(trimmed))
                {
                    let mut hex = *already;
                    hex.make_ascii_lowercase();
                    digests.push_hex(&hex);
                } else if normalize(kind, profile, code, v, &mut buf) {
                    digests.push_sha256(buf.as_bytes());
                } else {
                    digests.push_null();
                }
            }
            Column::Text(text) => {
                if normalize(kind, profile, code, v, &mut buf) {
                    text.append_value(&buf);
                } else {
                    text.append_null();
                }
            }
        }
    })?;
    if let Some(e) = error {
        return exec_err!("{e}");
    }
    let array: ArrayRef = match out {
        Column::Digests(digests) => Arc::new(digests.finish()?),
        Column::Text(mut text) => Arc::new(text.finish()),
    };
    finish(array, all_const)
}

/// A function's results: normalised text, or fixed-width hex digests when it hashes.
enum Column {
    Text(StringBuilder),
    Digests(DigestColumn),
}

impl Column {
    fn append_null(&mut self) {
        match self {
            Column::Text(text) => text.append_null(),
            Column::Digests(digests) => digests.push_null(),
        }
    }
}

macro_rules! pii_udf {
    ($ty:ident, $name:literal, $min:literal, $max:literal, $usage:literal, $kind:expr, $hash:literal, $profile_at:literal) => {
        #[derive(Debug, PartialEq, Eq, Hash)]
        pub struct $ty {
            signature: Signature,
        }

        impl $ty {
            pub fn new() -> Self {
                $ty {
                    signature: Signature::user_defined(Volatility::Immutable),
                }
            }
        }

        impl ScalarUDFImpl for $ty {
            fn name(&self) -> &str {
                $name
            }

            fn signature(&self) -> &Signature {
                &self.signature
            }

            fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
                coerce($name, arg_types, $min, $max, $usage)
            }

            fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
                Ok(DataType::Utf8)
            }

            fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
                let fixed: Option<Kind> = $kind;
                if fixed.is_none() {
                    match const_arg(&args, 1) {
                        Some(k) if Kind::parse(k).is_none() => {
                            return plan_err!(
                                "{}: unknown kind `{k}`, expected one of {KINDS}",
                                $name
                            )
                        }
                        _ => {}
                    }
                }
                check_profile($name, const_arg(&args, $profile_at))?;
                Ok(Arc::new(Field::new($name, DataType::Utf8, true)))
            }

            fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
                run($name, &args, $kind, $hash)
            }
        }
    };
}

pii_udf!(
    NormalizeEmail,
    "normalize_email",
    1,
    2,
    "normalize_email(value [, profile])",
    Some(Kind::Email),
    false,
    1
);
pii_udf!(
    NormalizePhone,
    "normalize_phone",
    1,
    3,
    "normalize_phone(value [, profile [, calling_code]])",
    Some(Kind::Phone),
    false,
    1
);
pii_udf!(
    HashPii,
    "hash_pii",
    2,
    4,
    "hash_pii(value, kind [, profile [, calling_code]])",
    None,
    true,
    2
);
