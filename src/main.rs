//! The `licensor` binary: parses the command line and hands it to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    licensor::cli::run(licensor::cli::Cli::parse())
}
