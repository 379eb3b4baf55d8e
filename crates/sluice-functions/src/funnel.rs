//! `window_funnel`: ClickHouse's `windowFunnel(window[, mode])(timestamp, cond1, ...)` as a
//! DataFusion aggregate, so existing funnel analyses port unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, UInt64Array, UInt8Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Int64Type, TimeUnit, UInt64Type, UInt8Type,
};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use datafusion::physical_expr::expressions::Literal;

use super::args::is_string;
use super::FunctionDoc;

pub const DOC: FunctionDoc = FunctionDoc {
    name: "window_funnel",
    kind: "aggregate",
    signature: "window_funnel(window BIGINT, ['mode[,mode...]',] timestamp, cond1 BOOLEAN, cond2 BOOLEAN, ...) -> INT",
    description: "Deepest step of the ordered chain cond1 -> cond2 -> ... reached within the window (inclusive; \
                  seconds for TIMESTAMP/DATE, the column's units for integers), exactly as ClickHouse's windowFunnel. \
                  Modes: strict_order, strict_deduplication, strict_increase, strict_once.",
    example: "SELECT user_id, window_funnel(3600, ts, event = 'session', event = 'click', event = 'purchase') FROM (VALUES (1, TIMESTAMP '2026-05-01 10:00:00', 'session'), (1, TIMESTAMP '2026-05-01 10:20:00', 'click')) AS t(user_id, ts, event) GROUP BY user_id",
};

const MAX_EVENTS: usize = 32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct Modes {
    strict_order: bool,
    strict_deduplication: bool,
    strict_increase: bool,
    strict_once: bool,
}

