//! Scalar functions under the per-query memory limit. DataFusion's memory
//! pool sees what operators hold, but not the value a function builds:
//! `repeat('x', 2147483647)` or `array_repeat(1, 1000000000)` would
//! allocate gigabytes in one call, before any pool is asked. So every
//! scalar function of the session is wrapped ([`bound_all`]):
//!
//! - functions whose output can be far larger than their input
//!   ([`output_bound`]: `repeat`, `lpad`/`rpad`, `replace`,
//!   `regexp_replace`, `array_repeat`, `array_resize`, `range`,
//!   `generate_series`) are refused *before* they run when the most they
//!   could build passes the limit;
//! - every other function is checked after it runs: an output larger than
//!   both the limit and its inputs fails the query (and is freed at once).
//!
//! The wrapper delegates everything else to the function it wraps, so
//! planning, simplification and types are unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{ExprSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};

/// Most steps one call of a function whose time grows faster than its input
/// may take: about a second of one core. The timeout cannot stop a call
/// that is running, only the query between calls.
const MAX_STEPS_PER_CALL: u128 = 200_000_000;

/// Bytes one element of a list is counted as when nothing better is known.
const ELEMENT_BYTES: u128 = 16;

/// Replaces every scalar function of `ctx` with one bounded by `limit`
/// bytes of output per call.
pub fn bound_all(ctx: &SessionContext, limit: usize) {
    let functions: Vec<Arc<ScalarUDF>> = ctx.state().scalar_functions().values().cloned().collect();
    for function in functions {
        if function.inner().is::<Bounded>() {
            continue;
        }
        ctx.register_udf(Bounded::wrap(function.as_ref().clone(), limit));
    }
}

/// A scalar function whose output is kept under `limit` bytes per call.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    limit: usize,
}

impl Bounded {
    fn wrap(inner: ScalarUDF, limit: usize) -> ScalarUDF {
        ScalarUDF::new_from_impl(Bounded { inner, limit })
    }

    fn over_limit(&self, what: &str, bytes: u128) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{}() would build {what} {bytes} bytes, over the query's limit of {} bytes",
            self.inner.name(),
            self.limit
        ))
    }
}

#[warn(clippy::missing_trait_methods)]
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        if let Some(work) = work_bound(self.inner.name(), &args.args, rows)
            && work > MAX_STEPS_PER_CALL
        {
            return Err(DataFusionError::Execution(format!(
                "{}() would take up to {work} steps on this batch, over the {MAX_STEPS_PER_CALL} \
                 one call may take (a call cannot be stopped once it runs)",
                self.inner.name()
            )));
        }
        if let Some(bound) = output_bound(self.inner.name(), &args.args, rows)
            && bound > self.limit as u128
        {
            return Err(self.over_limit("up to", bound));
        }
        let input: u128 = args.args.iter().map(|a| value_bytes(a, 1)).sum();
        let output = self.inner.invoke_with_args(args)?;
        let built = value_bytes(&output, 1);
        if built > self.limit as u128 && built > input {
            return Err(self.over_limit("", built));
        }
        Ok(output)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.inner
            .inner()
            .with_updated_config(config)
            .map(|updated| Bounded::wrap(updated, self.limit))
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }
}

