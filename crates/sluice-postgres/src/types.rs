//! PostgreSQL column types as Arrow types, both ways: what a source column reads as, and
//! what column type a model's output gets in a target table.

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use std::sync::Arc;
use tokio_postgres::types::Type;

/// How one source column travels: in its own binary form, or cast to text by the server
/// (types without an Arrow counterpart: uuid, json, intervals, enums, ranges, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAs {
    Native,
    Text,
}

/// The scale given to `numeric` columns declared without one.
pub const UNCONSTRAINED_NUMERIC_SCALE: i8 = 10;

/// The Arrow type of a PostgreSQL column, given its type modifier (`numeric(p, s)`).
pub fn arrow_type(ty: &Type, typmod: i32) -> (DataType, ReadAs) {
    let native = |t: DataType| (t, ReadAs::Native);
    match *ty {
        Type::BOOL => native(DataType::Boolean),
        Type::INT2 => native(DataType::Int16),
        Type::INT4 => native(DataType::Int32),
        Type::INT8 => native(DataType::Int64),
        Type::FLOAT4 => native(DataType::Float32),
        Type::FLOAT8 => native(DataType::Float64),
        Type::NUMERIC => native(numeric_type(typmod)),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON => {
            native(DataType::Utf8)
        }
        Type::BYTEA => native(DataType::Binary),
        Type::DATE => native(DataType::Date32),
        Type::TIMESTAMP => native(DataType::Timestamp(TimeUnit::Microsecond, None)),
        Type::TIMESTAMPTZ => native(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        )),
        Type::TIME => native(DataType::Time64(TimeUnit::Microsecond)),
        _ => match array_element(ty) {
            Some(element) => {
                let (inner, _) = arrow_type(&element, -1);
                native(DataType::List(Arc::new(Field::new("item", inner, true))))
            }
            None => (DataType::Utf8, ReadAs::Text),
        },
    }
}

/// The element type of the one-dimensional arrays sluice reads natively.
pub fn array_element(ty: &Type) -> Option<Type> {
    Some(match *ty {
        Type::BOOL_ARRAY => Type::BOOL,
        Type::INT2_ARRAY => Type::INT2,
        Type::INT4_ARRAY => Type::INT4,
        Type::INT8_ARRAY => Type::INT8,
        Type::FLOAT4_ARRAY => Type::FLOAT4,
        Type::FLOAT8_ARRAY => Type::FLOAT8,
        Type::TEXT_ARRAY => Type::TEXT,
        Type::VARCHAR_ARRAY => Type::VARCHAR,
        Type::DATE_ARRAY => Type::DATE,
        _ => return None,
    })
}

/// `numeric(p, s)` as DECIMAL(p, s); without a declared precision, DECIMAL(38, 10).
fn numeric_type(typmod: i32) -> DataType {
    if typmod >= 4 {
        let precision = ((typmod - 4) >> 16) & 0xffff;
        let scale = (typmod - 4) & 0xffff;
        if (1..=38).contains(&precision) && scale <= precision {
            return DataType::Decimal128(precision as u8, scale as i8);
        }
    }
    DataType::Decimal128(38, UNCONSTRAINED_NUMERIC_SCALE)
}

/// The type a model's column is written as before it is encoded: what PostgreSQL cannot
/// hold in the Arrow form is cast first (nanoseconds to microseconds, views and
/// dictionaries to plain arrays).
pub fn writable(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        DataType::Time64(TimeUnit::Nanosecond) => DataType::Time64(TimeUnit::Microsecond),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, value) => writable(value),
        DataType::Null => DataType::Utf8,
        DataType::List(f) | DataType::LargeList(f) => DataType::List(Arc::new(Field::new(
            f.name(),
            writable(f.data_type()),
            true,
        ))),
        other => other.clone(),
    }
}

/// The PostgreSQL column type of a (writable) Arrow type, or None when there is none.
pub fn column_type(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20, 0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => format!("numeric({p}, {s})"),
        DataType::Utf8 => "text".into(),
        DataType::Binary | DataType::FixedSizeBinary(_) => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Duration(_) => "interval".into(),
        DataType::List(f) => match f.data_type() {
            DataType::List(_) => return None,
            inner => format!("{}[]", column_type(inner)?),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_reads_as_its_declared_precision_and_scale() {
        // numeric(12, 2): typmod = (12 << 16 | 2) + 4
        assert_eq!(
            arrow_type(&Type::NUMERIC, ((12 << 16) | 2) + 4).0,
            DataType::Decimal128(12, 2)
        );
        assert_eq!(
            arrow_type(&Type::NUMERIC, -1).0,
            DataType::Decimal128(38, 10)
        );
        assert_eq!(arrow_type(&Type::UUID, -1), (DataType::Utf8, ReadAs::Text));
        assert_eq!(arrow_type(&Type::JSONB, -1), (DataType::Utf8, ReadAs::Text));
    }

    #[test]
    fn outputs_get_column_types() {
        let ns = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        assert_eq!(column_type(&writable(&ns)).as_deref(), Some("timestamptz"));
        assert_eq!(
            column_type(&DataType::Decimal128(12, 2)).as_deref(),
            Some("numeric(12, 2)")
        );
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(column_type(&writable(&list)).as_deref(), Some("text[]"));
        assert_eq!(column_type(&DataType::Struct(Default::default())), None);
    }
}
