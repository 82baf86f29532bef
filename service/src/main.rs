//! The `diptych` binary.

fn main() {}