/// The most bytes `function` could build from `args` over `rows` rows, for
/// the functions whose output can be far larger than their input; `None`
/// for every other function.
pub fn output_bound(function: &str, args: &[ColumnarValue], rows: usize) -> Option<u128> {
    let arg = |i: usize| args.get(i);
    let bound = match function {
        // Each row: its value, `n` times.
        "repeat" | "array_repeat" => {
            let (value, n) = (arg(0)?, arg(1)?);
            let each = value_bytes(value, rows).saturating_mul(max_count(n));
            let widest = widest_value(value).saturating_mul(total_count(n, rows));
            each.min(widest)
        }
        // Each row: `n` characters, each up to 4 bytes unless all is ASCII.
        "lpad" | "rpad" => {
            let char_bytes = if args.iter().all(is_ascii) { 1 } else { 4 };
            total_count(arg(1)?, rows).saturating_mul(char_bytes)
        }
        // Each of up to len + 1 matches becomes the replacement.
        "replace" | "regexp_replace" => {
            let (text, replacement) = (arg(0)?, arg(2)?);
            let text_bytes = value_bytes(text, rows);
            let matches = text_bytes.saturating_add(rows as u128);
            text_bytes.saturating_add(matches.saturating_mul(widest_value(replacement)))
        }
        // Each row: its list, padded to `n` elements with the fill value.
        "array_resize" => {
            let fill = arg(2).map_or(ELEMENT_BYTES, |f| widest_value(f).max(ELEMENT_BYTES));
            let padding = total_count(arg(1)?, rows).saturating_mul(fill);
            padding.saturating_add(value_bytes(arg(0)?, rows))
        }
        "range" | "generate_series" => range_elements(args, rows)?.saturating_mul(ELEMENT_BYTES),
        _ => return None,
    };
    Some(bound)
}

/// The most steps `function` could take on `args` over `rows` rows, for
/// functions whose time grows faster than their input; `None` for every
/// other function. `levenshtein` compares every character of one string
/// with every character of the other.
fn work_bound(function: &str, args: &[ColumnarValue], rows: usize) -> Option<u128> {
    match (function, args) {
        ("levenshtein", [a, b]) => Some(
            widest_value(a)
                .saturating_mul(widest_value(b))
                .saturating_mul(rows.max(1) as u128),
        ),
        _ => None,
    }
}

/// Elements `range(start, stop, step)` (or `range(stop)`) yields over
/// `rows` rows: for integers, and for dates and timestamps (as
/// nanoseconds, with the step at its shortest: a month as 28 days, a day
/// as 23 hours). `None` when the arguments are of neither kind.
fn range_elements(args: &[ColumnarValue], rows: usize) -> Option<u128> {
    let ints: Vec<Vec<Option<i64>>> = match args {
        [start, stop, step] if is_temporal(start) => vec![
            nanos_values(start, rows)?,
            nanos_values(stop, rows)?,
            interval_values(step, rows)?,
        ],
        _ => args
            .iter()
            .map(|a| int_values(a, rows))
            .collect::<Option<_>>()?,
    };
    let at = |column: &Vec<Option<i64>>, row: usize| column.get(row).copied().flatten();
    let mut total: u128 = 0;
    for row in 0..rows {
        let (start, stop, step) = match ints.as_slice() {
            [stop] => (Some(0), at(stop, row), Some(1)),
            [start, stop] => (at(start, row), at(stop, row), Some(1)),
            [start, stop, step] => (at(start, row), at(stop, row), at(step, row)),
            _ => return None,
        };
        let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
            continue;
        };
        if step != 0 {
            total =
                total.saturating_add(u128::from(start.abs_diff(stop) / step.unsigned_abs()) + 1);
        }
    }
    Some(total)
}

fn is_temporal(value: &ColumnarValue) -> bool {
    value.data_type().is_temporal()
}

/// A date or timestamp argument as nanoseconds since the epoch, per row.
fn nanos_values(value: &ColumnarValue, rows: usize) -> Option<Vec<Option<i64>>> {
    let nanos = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let array = value.to_array(rows).ok()?;
    let as_nanos = cast(&cast(&array, &nanos).ok()?, &DataType::Int64).ok()?;
    Some(as_nanos.as_primitive::<Int64Type>().iter().collect())
}

/// An interval argument as its shortest length in nanoseconds, per row.
fn interval_values(value: &ColumnarValue, rows: usize) -> Option<Vec<Option<i64>>> {
    const DAY_NANOS: i64 = 23 * 3600 * 1_000_000_000;
    let array = value.to_array(rows).ok()?;
    let intervals = cast(&array, &DataType::Interval(IntervalUnit::MonthDayNano)).ok()?;
    let intervals = intervals.as_primitive::<IntervalMonthDayNanoType>();
    Some(
        intervals
            .iter()
            .map(|i| {
                i.map(|i| {
                    let days = i64::from(i.months) * 28 + i64::from(i.days);
                    days.saturating_mul(DAY_NANOS).saturating_add(i.nanoseconds)
                })
            })
            .collect(),
    )
}

