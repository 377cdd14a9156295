//! `rill-examples`: runnable programs that show rill, one per file beside this crate's
//! `Cargo.toml` (run one with `cargo run --release --example <name>`).
