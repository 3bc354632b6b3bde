//! Non-finite values (NaN, ±∞) in what models hold and compute.
//!
//! A checkpoint with a NaN or an infinity, or finite weights that overflow f32 in a forward pass
//! (a norm scale of 3e38), makes every number downstream meaningless while code that ranks or
//! averages them carries on (`NaN > x` is false, so an argmax of NaN log-probabilities picks the
//! first choice). Weights are checked as they are loaded ([`super::weights::Weights::get`]);
//! what a model computes is checked by each command before it is reported or stored, and the
//! error ([`Error::NonFinite`]) names the item (query, document, probe, training step).

use std::fmt;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Where a slice's non-finite values are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFinite {
    /// How many values are not finite.
    pub count: usize,
    /// The index of the first.
    pub first: usize,
    /// Its value (NaN, inf or -inf).
    pub value: f64,
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} non-finite value{} (first at element {}: {})",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.first,
            self.value
        )
    }
}

/// f32 or f64.
pub trait Float: Copy {
    /// Neither NaN nor infinite.
    fn finite(self) -> bool;
    /// As f64 (exact).
    fn wide(self) -> f64;
}

impl Float for f32 {
    #[inline]
    fn finite(self) -> bool {
        self.is_finite()
    }
    #[inline]
    fn wide(self) -> f64 {
        f64::from(self)
    }
}

impl Float for f64 {
    #[inline]
    fn finite(self) -> bool {
        self.is_finite()
    }
    #[inline]
    fn wide(self) -> f64 {
        self
    }
}

/// The non-finite values of `values`, if any.
pub fn scan<T: Float>(values: &[T]) -> Option<NonFinite> {
    let first = values.iter().position(|x| !x.finite())?;
    Some(NonFinite {
        count: values[first..].iter().filter(|x| !x.finite()).count(),
        first,
        value: values[first].wide(),
    })
}

/// The non-finite values of a tensor (flattened, row-major), copied to the host.
pub fn scan_tensor(t: &Tensor) -> Result<Option<NonFinite>> {
    let bug = super::transformer::candle_error("finiteness check");
    let flat = t.flatten_all().map_err(&bug)?;
    Ok(match t.dtype() {
        DType::F64 => scan(&flat.to_vec1::<f64>().map_err(&bug)?),
        DType::F32 => scan(&flat.to_vec1::<f32>().map_err(&bug)?),
        _ => scan(
            &flat
                .to_dtype(DType::F32)
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(&bug)?,
        ),
    })
}

/// Why a model's output is not finite: the hint every [`Error::NonFinite`] of a model command
/// ends with.
pub const HINT: &str =
    "the model's weights overflow in floating point or are damaged, or its training diverged";

/// The error for `what` (e.g. "the log-probability of completion token 2") being `value`.
pub fn value_error(what: impl fmt::Display, value: f64) -> Error {
    Error::NonFinite(format!("{what} is {value} ({HINT})"))
}

/// The error for `what` (e.g. "the gradient row") holding the non-finite values `bad`.
pub fn values_error(what: impl fmt::Display, bad: &NonFinite) -> Error {
    Error::NonFinite(format!("{what} holds {bad} ({HINT})"))
}

/// `e` with `item` (the query, document, probe or step it concerns) in front of the message of a
/// model's error ([`Error::NonFinite`], [`Error::Device`], [`Error::OutOfMemory`]); other errors
/// unchanged.
pub fn within(e: Error, item: impl fmt::Display) -> Error {
    match e {
        Error::NonFinite(m) => Error::NonFinite(format!("{item}: {m}")),
        Error::Device(m) => Error::Device(format!("{item}: {m}")),
        Error::OutOfMemory(m) => Error::OutOfMemory(format!("{item}: {m}")),
        other => other,
    }
}

/// `Err` naming `what` when `value` is not finite.
pub fn check_value(what: impl fmt::Display, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(value_error(what, value))
    }
}

/// `Err` naming `what` when `values` hold a non-finite value.
pub fn check_values<T: Float>(what: impl fmt::Display, values: &[T]) -> Result<()> {
    match scan(values) {
        None => Ok(()),
        Some(bad) => Err(values_error(what, &bad)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_and_locates_non_finite_values() {
        assert_eq!(scan::<f32>(&[]), None);
        assert_eq!(scan(&[1.0f32, -3e38, 0.0]), None);
        let v = [0.0f32, 1.0, f32::NAN, 2.0, f32::INFINITY, f32::NEG_INFINITY];
        let bad = scan(&v).unwrap();
        assert_eq!((bad.count, bad.first), (3, 2));
        assert!(bad.value.is_nan());
        assert_eq!(
            bad.to_string(),
            "3 non-finite values (first at element 2: NaN)"
        );
        let one = scan(&[f64::NEG_INFINITY]).unwrap();
        assert_eq!(
            one.to_string(),
            "1 non-finite value (first at element 0: -inf)"
        );
        let t = Tensor::from_vec(
            vec![1.0f32, 2.0, f32::INFINITY, 4.0],
            (2, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let bad = scan_tensor(&t).unwrap().unwrap();
        assert_eq!((bad.count, bad.first, bad.value), (1, 2, f64::INFINITY));
    }

    #[test]
    fn errors_name_the_item_and_the_value() {
        let e = within(value_error("the training loss", f64::NAN), "step 7");
        let m = e.to_string();
        assert!(matches!(e, Error::NonFinite(_)));
        assert!(m.contains("step 7: the training loss is NaN"), "{m}");
        assert!(check_value("x", 1.0).is_ok());
        let e = within(
            check_values("the row", &[0.0f32, f32::NAN]).unwrap_err(),
            "document 3",
        );
        assert!(
            e.to_string()
                .contains("document 3: the row holds 1 non-finite value (first at element 1: NaN)"),
            "{e}"
        );
        // Other errors pass through unchanged.
        let e = within(Error::query("q"), "item");
        assert_eq!(e.to_string(), "invalid query: q");
    }
}
