//! Scans a directory the way `musicfs` does and prints how fast it went.
//!
//! ```text
//! cargo run --release -p musicfs --example scan_bench -- DIR [--threads N] [--runs R] [--dump] [--quiet]
//! ```
//!
//! The first run may pay for a cold page cache; each run prints its files/s,
//! and the median of the warm runs is the figure to compare against the
//! target of 10,000 files/s or more. `--quiet` hides the progress bar.
//! `--dump` prints every catalog entry of the first run (path, kind, tags),
//! which is the quickest way to see what the scanner made of a library.

use musicfs::cli::progress::TerminalProgress;
use musicfs::library::scan::{NoProgress, ScanOptions, ScanProgress, scan_local};
use musicfs_core::{FileKind, OriginId};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    dir: PathBuf,
    opts: ScanOptions,
    runs: usize,
    dump: bool,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut dir: Option<PathBuf> = None;
    let mut opts = ScanOptions::default();
    let (mut runs, mut dump, mut quiet) = (3usize, false, false);
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--threads") => {
                opts.threads = args
                    .next()
                    .and_then(|v| v.to_str()?.parse().ok())
                    .ok_or("--threads needs a number")?;
            }
            Some("--runs") => {
                runs = args
                    .next()
                    .and_then(|v| v.to_str()?.parse().ok())
                    .ok_or("--runs needs a number")?;
            }
            Some("--dump") => dump = true,
            Some("--quiet") => quiet = true,
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err("one directory only".to_owned()),
        }
    }
    Ok(Args {
        dir: dir.ok_or("no directory given")?,
        opts,
        runs: runs.max(1),
        dump,
        quiet,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!(
                "scan_bench: {why}\n\
                 usage: scan_bench DIR [--threads N] [--runs R] [--dump] [--quiet]"
            );
            return ExitCode::from(2);
        }
    };
    match bench(&args) {
        Ok(code) => code,
        // stdout closed (e.g. piped into `head`): nothing left to say.
        Err(_) => ExitCode::SUCCESS,
    }
}

fn bench(args: &Args) -> std::io::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let progress: Box<dyn ScanProgress> = if args.quiet {
            Box::new(NoProgress)
        } else {
            Box::new(TerminalProgress::new())
        };
        let report = match scan_local(OriginId(0), &args.dir, &args.opts, progress.as_ref()) {
            Ok(report) => report,
            Err(err) => {
                eprintln!("scan_bench: {}: {err}", args.dir.display());
                return Ok(ExitCode::FAILURE);
            }
        };
        let files = report.entries.len();
        let secs = report.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { files as f64 / secs } else { 0.0 };
        rates.push(rate);
        writeln!(
            out,
            "run {run}: {files} files ({} tracks, {} covers, {} unreadable, {} skipped, {} errors) \
             in {:.1} ms on {} threads: {rate:.0} files/s",
            report.tracks,
            report.covers,
            report.unreadable,
            report.skipped_other,
            report.errors.len(),
            secs * 1e3,
            args.opts.threads,
        )?;
        if args.dump && run == 1 {
            for e in &report.entries {
                match &e.kind {
                    FileKind::Track(t) => writeln!(out, "{}\t{t:?}", e.source.path)?,
                    other => writeln!(out, "{}\t{other:?}", e.source.path)?,
                }
            }
            for err in &report.errors {
                writeln!(out, "error\t{err}")?;
            }
        }
    }
    // On a shared 2-core box noise is high: the median of the warm runs is
    // the figure to quote, the best one is shown too.
    let warm = if rates.len() > 1 {
        &mut rates[1..]
    } else {
        &mut rates[..]
    };
    warm.sort_by(f64::total_cmp);
    let median = warm.get(warm.len() / 2).copied().unwrap_or(0.0);
    let best = warm.last().copied().unwrap_or(0.0);
    writeln!(
        out,
        "warm: median {median:.0} files/s, best {best:.0} files/s"
    )?;
    Ok(ExitCode::SUCCESS)
}
