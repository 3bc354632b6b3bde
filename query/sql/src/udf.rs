//! Functions frequency studies need that DataFusion lacks.
//!
//! - `spearman(x, y)` (aggregate): Spearman's rank correlation — the Pearson correlation of the
//!   ranks, ties given their average rank. Rows where either value is NULL or NaN are left out;
//!   NULL when fewer than two rows remain or either side is constant.
//! - `log_bin(x, lo, hi, n)`: the bin (0 … n−1) of `x` among `n` equal-width bins of `ln x` over
//!   `[ln lo, ln hi]` (Udandarao et al. 2024 bin concept frequencies this way). A bin holds its
//!   lower edge; `hi` is in the last bin; a value within 10⁻⁹ bin widths below an edge counts to
//!   the bin above it (so that edges computed in floating point land where they belong). NULL when
//!   `x` is NULL, not positive, or outside `[lo, hi]`. `lo` and `hi` are usually scalar subqueries
//!   (`(SELECT min(c) FROM t)`).
//! - `log_bin_center(bin, lo, hi, n)`: the geometric center of that bin, `exp(ln lo + (bin + ½) w)`
//!   with `w = (ln hi − ln lo) / n` — where to plot a binned mean.
//!
//! - `json_str(json, key)`: the string (or number, as text) at top-level `key` of a JSON object
//!   held as text — e.g. a probe's `labels` in activation_stats; NULL when the text is not an
//!   object or has no such key.
//!
//! A log-linear fit needs no function of its own: with `lx = log10(count)`, `regr_slope(y, lx)` is
//! the slope per decade, `regr_intercept(y, lx)` the intercept, `regr_r2(y, lx)` R² and
//! `corr(y, lx)` Pearson's r.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    create_udaf, create_udf, Accumulator, AggregateUDF, ColumnarValue, ScalarUDF, Volatility,
};
use datafusion::prelude::SessionContext;
use familiar::stats::spearman;

/// The scalar functions of this module.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![
        create_udf(
            "log_bin",
            vec![
                DataType::Float64,
                DataType::Float64,
                DataType::Float64,
                DataType::Int64,
            ],
            DataType::Int64,
            Volatility::Immutable,
            Arc::new(log_bin),
        ),
        create_udf(
            "log_bin_center",
            vec![
                DataType::Int64,
                DataType::Float64,
                DataType::Float64,
                DataType::Int64,
            ],
            DataType::Float64,
            Volatility::Immutable,
            Arc::new(log_bin_center),
        ),
        create_udf(
            "json_str",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(json_str),
        ),
    ]
}

/// The aggregate functions of this module.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![create_udaf(
        "spearman",
        vec![DataType::Float64, DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::<Spearman>::default())),
        Arc::new(vec![list_type(), list_type()]),
    )]
}

/// Registers every function of this module with `ctx`.
pub fn register(ctx: &SessionContext) {
    for f in aggregate_functions() {
        ctx.register_udaf(f);
    }
    for f in scalar_functions() {
        ctx.register_udf(f);
    }
}

/// Registers every function of this module with a session state (or any function registry).
pub fn register_with(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for f in aggregate_functions() {
        registry.register_udaf(Arc::new(f))?;
    }
    for f in scalar_functions() {
        registry.register_udf(Arc::new(f))?;
    }
    Ok(())
}

/// The value at top-level `key` of the JSON object `text`, as text (strings unquoted).
pub fn json_value(text: &str, key: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get(key)?
    {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn json_str(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let (Some(text), Some(key)) = (a[0].as_string_opt::<i32>(), a[1].as_string_opt::<i32>()) else {
        return exec_err!("json_str: expected two text arguments");
    };
    let out: StringArray = (0..text.len())
        .map(|i| {
            if text.is_null(i) || key.is_null(i) {
                None
            } else {
                json_value(text.value(i), key.value(i))
            }
        })
        .collect();
    result(Arc::new(out), scalar)
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

/// The pairs seen so far; the state is the two columns as lists.
#[derive(Debug, Default)]
struct Spearman {
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Spearman {
    fn push_pairs(&mut self, x: &Float64Array, y: &Float64Array) {
        for i in 0..x.len() {
            if x.is_valid(i) && y.is_valid(i) {
                let (a, b) = (x.value(i), y.value(i));
                if !a.is_nan() && !b.is_nan() {
                    self.x.push(a);
                    self.y.push(b);
                }
            }
        }
    }
}

fn as_list(v: &[f64]) -> ScalarValue {
    let list =
        ListArray::from_iter_primitive::<Float64Type, _, _>(vec![Some(v.iter().map(|x| Some(*x)))]);
    ScalarValue::List(Arc::new(list))
}

impl Accumulator for Spearman {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (Some(x), Some(y)) = (
            values
                .first()
                .and_then(|a| a.as_primitive_opt::<Float64Type>()),
            values
                .get(1)
                .and_then(|a| a.as_primitive_opt::<Float64Type>()),
        ) else {
            return exec_err!("spearman expects two float64 columns");
        };
        self.push_pairs(x, y);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(spearman(&self.x, &self.y)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 8 * (self.x.capacity() + self.y.capacity())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![as_list(&self.x), as_list(&self.y)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(xs), Some(ys)) = (
            states.first().and_then(|a| a.as_list_opt::<i32>()),
            states.get(1).and_then(|a| a.as_list_opt::<i32>()),
        ) else {
            return exec_err!("spearman: unexpected state");
        };
        for i in 0..xs.len() {
            if xs.is_valid(i) && ys.is_valid(i) {
                let (x, y) = (xs.value(i), ys.value(i));
                match (
                    x.as_primitive_opt::<Float64Type>(),
                    y.as_primitive_opt::<Float64Type>(),
                ) {
                    (Some(x), Some(y)) => self.push_pairs(x, y),
                    _ => return exec_err!("spearman: unexpected state"),
                }
            }
        }
        Ok(())
    }
}

/// Arguments as arrays of the batch's length, and whether they were all scalars.
fn arrays(args: &[ColumnarValue]) -> Result<(Vec<ArrayRef>, bool)> {
    let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    Ok((ColumnarValue::values_to_arrays(args)?, scalar))
}

fn result(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// Bin width of `n` bins over `[ln lo, ln hi]`, checking the arguments.
fn width(name: &str, lo: f64, hi: f64, n: i64) -> Result<f64> {
    if n < 1 {
        return exec_err!("{name}: the number of bins must be at least 1, not {n}");
    }
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return exec_err!("{name}: expected 0 < lo <= hi, got lo = {lo}, hi = {hi}");
    }
    Ok((hi.ln() - lo.ln()) / n as f64)
}

/// The bin of `x` (see the module documentation).
pub fn bin_of(x: f64, lo: f64, hi: f64, n: i64) -> Result<Option<i64>> {
    let w = width("log_bin", lo, hi, n)?;
    if !(x >= lo && x <= hi) {
        return Ok(None);
    }
    if w == 0.0 {
        return Ok(Some(0));
    }
    let t = (x.ln() - lo.ln()) / w;
    let mut b = t.floor();
    if b + 1.0 - t < 1e-9 {
        b += 1.0;
    }
    Ok(Some((b as i64).clamp(0, n - 1)))
}

fn f64_arg<'a>(name: &str, a: &'a ArrayRef) -> Result<&'a Float64Array> {
    match a.as_primitive_opt::<Float64Type>() {
        Some(a) => Ok(a),
        None => exec_err!("{name}: expected a float64 argument, got {}", a.data_type()),
    }
}

fn i64_arg<'a>(name: &str, a: &'a ArrayRef) -> Result<&'a Int64Array> {
    match a.as_primitive_opt::<Int64Type>() {
        Some(a) => Ok(a),
        None => exec_err!("{name}: expected an int64 argument, got {}", a.data_type()),
    }
}

