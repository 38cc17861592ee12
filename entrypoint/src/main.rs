//! `cairn-entrypoint [--] CMD ARGS…`: see `--help` and the library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    cairn_entrypoint::program::main_with_args(std::env::args_os().skip(1))
}
