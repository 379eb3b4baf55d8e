//! `retention(cond1, cond2, ...)`: ClickHouse's retention aggregate. Returns
//! `[cond1, cond1 AND cond2, cond1 AND cond3, ...]` as 0/1, each condition true on any row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt8Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::{plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use super::FunctionDoc;

pub const DOC: FunctionDoc = FunctionDoc {
    name: "retention",
    kind: "aggregate",
    signature: "retention(cond1 BOOLEAN, cond2 BOOLEAN, ...) -> TINYINT UNSIGNED[]",
    description: "ClickHouse retention: [cond1, cond1 AND cond2, cond1 AND cond3, ...] as 0/1, each condition \
                  true on any row of the group (2 to 32 conditions).",
    example: "SELECT retention(d = DATE '2026-05-01', d = DATE '2026-05-02') FROM (VALUES (DATE '2026-05-01'), (DATE '2026-05-02')) AS t(d)",
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Retention {
    signature: Signature,
}

impl Retention {
    pub fn new() -> Self {
        Retention {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::UInt8, false)))
}

impl AggregateUDFImpl for Retention {
    fn name(&self) -> &str {
        "retention"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(2..=32).contains(&arg_types.len()) {
            return plan_err!(
                "retention takes 2 to 32 conditions, got {}",
                arg_types.len()
            );
        }
        for (i, t) in arg_types.iter().enumerate() {
            if !matches!(t, DataType::Boolean | DataType::Null) {
                return plan_err!("retention: condition {} must be BOOLEAN, got {t}", i + 1);
            }
        }
        Ok(vec![DataType::Boolean; arg_types.len()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_type())
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[mask]", args.name),
            DataType::UInt32,
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(RetentionAccumulator {
            conditions: args.exprs.len(),
            mask: 0,
        }))
    }
}

#[derive(Debug)]
struct RetentionAccumulator {
    conditions: usize,
    /// Bit i set when condition i was true on some row.
    mask: u32,
}

impl Accumulator for RetentionAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for (i, v) in values.iter().enumerate() {
            let b: &BooleanArray = v.as_boolean();
            if b.true_count() > 0 {
                self.mask |= 1 << i;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let first = self.mask & 1 == 1;
        let values: UInt8Array = (0..self.conditions)
            .map(|i| Some((first && self.mask & (1 << i) != 0) as u8))
            .collect();
        Ok(ScalarValue::List(Arc::new(
            datafusion::arrow::array::ListArray::new(
                Arc::new(Field::new_list_field(DataType::UInt8, false)),
                datafusion::arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
                Arc::new(values),
                None,
            ),
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::UInt32(Some(self.mask))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let masks = states[0].as_primitive::<UInt32Type>();
        for i in 0..masks.len() {
            if masks.is_valid(i) {
                self.mask |= masks.value(i);
            }
        }
        Ok(())
    }
}
