//! `window_funnel`: ClickHouse's `windowFunnel(window[, mode])(timestamp, cond1, ...)` as a
//! DataFusion aggregate, so existing funnel analyses port unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, ListArray, UInt64Array,
    UInt8Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Int64Type, TimeUnit, UInt64Type, UInt8Type,
};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
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
        Ok(Box::new(FunnelAccumulator {
            spec: FunnelSpec::from_args(&args)?,
            list: Vec::new(),
            next_id: 1,
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    /// One flat list of events for all groups: a `GROUP BY user` over tens of millions of
    /// users would otherwise hold a boxed accumulator and a small vector per user, far more
    /// memory than the events themselves, and build a list value per user for every spill.
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(FunnelGroups {
            spec: FunnelSpec::from_args(&args)?,
            events: Vec::new(),
            groups: 0,
            next_id: 1,
        }))
    }
}

/// (timestamp, event level 1..=N or 0 for "no condition" in strict_order, row id). A row
/// that meets several conditions gives several events with one id (strict_once counts a
/// row once); sorting puts a group's events in the order ClickHouse walks them.
type Event = (i64, u8, u64);

/// What a call's literal arguments say: the window in the timestamp's units, the modes,
/// where the timestamp is and how many conditions follow it.
#[derive(Debug, Clone, Copy)]
struct FunnelSpec {
    window: i64,
    modes: Modes,
    ts_at: usize,
    events: usize,
}

impl FunnelSpec {
    fn from_args(args: &AccumulatorArgs) -> Result<FunnelSpec> {
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
        Ok(FunnelSpec {
            window: window.saturating_mul(scale),
            modes,
            ts_at,
            events: args.exprs.len() - ts_at - 1,
        })
    }