fn log_bin(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let (x, lo, hi, n) = (
        f64_arg("log_bin", &a[0])?,
        f64_arg("log_bin", &a[1])?,
        f64_arg("log_bin", &a[2])?,
        i64_arg("log_bin", &a[3])?,
    );
    let mut out = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        if x.is_null(i) || lo.is_null(i) || hi.is_null(i) || n.is_null(i) {
            out.push(None);
            continue;
        }
        out.push(bin_of(x.value(i), lo.value(i), hi.value(i), n.value(i))?);
    }
    result(Arc::new(Int64Array::from(out)), scalar)
}

fn log_bin_center(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let (a, scalar) = arrays(args)?;
    let name = "log_bin_center";
    let (bin, lo, hi, n) = (
        i64_arg(name, &a[0])?,
        f64_arg(name, &a[1])?,
        f64_arg(name, &a[2])?,
        i64_arg(name, &a[3])?,
    );
    let mut out = Vec::with_capacity(bin.len());
    for i in 0..bin.len() {
        if bin.is_null(i) || lo.is_null(i) || hi.is_null(i) || n.is_null(i) {
            out.push(None);
            continue;
        }
        let w = width(name, lo.value(i), hi.value(i), n.value(i))?;
        let b = bin.value(i);
        if b < 0 || b >= n.value(i) {
            return exec_err!("{name}: bin {b} is not among 0 … {}", n.value(i) - 1);
        }
        out.push(Some((lo.value(i).ln() + (b as f64 + 0.5) * w).exp()));
    }
    result(Arc::new(Float64Array::from(out)), scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_by_key() {
        let t = r#"{"concept": "zelxir exoexo", "n": 3, "none": null}"#;
        assert_eq!(json_value(t, "concept").as_deref(), Some("zelxir exoexo"));
        assert_eq!(json_value(t, "n").as_deref(), Some("3"));
        assert_eq!(json_value(t, "none"), None);
        assert_eq!(json_value(t, "missing"), None);
        assert_eq!(json_value("not json", "concept"), None);
        assert_eq!(json_value("[1, 2]", "concept"), None);
    }

    #[test]
    fn bins_at_their_edges() {
        // 3 bins over [1, 1000]: edges 1, 10, 100, 1000.
        let bin = |x| bin_of(x, 1.0, 1000.0, 3).unwrap();
        assert_eq!(bin(1.0), Some(0));
        assert_eq!(bin(9.999), Some(0));
        assert_eq!(bin(10.0), Some(1));
        assert_eq!(bin(99.0), Some(1));
        assert_eq!(bin(100.0), Some(2));
        assert_eq!(bin(1000.0), Some(2));
        assert_eq!(bin(0.5), None);
        assert_eq!(bin(1000.5), None);
        assert_eq!(bin(f64::NAN), None);
        // Every computed edge of 12 bins lands in the bin above it.
        let (lo, hi) = (3.0f64, 7.0e6f64);
        let w = (hi.ln() - lo.ln()) / 12.0;
        for k in 0..12 {
            let edge = (lo.ln() + k as f64 * w).exp();
            assert_eq!(bin_of(edge, lo, hi, 12).unwrap(), Some(k), "edge {k}");
        }
        // One value: one bin.
        assert_eq!(bin_of(5.0, 5.0, 5.0, 12).unwrap(), Some(0));
        assert!(bin_of(5.0, 0.0, 5.0, 12).is_err());
        assert!(bin_of(5.0, 6.0, 5.0, 12).is_err());
        assert!(bin_of(5.0, 1.0, 5.0, 0).is_err());
    }
}
