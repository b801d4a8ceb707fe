//! The `licensor` binary: parses the command line and hands it to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    match licensor::cli::Cli::try_parse() {
        Ok(cli) => licensor::cli::run(cli),
        Err(error) => licensor::cli::parse_error(error).exit(),
    }
}