    fn inputs<'a>(&self, values: &'a [ArrayRef]) -> Result<(Int64Array, Vec<&'a BooleanArray>)> {
        let ts = timestamps(&values[self.ts_at])?;
        let conds = values[self.ts_at + 1..]
            .iter()
            .map(|a| a.as_boolean())
            .collect();
        Ok((ts, conds))
    }

    /// The events of one input row, as (timestamp, level), through `push`; a row without
    /// a timestamp gives none.
    fn row_events(
        &self,
        ts: &Int64Array,
        conds: &[&BooleanArray],
        row: usize,
        mut push: impl FnMut(i64, u8),
    ) {
        if ts.is_null(row) {
            return;
        }
        let t = ts.value(row);
        let mut any = false;
        for (i, c) in conds.iter().enumerate().rev() {
            if c.is_valid(row) && c.value(row) {
                push(t, i as u8 + 1);
                any = true;
            }
        }
        if self.modes.strict_order && !any {
            push(t, 0);
        }
    }

    /// The deepest step one group's events reach.
    fn level(&self, list: &mut [Event]) -> u8 {
        if list.is_empty() {
            return 0;
        }
        if !self.modes.strict_order && self.events == 1 {
            return 1;
        }
        list.sort_unstable();
        if self.modes.strict_once {
            self.level_strict_once(list)
        } else {
            self.level_default(list)
        }
    }

    fn max_reached(reached: &[bool]) -> u8 {
        reached
            .iter()
            .rposition(|r| *r)
            .map(|i| i as u8 + 1)
            .unwrap_or(0)
    }

    fn level_default(&self, list: &[Event]) -> u8 {
        let n = self.events;
        let m = self.modes;
        // For each level: (first timestamp of the chain, timestamp of this step).
        let mut steps: Vec<Option<(i64, i64)>> = vec![None; n];
        let mut first_event = false;
        for &(ts, event, _) in list {
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
    fn level_strict_once(&self, list: &[Event]) -> u8 {
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
        for &(ts, event, id) in list {
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

/// The three list columns of the partial state, rows in the order given.
fn state_lists(rows: &[&[Event]]) -> Vec<ArrayRef> {
    let lengths = rows.iter().map(|r| r.len());
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
    let all = || rows.iter().flat_map(|r| r.iter());
    let ts: Int64Array = all().map(|e| Some(e.0)).collect();
    let ev: UInt8Array = all().map(|e| Some(e.1)).collect();
    let id: UInt64Array = all().map(|e| Some(e.2)).collect();
    let wrap = |a: ArrayRef| -> ArrayRef {
        let field = Arc::new(Field::new_list_field(a.data_type().clone(), true));
        Arc::new(ListArray::new(field, offsets.clone(), a, None))
    };
    vec![wrap(Arc::new(ts)), wrap(Arc::new(ev)), wrap(Arc::new(id))]
}

/// Reads partial states row by row, giving each row's events with their ids moved past
/// every id seen so far, so rows from different partial states never share an id.
fn merge_states(
    states: &[ArrayRef],
    next_id: &mut u64,
    mut push: impl FnMut(usize, Event),
) -> Result<()> {
    let (ts, ev, id) = (
        states[0].as_list::<i32>(),
        states[1].as_list::<i32>(),
        states[2].as_list::<i32>(),
    );
    if ts.value_offsets() != ev.value_offsets() || ts.value_offsets() != id.value_offsets() {
        return exec_err!("window_funnel: inconsistent state");
    }
    let (tv, evv, idv) = (
        ts.values().as_primitive::<Int64Type>().values(),
        ev.values().as_primitive::<UInt8Type>().values(),
        id.values().as_primitive::<UInt64Type>().values(),
    );
    let offsets = ts.value_offsets();
    for row in 0..ts.len() {
        if ts.is_null(row) {
            continue;
        }
        let base = *next_id;
        let mut max_id = base;
        for k in offsets[row] as usize..offsets[row + 1] as usize {
            let new_id = idv[k] + base;
            max_id = max_id.max(new_id + 1);
            push(row, (tv[k], evv[k], new_id));
        }
        *next_id = max_id;
    }
    Ok(())
}

#[derive(Debug)]
struct FunnelAccumulator {
    spec: FunnelSpec,
    list: Vec<Event>,
    next_id: u64,
}

impl Accumulator for FunnelAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (ts, conds) = self.spec.inputs(values)?;
        for row in 0..ts.len() {
            let id = self.next_id;
            let list = &mut self.list;
            self.spec
                .row_events(&ts, &conds, row, |t, e| list.push((t, e, id)));
            self.next_id += 1;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int32(Some(
            self.spec.level(&mut self.list) as i32
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.list.capacity() * std::mem::size_of::<Event>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        state_lists(&[&self.list])
            .into_iter()
            .map(|a| ScalarValue::try_from_array(&a, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let list = &mut self.list;
        merge_states(states, &mut self.next_id, |_, e| list.push(e))
    }
}

/// `window_funnel` for a whole GROUP BY: every group's events in one vector, tagged with
/// the group's index, and sorted into groups only when a result or a state is emitted.
#[derive(Debug)]
struct FunnelGroups {
    spec: FunnelSpec,
    events: Vec<Tagged>,
    groups: usize,
    next_id: u64,
}

/// An event with its group's index: 24 bytes, a third of what a boxed accumulator per
/// group costs before its first event.
#[derive(Debug, Clone, Copy)]
struct Tagged {
    group: u32,
    level: u8,
    ts: i64,
    id: u64,
}

impl FunnelGroups {
    fn note_groups(&mut self, total_num_groups: usize) -> Result<()> {
        if total_num_groups > u32::MAX as usize {
            return exec_err!("window_funnel: more than {} groups", u32::MAX);
        }
        self.groups = self.groups.max(total_num_groups);
        Ok(())
    }

    /// Takes the events of the groups `emit_to` asks for, grouped and in group order, and
    /// keeps the others renumbered from zero.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<u32>, Vec<Event>) {
        let n = match emit_to {
            EmitTo::All => self.groups,
            EmitTo::First(n) => n.min(self.groups),
        };
        // Counting sort by group: offsets of each group's run in `grouped`.
        let mut starts = vec![0u32; n + 1];
        for t in &self.events {
            if (t.group as usize) < n {
                starts[t.group as usize + 1] += 1;
            }
        }
        for g in 0..n {
            starts[g + 1] += starts[g];
        }
        let mut grouped = vec![(0i64, 0u8, 0u64); starts[n] as usize];
        let mut next = starts.clone();
        let mut kept = Vec::new();
        for t in std::mem::take(&mut self.events) {
            let g = t.group as usize;
            if g < n {
                grouped[next[g] as usize] = (t.ts, t.level, t.id);
                next[g] += 1;
            } else {
                kept.push(Tagged {
                    group: t.group - n as u32,
                    ..t
                });
            }
        }
        self.events = kept;
        self.groups -= n;
        (starts, grouped)
    }
}

impl GroupsAccumulator for FunnelGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.note_groups(total_num_groups)?;
        let (ts, conds) = self.spec.inputs(values)?;
        for (row, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !(f.is_valid(row) && f.value(row))) {
                continue;
            }
            let id = self.next_id;
            let events = &mut self.events;
            self.spec.row_events(&ts, &conds, row, |ts, level| {
                events.push(Tagged {
                    group: g as u32,
                    level,
                    ts,
                    id,
                })
            });
            self.next_id += 1;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (starts, mut grouped) = self.take(emit_to);
        let levels: Int32Array = starts
            .windows(2)
            .map(|w| Some(self.spec.level(&mut grouped[w[0] as usize..w[1] as usize]) as i32))
            .collect();
        Ok(Arc::new(levels))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (starts, grouped) = self.take(emit_to);
        let rows: Vec<&[Event]> = starts
            .windows(2)
            .map(|w| &grouped[w[0] as usize..w[1] as usize])
            .collect();
        Ok(state_lists(&rows))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.note_groups(total_num_groups)?;
        let events = &mut self.events;
        merge_states(values, &mut self.next_id, |row, (ts, level, id)| {
            events.push(Tagged {
                group: group_indices[row] as u32,
                level,
                ts,
                id,
            })
        })
    }

    /// Each row as a state of its own, for when the partial aggregate finds almost every
    /// row in a group of its own and passes rows through.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let (ts, conds) = self.spec.inputs(values)?;
        let mut flat = Vec::new();
        let mut ends = Vec::with_capacity(ts.len());
        for row in 0..ts.len() {
            if opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row)) {
                self.spec
                    .row_events(&ts, &conds, row, |t, e| flat.push((t, e, 0)));
            }
            ends.push(flat.len());
        }
        let mut start = 0;
        let rows: Vec<&[Event]> = ends
            .iter()
            .map(|&end| {
                let r = &flat[start..end];
                start = end;
                r
            })
            .collect();
        Ok(state_lists(&rows))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.events.capacity() * std::mem::size_of::<Tagged>()
    }
}
