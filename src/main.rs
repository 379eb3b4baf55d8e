//! The `sluice` binary: parse the command line, run the command, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = sluice::cli::main();
    ExitCode::from(code as u8)
}
