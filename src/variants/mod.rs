//! Image variants: resizing, format conversion and metadata stripping.
//!
//! - [`params`]: pure query parsing ([`VariantSpec::parse`]) and resolution
//!   against `Accept` and the original ([`VariantSpec::resolve`] gives a
//!   [`Resolved`] with a canonical [`Resolved::key`]).

pub mod params;

pub use params::{Fit, OutputFormat, Resolved, VariantError, VariantSpec};
