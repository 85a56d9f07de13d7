//! Test-only crate: see `tests/` and the package description.