/// The integer values of an argument, one per row (a scalar repeated).
fn int_values(value: &ColumnarValue, rows: usize) -> Option<Vec<Option<i64>>> {
    match value {
        ColumnarValue::Scalar(s) => {
            if !s.data_type().is_integer() {
                return None;
            }
            let v = match s.cast_to(&DataType::Int64).ok()? {
                ScalarValue::Int64(v) => v,
                _ => return None,
            };
            Some(vec![v; rows])
        }
        ColumnarValue::Array(a) => {
            if !a.data_type().is_integer() {
                return None;
            }
            let ints = cast(a, &DataType::Int64).ok()?;
            Some(ints.as_primitive::<Int64Type>().iter().collect())
        }
    }
}

/// The sum over `rows` rows of a count argument, negatives as 0.
fn total_count(count: &ColumnarValue, rows: usize) -> u128 {
    match count_values(count) {
        Counts::Scalar(n) => n.saturating_mul(rows as u128),
        Counts::Array { sum, .. } => sum,
    }
}

/// The largest count a count argument gives.
fn max_count(count: &ColumnarValue) -> u128 {
    match count_values(count) {
        Counts::Scalar(n) => n,
        Counts::Array { max, .. } => max,
    }
}

enum Counts {
    Scalar(u128),
    Array { sum: u128, max: u128 },
}

fn count_values(count: &ColumnarValue) -> Counts {
    let non_negative = |v: i64| u128::try_from(v).unwrap_or(0);
    match count {
        ColumnarValue::Scalar(s) => Counts::Scalar(match s.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(v))) => non_negative(v),
            _ => 0,
        }),
        ColumnarValue::Array(a) => match cast(a, &DataType::Int64) {
            Ok(ints) => {
                let ints = ints.as_primitive::<Int64Type>();
                let positive = ints.iter().flatten().map(non_negative);
                Counts::Array {
                    sum: positive.clone().sum(),
                    max: positive.max().unwrap_or(0),
                }
            }
            // Not a number: the function itself will refuse it.
            Err(_) => Counts::Array { sum: 0, max: 0 },
        },
    }
}

/// Bytes a value holds: a scalar counted `rows` times, an array once.
fn value_bytes(value: &ColumnarValue, rows: usize) -> u128 {
    match value {
        ColumnarValue::Scalar(s) => (s.size() as u128).saturating_mul(rows.max(1) as u128),
        ColumnarValue::Array(a) => a.get_array_memory_size() as u128,
    }
}

/// Bytes of the largest single value of an argument: exact for strings,
/// the whole array otherwise (an upper bound).
fn widest_value(value: &ColumnarValue) -> u128 {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => s.len() as u128,
        ColumnarValue::Scalar(s) => s.size() as u128,
        ColumnarValue::Array(a) => {
            let longest = match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().iter().flatten().map(str::len).max(),
                DataType::LargeUtf8 => a.as_string::<i64>().iter().flatten().map(str::len).max(),
                DataType::Utf8View => a.as_string_view().iter().flatten().map(str::len).max(),
                _ => return a.get_array_memory_size() as u128,
            };
            longest.unwrap_or(0) as u128
        }
    }
}

/// Whether a (string) argument is all ASCII; other types count as ASCII.
fn is_ascii(value: &ColumnarValue) -> bool {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => s.is_ascii(),
        ColumnarValue::Scalar(_) => true,
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().is_ascii(),
            DataType::LargeUtf8 => a.as_string::<i64>().is_ascii(),
            DataType::Utf8View => a.as_string_view().iter().flatten().all(str::is_ascii),
            _ => true,
        },
    }
}
