//! PostgreSQL's binary COPY format read into Arrow batches: a header, then per row a field
//! count and each field as a length (-1 for NULL) and the value in the type's binary form.
//! Rows may arrive split across messages in any way; only whole rows are decoded.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use datafusion::arrow::array::NullBufferBuilder;
use datafusion::arrow::array::*;
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::arrow::record_batch::RecordBatchOptions;
use tokio_postgres::types::Type;

use crate::types::{array_element, ReadAs};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days and microseconds between 1970-01-01 (Arrow) and 2000-01-01 (PostgreSQL).
const EPOCH_DAYS: i32 = 10_957;
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One column being read: its PostgreSQL type (text for columns cast by the server) and
/// the values so far.
pub(crate) struct ColumnReader {
    name: String,
    values: Values,
}

enum Values {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        element: Box<Values>,
    },
}

impl Values {
    fn new(ty: &Type, data_type: &DataType) -> Values {
        match (ty, data_type) {
            (_, DataType::Boolean) => Values::Bool(BooleanBuilder::new()),
            (_, DataType::Int16) => Values::Int16(Int16Builder::new()),
            (_, DataType::Int32) => Values::Int32(Int32Builder::new()),
            (_, DataType::Int64) => Values::Int64(Int64Builder::new()),
            (_, DataType::Float32) => Values::Float32(Float32Builder::new()),
            (_, DataType::Float64) => Values::Float64(Float64Builder::new()),
            (_, DataType::Decimal128(p, s)) => Values::Decimal(
                Decimal128Builder::new().with_data_type(data_type.clone()),
                *p,
                *s,
            ),
            (_, DataType::Binary) => Values::Bytes(BinaryBuilder::new()),
            (_, DataType::Date32) => Values::Date(Date32Builder::new()),
            (_, DataType::Timestamp(_, tz)) => {
                Values::Timestamp(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            (_, DataType::Time64(_)) => Values::Time(Time64MicrosecondBuilder::new()),
            (ty, DataType::List(field)) => {
                let element = array_element(ty).unwrap_or(Type::TEXT);
                Values::List {
                    field: field.clone(),
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(0),
                    element: Box::new(Values::new(&element, field.data_type())),
                }
            }
            _ => Values::Text(StringBuilder::new()),
        }
    }

    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            Values::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Values::Int16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Values::Int32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Values::Int64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Values::Float32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Values::Float64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Values::Decimal(b, precision, scale) => b.append_value(numeric(v, *precision, *scale)?),
            Values::Text(b) => b.append_value(
                std::str::from_utf8(v).map_err(|_| "a value is not valid UTF-8".to_string())?,
            ),
            Values::Bytes(b) => b.append_value(v),
            Values::Date(b) => {
                let days = i32::from_be_bytes(fixed(v)?);
                if days == i32::MAX || days == i32::MIN {
                    return Err(
                        "an infinite date has no Arrow value; cast it in a query source".into(),
                    );
                }
                b.append_value(days + EPOCH_DAYS)
            }
            Values::Timestamp(b) => {
                let micros = i64::from_be_bytes(fixed(v)?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err(
                        "an infinite timestamp has no Arrow value; cast it in a query source"
                            .into(),
                    );
                }
                b.append_value(micros + EPOCH_MICROS)
            }
            Values::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Values::List {
                offsets,
                nulls,
                element,
                ..
            } => {
                let count = array_elements(v, element)?;
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + count);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Values::Bool(b) => b.append_null(),
            Values::Int16(b) => b.append_null(),
            Values::Int32(b) => b.append_null(),
            Values::Int64(b) => b.append_null(),
            Values::Float32(b) => b.append_null(),
            Values::Float64(b) => b.append_null(),
            Values::Decimal(b, ..) => b.append_null(),
            Values::Text(b) => b.append_null(),
            Values::Bytes(b) => b.append_null(),
            Values::Date(b) => b.append_null(),
            Values::Timestamp(b) => b.append_null(),
            Values::Time(b) => b.append_null(),
            Values::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Values::Bool(b) => Arc::new(b.finish()),
            Values::Int16(b) => Arc::new(b.finish()),
            Values::Int32(b) => Arc::new(b.finish()),
            Values::Int64(b) => Arc::new(b.finish()),
            Values::Float32(b) => Arc::new(b.finish()),
            Values::Float64(b) => Arc::new(b.finish()),
            Values::Decimal(b, ..) => Arc::new(b.finish()),
            Values::Text(b) => Arc::new(b.finish()),
            Values::Bytes(b) => Arc::new(b.finish()),
            Values::Date(b) => Arc::new(b.finish()),
            Values::Timestamp(b) => Arc::new(b.finish()),
            Values::Time(b) => Arc::new(b.finish()),
            Values::List {
                field,
                offsets,
                nulls,
                element,
            } => {
                let values = element.finish();
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(ListArray::new(
                    field.clone(),
                    offsets,
                    values,
                    nulls.finish(),
                ))
            }
        }
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("a {N}-byte value arrived with {} bytes", v.len()))
}

