//! SQL type names accepted in a source's `schema` table.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// Parse a SQL type name (`BIGINT`, `VARCHAR`, `DECIMAL(10,2)`, `TIMESTAMP` ...) into an
/// Arrow type, with the same meaning DataFusion's SQL gives it.
pub fn parse_sql_type(text: &str) -> Result<DataType, String> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let ty = match t.as_str() {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TINYINT" | "INT1" => DataType::Int8,
        "SMALLINT" | "INT2" => DataType::Int16,
        "INT" | "INTEGER" | "INT4" => DataType::Int32,
        "BIGINT" | "INT8" | "LONG" => DataType::Int64,
        "TINYINT UNSIGNED" => DataType::UInt8,
        "SMALLINT UNSIGNED" => DataType::UInt16,
        "INT UNSIGNED" | "INTEGER UNSIGNED" => DataType::UInt32,
        "BIGINT UNSIGNED" => DataType::UInt64,
        "REAL" | "FLOAT" | "FLOAT4" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" => DataType::Float64,
        "VARCHAR" | "TEXT" | "STRING" | "CHAR" => DataType::Utf8,
        "BYTEA" | "BINARY" | "VARBINARY" | "BLOB" => DataType::Binary,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "DATETIME" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => {
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()))
        }
        other => {
            if let Some(args) = other
                .strip_prefix("DECIMAL")
                .or_else(|| other.strip_prefix("NUMERIC"))
            {
                return parse_decimal(args.trim()).ok_or_else(|| {
                    format!("bad decimal type `{text}`, expected DECIMAL(precision, scale)")
                });
            }
            if let Some(inner) = other
                .strip_prefix("VARCHAR(")
                .or_else(|| other.strip_prefix("CHAR("))
            {
                if inner.trim_end_matches(')').trim().parse::<u32>().is_ok() {
                    return Ok(DataType::Utf8);
                }
            }
            return Err(format!(
                "unknown SQL type `{text}`, expected one of BOOLEAN, INT, BIGINT, DOUBLE, \
                 DECIMAL(p,s), VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, BYTEA"
            ));
        }
    };
    Ok(ty)
}

/// The SQL name of an Arrow type, as psql and DuckDB show a column's type: `BIGINT`,
/// `VARCHAR`, `TIMESTAMP`, `DECIMAL(10,2)`, `VARCHAR[]`; what SQL has no name for keeps
/// Arrow's.
pub fn sql_type_name(ty: &DataType) -> String {
    let name = match ty {
        DataType::Null => "NULL",
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 => "TINYINT",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INTEGER",
        DataType::Int64 => "BIGINT",
        DataType::UInt8 => "TINYINT UNSIGNED",
        DataType::UInt16 => "SMALLINT UNSIGNED",
        DataType::UInt32 => "INTEGER UNSIGNED",
        DataType::UInt64 => "BIGINT UNSIGNED",
        DataType::Float16 | DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BYTEA",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Time32(_) | DataType::Time64(_) => "TIME",
        DataType::Timestamp(_, None) => "TIMESTAMP",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ",
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL",
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => return format!("DECIMAL({p},{s})"),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _) => {
            return format!("{}[]", sql_type_name(item.data_type()))
        }
        DataType::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type_name(f.data_type())))
                .collect();
            return format!("STRUCT({})", fields.join(", "));
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                return format!(
                    "MAP({}, {})",
                    sql_type_name(kv[0].data_type()),
                    sql_type_name(kv[1].data_type())
                )
            }
            other => return format!("MAP({other})"),
        },
        DataType::Dictionary(_, values) => return sql_type_name(values),
        DataType::RunEndEncoded(_, values) => return sql_type_name(values.data_type()),
        other => return other.to_string(),
    };
    name.to_string()
}

fn parse_decimal(args: &str) -> Option<DataType> {
    if args.is_empty() {
        return Some(DataType::Decimal128(38, 10));
    }
    let inner = args.strip_prefix('(')?.strip_suffix(')')?;
    let mut parts = inner.split(',').map(|p| p.trim());
    let precision: u8 = parts.next()?.parse().ok()?;
    let scale: i8 = match parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || precision == 0 || precision > 38 || scale as i16 > precision as i16
    {
        return None;
    }
    Some(DataType::Decimal128(precision, scale))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sql_names_read_back_as_the_same_type() {
        use super::{parse_sql_type, sql_type_name};
        for name in [
            "BOOLEAN",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "BIGINT UNSIGNED",
            "REAL",
            "DOUBLE",
            "VARCHAR",
            "BYTEA",
            "DATE",
            "TIMESTAMP",
            "TIMESTAMPTZ",
            "DECIMAL(10,2)",
        ] {
            assert_eq!(sql_type_name(&parse_sql_type(name).unwrap()), name);
        }
        use datafusion::arrow::datatypes::{DataType, Field};
        use std::sync::Arc;
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(sql_type_name(&list), "VARCHAR[]");
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert_eq!(sql_type_name(&dict), "VARCHAR");
    }

    use super::*;

    #[test]
    fn common_types() {
        assert_eq!(parse_sql_type("bigint").unwrap(), DataType::Int64);
        assert_eq!(
            parse_sql_type("Decimal(10, 2)").unwrap(),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(parse_sql_type("varchar(20)").unwrap(), DataType::Utf8);
        assert!(parse_sql_type("decimal(40,2)").is_err());
        assert!(parse_sql_type("nope").is_err());
    }
}
