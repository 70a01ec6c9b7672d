//! `musicfs`: mount a music collection as one clean, tag-organized tree.

use clap::Parser;
use clap::error::ErrorKind;
use musicfs::cli::{Cli, Command};
use musicfs::mount::{self, MountPlan};
use std::process::ExitCode;

/// Bad arguments: the contract other tools rely on.
const EXIT_USAGE: u8 = 2;
/// A failure while running.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            // One line, no usage dump: scripts read the first line anyway.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("musicfs: {first} (see musicfs --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Mount(args) => {
            musicfs::logging::init(&args.log_level);
            musicfs::logging::install_panic_hook();
            // Fail points (tests only): configured by the FAILPOINTS variable.
            #[cfg(feature = "failpoints")]
            let _failpoints = fail::FailScenario::setup();
            let plan = match MountPlan::from_args(&args) {
                Ok(plan) => plan,
                Err(e) => {
                    eprintln!("musicfs: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match mount::run(plan) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("musicfs: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Unmount { mountpoint } => match musicfs::unmount::unmount(&mountpoint) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("musicfs: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
    }
}
