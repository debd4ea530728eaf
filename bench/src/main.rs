//! `tether-bench`: see the crate documentation and bench/README.md.
//!
//! ```text
//! tether-bench serve tokio|smol|async-std raw|session ADDR   # a tether subject
//! tether-bench load SPEC_JSON                                 # one run, one JSON line out
//! tether-bench engine SPEC_JSON                               # one engine run in process, one JSON line out
//! tether-bench engine [--quick] [--rounds N] [--secs W S] [--only WORD]   # the engine rows, a table
//! tether-bench all [--quick] [--rounds N] [--only WORD] [--out docs/BENCHMARKS.md] [--chart FILE]
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match tether_bench::runner::main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tether-bench: {err}");
            ExitCode::FAILURE
        }
    }
}