impl Modes {
    fn parse(text: &str) -> Result<Modes> {
        let mut m = Modes::default();
        for mode in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match mode {
                "strict_order" => m.strict_order = true,
                "strict_deduplication" => m.strict_deduplication = true,
                "strict_increase" => m.strict_increase = true,
                "strict_once" => m.strict_once = true,
                other => {
                    return plan_err!(
                        "window_funnel: unknown mode `{other}`, expected strict_order, strict_deduplication, strict_increase or strict_once"
                    )
                }
            }
        }
        Ok(m)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunnel {
    signature: Signature,
}

impl WindowFunnel {
    pub fn new() -> Self {
        WindowFunnel {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Units per second of a timestamp column, so the window (in seconds) can be compared in
/// the column's own units. Integers are taken as they are.
fn units_per_second(t: &DataType) -> i64 {
    match t {
        DataType::Timestamp(TimeUnit::Second, _) | DataType::Date32 | DataType::Date64 => 1,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000_000,
        _ => 1,
    }
}

/// Timestamps as i64 in their native units (dates as seconds).
fn timestamps(array: &ArrayRef) -> Result<Int64Array> {
    Ok(match array.data_type() {
        DataType::Date32 => {
            let d = array.as_primitive::<datafusion::arrow::datatypes::Date32Type>();
            d.unary(|days| days as i64 * 86_400)
        }
        DataType::Date64 => {
            let d = array.as_primitive::<datafusion::arrow::datatypes::Date64Type>();
            d.unary(|ms| ms.div_euclid(1000))
        }
        _ => cast(array, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone(),
    })
}

impl AggregateUDFImpl for WindowFunnel {
    fn name(&self) -> &str {
        "window_funnel"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let usage = "window_funnel(window, ['modes',] timestamp, cond1, cond2, ...)";
        if arg_types.len() < 3 {
            return plan_err!(
                "window_funnel needs a window, a timestamp and at least one condition: {usage}"
            );
        }
        if !arg_types[0].is_integer() {
            return plan_err!(
                "window_funnel: the window must be an integer literal, got {}",
                arg_types[0]
            );
        }
        let has_modes = is_string(&arg_types[1]) && !arg_types[1].is_null();
        let ts_at = if has_modes { 2 } else { 1 };
        if arg_types.len() < ts_at + 2 {
            return plan_err!(
                "window_funnel needs at least one condition after the timestamp: {usage}"
            );
        }
        if arg_types.len() - ts_at - 1 > MAX_EVENTS {
            return plan_err!("window_funnel takes at most {MAX_EVENTS} conditions");
        }
        let ts = &arg_types[ts_at];
        if !(ts.is_integer()
            || matches!(
                ts,
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
            ))
        {
            return plan_err!("window_funnel: the timestamp must be a TIMESTAMP, DATE or integer column, got {ts}");
        }
        let mut out = vec![DataType::Int64];
        if has_modes {
            out.push(DataType::Utf8);
        }
        out.push(if ts.is_integer() {
            DataType::Int64
        } else {
            ts.clone()
        });
        for (i, t) in arg_types[ts_at + 1..].iter().enumerate() {
            if !matches!(t, DataType::Boolean | DataType::Null) {
                return plan_err!(
                    "window_funnel: condition {} must be BOOLEAN, got {t}",
                    i + 1
                );
            }
            out.push(DataType::Boolean);
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str, t: DataType| {
            Arc::new(Field::new(
                format!("{}[{name}]", args.name),
                DataType::List(Arc::new(Field::new_list_field(t, true))),
                true,
            ))
        };
        Ok(vec![
            list("ts", DataType::Int64),
            list("event", DataType::UInt8),
            list("id", DataType::UInt64),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let literal = |i: usize| {
            args.exprs
                .get(i)
                .and_then(|e| e.downcast_ref::<Literal>())
                .map(|l| l.value().clone())
        };
        let window = match literal(0) {
            Some(v) if !v.is_null() => match v.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(w)) if w >= 0 => w,
                _ => return plan_err!("window_funnel: the window must be a non-negative integer"),
            },
            _ => return plan_err!("window_funnel: the window must be an integer literal"),
        };
        let has_modes = args
            .expr_fields
            .get(1)
            .map(|f| is_string(f.data_type()) && !f.data_type().is_null())
            .unwrap_or(false);
        let modes = if has_modes {
            match literal(1) {
                Some(v) => Modes::parse(super::args::scalar_str(&v).unwrap_or(""))?,
                None => return plan_err!("window_funnel: the modes must be a string literal"),
            }
        } else {
            Modes::default()
        };
        let ts_at = if has_modes { 2 } else { 1 };
        let scale = units_per_second(args.expr_fields[ts_at].data_type());
        let events = args.exprs.len() - ts_at - 1;
        Ok(Box::new(FunnelAccumulator {
            window: window.saturating_mul(scale),
            modes,
            ts_at,
            events,
            list: Vec::new(),
            next_id: 1,
        }))
    }
}

#[derive(Debug)]
struct FunnelAccumulator {
    window: i64,
    modes: Modes,
    ts_at: usize,
    events: usize,
    /// (timestamp, event level 1..=N or 0 for "no condition" in strict_order, row id)
    list: Vec<(i64, u8, u64)>,
    next_id: u64,
}

impl FunnelAccumulator {
    fn level(&mut self) -> u8 {
        let n = self.events;
        if self.list.is_empty() {
            return 0;
        }
        if !self.modes.strict_order && n == 1 {
            return 1;
        }
        self.list.sort();
        if self.modes.strict_once {
            self.level_strict_once()
        } else {
            self.level_default()
        }
    }

    fn max_reached(reached: &[bool]) -> u8 {
        reached
            .iter()
            .rposition(|r| *r)
            .map(|i| i as u8 + 1)
            .unwrap_or(0)
    }

    fn level_default(&self) -> u8 {
        let n = self.events;
        let m = self.modes;
        // For each level: (first timestamp of the chain, timestamp of this step).
        let mut steps: Vec<Option<(i64, i64)>> = vec![None; n];
        let mut first_event = false;
        for &(ts, event, _) in &self.list {
            if m.strict_order && event == 0 {
                if first_event {
                    break;
                }
                continue;
            }
            let idx = event as usize - 1;
            if idx == 0 {
                steps[0] = Some((ts, ts));
                first_event = true;
            } else if m.strict_deduplication && steps[idx].is_some() {
                return Self::max_reached(&steps.iter().map(Option::is_some).collect::<Vec<_>>());
            } else if m.strict_order && first_event && steps[idx - 1].is_none() {
                return steps.iter().position(Option::is_none).unwrap_or(n) as u8;
            } else if let Some((first, prev)) = steps[idx - 1] {
                let mut matched = ts <= first.saturating_add(self.window);
                if m.strict_increase {
                    matched = matched && prev < ts;
                }
                if matched {
                    steps[idx] = Some((first, ts));
                    if idx + 1 == n {
                        return n as u8;
                    }
                }
            }
        }
        Self::max_reached(&steps.iter().map(Option::is_some).collect::<Vec<_>>())
    }

    /// strict_once: a row counts at most once in a chain; every partial chain is tracked
    /// because one row can satisfy several conditions.
    fn level_strict_once(&self) -> u8 {
        let n = self.events;
        let m = self.modes;
        #[derive(Clone)]
        struct Chain {
            first: i64,
            last: i64,
            path: [u64; MAX_EVENTS],
        }
        let mut chains: Vec<Vec<Chain>> = vec![Vec::new(); n];
        let mut first_event = false;
        for &(ts, event, id) in &self.list {
            if m.strict_order && event == 0 {
                if first_event {
                    break;
                }
                continue;
            }
            let idx = event as usize - 1;
            if idx == 0 {
                let mut path = [0u64; MAX_EVENTS];
                path[0] = id;
                chains[0].push(Chain {
                    first: ts,
                    last: ts,
                    path,
                });
                first_event = true;
            } else if m.strict_deduplication && !chains[idx].is_empty() {
                return Self::max_reached(
                    &chains.iter().map(|c| !c.is_empty()).collect::<Vec<_>>(),
                );
            } else if m.strict_order && first_event && chains[idx - 1].is_empty() {
                return chains.iter().position(Vec::is_empty).unwrap_or(n) as u8;
            } else if !chains[idx - 1].is_empty() {
                let mut k = 0;
                while k < chains[idx - 1].len() {
                    let c = chains[idx - 1][k].clone();
                    let mut matched = ts <= c.first.saturating_add(self.window);
                    if !matched && chains[idx - 1].len() > 1 {
                        chains[idx - 1].remove(k);
                        continue;
                    }
                    matched = matched && !c.path[..idx].contains(&id);
                    if matched && m.strict_increase {
                        matched = c.last < ts;
                    }
                    if matched {
                        let mut path = c.path;
                        path[idx] = id;
                        chains[idx].push(Chain {
                            first: c.first,
                            last: ts,
                            path,
                        });
                        if idx + 1 == n {
                            return n as u8;
                        }
                    }
                    k += 1;
                }
            }
        }
        Self::max_reached(&chains.iter().map(|c| !c.is_empty()).collect::<Vec<_>>())
    }
}

fn list_values<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    list: &ListArray,
    row: usize,
) -> Option<datafusion::arrow::array::PrimitiveArray<T>> {
    if list.is_null(row) {
        return None;
    }
    Some(list.value(row).as_primitive::<T>().clone())
}

impl Accumulator for FunnelAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let ts = timestamps(&values[self.ts_at])?;
        let conds: Vec<&BooleanArray> = values[self.ts_at + 1..]
            .iter()
            .map(|a| a.as_boolean())
            .collect();
        for row in 0..ts.len() {
            if ts.is_null(row) {
                continue;
            }
            let t = ts.value(row);
            let mut any = false;
            for (i, c) in conds.iter().enumerate().rev() {
                if c.is_valid(row) && c.value(row) {
                    self.list.push((t, i as u8 + 1, self.next_id));
                    any = true;
                }
            }
            if self.modes.strict_order && !any {
                self.list.push((t, 0, self.next_id));
            }
            self.next_id += 1;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int32(Some(self.level() as i32)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.list.capacity() * std::mem::size_of::<(i64, u8, u64)>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let ts: Int64Array = self.list.iter().map(|e| Some(e.0)).collect();
        let ev: UInt8Array = self.list.iter().map(|e| Some(e.1)).collect();
        let id: UInt64Array = self.list.iter().map(|e| Some(e.2)).collect();
        let wrap = |a: ArrayRef| {
            let field = Arc::new(Field::new_list_field(a.data_type().clone(), true));
            ScalarValue::List(Arc::new(ListArray::new(
                field,
                OffsetBuffer::from_lengths([a.len()]),
                a,
                None,
            )))
        };
        Ok(vec![
            wrap(Arc::new(ts)),
            wrap(Arc::new(ev)),
            wrap(Arc::new(id)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (ts, ev, id) = (
            states[0].as_list::<i32>(),
            states[1].as_list::<i32>(),
            states[2].as_list::<i32>(),
        );
        for row in 0..ts.len() {
            let (Some(t), Some(e), Some(i)) = (
                list_values::<Int64Type>(ts, row),
                list_values::<UInt8Type>(ev, row),
                list_values::<UInt64Type>(id, row),
            ) else {
                continue;
            };
            if t.len() != e.len() || t.len() != i.len() {
                return exec_err!("window_funnel: inconsistent state");
            }
            // Row ids from another partial state are shifted so they stay distinct.
            let offset = self.next_id;
            let mut max_id = self.next_id;
            for k in 0..t.len() {
                let new_id = i.value(k) + offset;
                max_id = max_id.max(new_id + 1);
                self.list.push((t.value(k), e.value(k), new_id));
            }
            self.next_id = max_id;
        }
        Ok(())
    }
}
