//! `retention(cond1, cond2, ...)`: ClickHouse's retention aggregate. Returns
//! `[cond1, cond1 AND cond2, cond1 AND cond3, ...]` as 0/1, each condition true on any row.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, UInt32Array, UInt8Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::{plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

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

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    /// One mask per group in one vector: per-user retention over tens of millions of users
    /// would otherwise hold a boxed accumulator per user.
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(RetentionGroups {
            conditions: args.exprs.len(),
            masks: Vec::new(),
        }))
    }
}

/// `[cond1, cond1 AND cond2, ...]` as 0/1 for each mask, one list per mask.
fn retention_lists(masks: &[u32], conditions: usize) -> ArrayRef {
    let values: UInt8Array = masks
        .iter()
        .flat_map(|mask| {
            let first = mask & 1 == 1;
            (0..conditions).map(move |i| Some((first && mask & (1 << i) != 0) as u8))
        })
        .collect();
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::UInt8, false)),
        OffsetBuffer::from_lengths(std::iter::repeat_n(conditions, masks.len())),
        Arc::new(values),
        None,
    ))
}

/// Bit i of a row's mask: condition i is true on it (and the row passes the FILTER).
fn row_masks(values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Vec<u32> {
    let rows = values.first().map_or(0, |v| v.len());
    let mut masks = vec![0u32; rows];
    for (i, v) in values.iter().enumerate() {
        let b: &BooleanArray = v.as_boolean();
        for (row, mask) in masks.iter_mut().enumerate() {
            if b.is_valid(row) && b.value(row) {
                *mask |= 1 << i;
            }
        }
    }
    if let Some(f) = opt_filter {
        for (row, mask) in masks.iter_mut().enumerate() {
            if !(f.is_valid(row) && f.value(row)) {
                *mask = 0;
            }
        }
    }
    masks
}

#[derive(Debug)]
struct RetentionGroups {
    conditions: usize,
    masks: Vec<u32>,
}

impl GroupsAccumulator for RetentionGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.masks.resize(total_num_groups, 0);
        for (&g, mask) in group_indices.iter().zip(row_masks(values, opt_filter)) {
            self.masks[g] |= mask;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(retention_lists(
            &emit_to.take_needed(&mut self.masks),
            self.conditions,
        ))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let masks = UInt32Array::from(emit_to.take_needed(&mut self.masks));
        Ok(vec![Arc::new(masks)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.masks.resize(total_num_groups, 0);
        let states = values[0].as_primitive::<UInt32Type>();
        for (row, &g) in group_indices.iter().enumerate() {
            if states.is_valid(row) {
                self.masks[g] |= states.value(row);
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(UInt32Array::from(row_masks(
            values, opt_filter,
        )))])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.masks.capacity() * std::mem::size_of::<u32>()
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
        ScalarValue::try_from_array(&retention_lists(&[self.mask], self.conditions), 0)
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
