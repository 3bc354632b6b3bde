//! # familiar-reports
//!
//! The reports familiar writes — Markdown, HTML and SVG charts, and a `summary.json` — from the
//! tables its other crates produce:
//! - [`frequency`]: concept frequency versus accuracy (Udandarao et al. 2024): log-linear fits,
//!   correlations, binned curves, from the `concept_frequency` and `zero_shot` tables via SQL;
//! - [`attribution`]: what an attribution run ranks (Ruis et al. 2024): power laws of influence,
//!   concentration, correlations of influence vectors within and across prompt kinds, the top
//!   documents shown;
//! - [`priming`]: the priming experiment's spread against keyword probability;
//! - [`svg`], [`html`]: deterministic charts and the pages that hold them.
#![warn(missing_docs)]

pub mod attribution;
pub mod frequency;
pub mod html;
pub mod priming;
pub mod svg;
