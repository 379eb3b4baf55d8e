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