/// A one-dimensional array's elements appended to `element`; their count.
fn array_elements(mut v: &[u8], element: &mut Values) -> Result<i32, String> {
    let short = || "a truncated array value".to_string();
    if v.len() < 12 {
        return Err(short());
    }
    let dimensions = v.get_i32();
    let _has_nulls = v.get_i32();
    let _element_type = v.get_u32();
    if dimensions == 0 {
        return Ok(0);
    }
    if dimensions != 1 {
        return Err("a multi-dimensional array; cast it to text in a query source".into());
    }
    if v.len() < 8 {
        return Err(short());
    }
    let count = v.get_i32();
    let _lower_bound = v.get_i32();
    for _ in 0..count {
        if v.len() < 4 {
            return Err(short());
        }
        let len = v.get_i32();
        if len < 0 {
            element.append(None)?;
        } else {
            let len = len as usize;
            if v.len() < len {
                return Err(short());
            }
            element.append(Some(&v[..len]))?;
            v.advance(len);
        }
    }
    Ok(count)
}

/// A `numeric` in PostgreSQL's base-10000 form as an i128 at `scale` decimal places.
fn numeric(mut v: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    if v.len() < 8 {
        return Err("a truncated numeric value".into());
    }
    let ndigits = v.get_i16() as i32;
    let weight = v.get_i16() as i32;
    let sign = v.get_u16();
    let _dscale = v.get_u16();
    if sign == 0xC000 {
        return Err("a numeric NaN has no DECIMAL value".into());
    }
    if sign == 0xD000 || sign == 0xF000 {
        return Err("an infinite numeric has no DECIMAL value".into());
    }
    if v.len() < 2 * ndigits.max(0) as usize {
        return Err("a truncated numeric value".into());
    }
    let overflow = || format!("a numeric value does not fit DECIMAL({precision}, {scale})");
    let mut acc: i128 = 0;
    for _ in 0..ndigits {
        let digit = v.get_i16() as i128;
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(digit))
            .ok_or_else(overflow)?;
    }
    // acc holds the value times 10^exponent.
    let exponent = 4 * (ndigits - 1 - weight);
    let shift = scale as i32 - exponent;
    let scaled = if shift >= 0 {
        10i128
            .checked_pow(shift as u32)
            .and_then(|p| acc.checked_mul(p))
            .ok_or_else(overflow)?
    } else {
        // More decimals than the column holds (an unconstrained numeric): round half away
        // from zero, as PostgreSQL's own casts do.
        let divisor = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
        let (q, r) = (acc / divisor, acc % divisor);
        if r * 2 >= divisor {
            q + 1
        } else {
            q
        }
    };
    if scaled.unsigned_abs() >= 10u128.pow(precision as u32) {
        return Err(overflow());
    }
    Ok(if sign == 0x4000 { -scaled } else { scaled })
}

/// The rows of one COPY, decoded as they arrive.
pub(crate) struct CopyReader {
    schema: SchemaRef,
    columns: Vec<ColumnReader>,
    pending: BytesMut,
    header_read: bool,
    rows: usize,
    pub(crate) finished: bool,
}

impl CopyReader {
    pub(crate) fn new(schema: SchemaRef, types: &[(Type, ReadAs)]) -> CopyReader {
        let columns = schema
            .fields()
            .iter()
            .zip(types)
            .map(|(f, (ty, read_as))| ColumnReader {
                name: f.name().clone(),
                values: match read_as {
                    ReadAs::Native => Values::new(ty, f.data_type()),
                    ReadAs::Text => Values::Text(StringBuilder::new()),
                },
            })
            .collect();
        CopyReader {
            schema,
            columns,
            pending: BytesMut::new(),
            header_read: false,
            rows: 0,
            finished: false,
        }
    }

