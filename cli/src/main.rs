//! `qcow`: placeholder until the command-line tool lands.
fn main() {}