    /// Rows decoded and not yet taken.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Take in one message of the COPY and decode every whole row it completes.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.pending.extend_from_slice(data);
        if !self.header_read {
            if self.pending.len() < SIGNATURE.len() + 8 {
                return Ok(());
            }
            if &self.pending[..SIGNATURE.len()] != SIGNATURE {
                return Err("the server's COPY output is not in the binary format".into());
            }
            let extension = i32::from_be_bytes(fixed(&self.pending[15..19])?) as usize;
            if self.pending.len() < 19 + extension {
                return Ok(());
            }
            self.pending.advance(19 + extension);
            self.header_read = true;
        }
        while let Some(length) = self.whole_row()? {
            self.decode_row()?;
            self.pending.advance(length);
        }
        Ok(())
    }

    /// The length of the row at the front when it has arrived whole; None when it has not,
    /// or when the trailer was reached.
    fn whole_row(&mut self) -> Result<Option<usize>, String> {
        let buf = &self.pending[..];
        if buf.len() < 2 || self.finished {
            return Ok(None);
        }
        let fields = i16::from_be_bytes([buf[0], buf[1]]);
        if fields == -1 {
            self.finished = true;
            return Ok(None);
        }
        if fields as usize != self.columns.len() {
            return Err(format!(
                "a row of {fields} fields where {} were asked for",
                self.columns.len()
            ));
        }
        let mut at = 2;
        for _ in 0..fields {
            let Some(len) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes(fixed(len)?);
            at += 4 + len.max(0) as usize;
            if at > buf.len() {
                return Ok(None);
            }
        }
        Ok(Some(at))
    }

    fn decode_row(&mut self) -> Result<(), String> {
        let mut at = 2;
        for column in &mut self.columns {
            let len = i32::from_be_bytes(fixed(&self.pending[at..at + 4])?);
            at += 4;
            let value = if len < 0 {
                None
            } else {
                let v = &self.pending[at..at + len as usize];
                at += len as usize;
                Some(v)
            };
            column
                .values
                .append(value)
                .map_err(|e| format!("column `{}`: {e}", column.name))?;
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows decoded so far as one batch.
    pub(crate) fn take_batch(&mut self) -> Result<RecordBatch, String> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.values.finish()).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(ndigits: &[i16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((ndigits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend((if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in ndigits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode_at_the_column_scale() {
        // 12345.67 = [1, 2345, 6700] with weight 1
        let v = numeric_bytes(&[1, 2345, 6700], 1, false, 2);
        assert_eq!(numeric(&v, 12, 2).unwrap(), 1_234_567);
        // -0.05 = [500] with weight -1
        let v = numeric_bytes(&[500], -1, true, 2);
        assert_eq!(numeric(&v, 12, 2).unwrap(), -5);
        // 20000 = [2] with weight 1 (trailing zero digits dropped)
        let v = numeric_bytes(&[2], 1, false, 0);
        assert_eq!(numeric(&v, 10, 3).unwrap(), 20_000_000);
        // 0.123456789012 at scale 10 rounds half away from zero
        let v = numeric_bytes(&[1234, 5678, 9012], -1, false, 12);
        assert_eq!(numeric(&v, 38, 10).unwrap(), 1_234_567_890);
        let v = numeric_bytes(&[1, 0], 1, false, 0);
        assert_eq!(
            numeric(&v, 4, 0).unwrap_err(),
            "a numeric value does not fit DECIMAL(4, 0)"
        );
    }

    #[test]
    fn rows_split_anywhere_decode_the_same() {
        use datafusion::arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut copy = Vec::new();
        copy.extend(SIGNATURE);
        copy.extend(0i32.to_be_bytes());
        copy.extend(0i32.to_be_bytes());
        for (id, name) in [(1i64, Some("ana")), (2, None), (3, Some(""))] {
            copy.extend(2i16.to_be_bytes());
            copy.extend(8i32.to_be_bytes());
            copy.extend(id.to_be_bytes());
            match name {
                Some(n) => {
                    copy.extend((n.len() as i32).to_be_bytes());
                    copy.extend(n.as_bytes());
                }
                None => copy.extend((-1i32).to_be_bytes()),
            }
        }
        copy.extend((-1i16).to_be_bytes());
        for step in [1, 3, 7, copy.len()] {
            let types = [(Type::INT8, ReadAs::Native), (Type::TEXT, ReadAs::Native)];
            let mut reader = CopyReader::new(schema.clone(), &types);
            for chunk in copy.chunks(step) {
                reader.feed(chunk).unwrap();
            }
            assert!(reader.finished);
            let batch = reader.take_batch().unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
                .unwrap()
                .to_string();
            assert_eq!(
                text,
                "+----+------+\n| id | name |\n+----+------+\n| 1  | ana  |\n| 2  |      |\n| 3  |      |\n+----+------+"
            );
        }
    }
}
