//! `musicfs`: mount a music collection as one clean, tag-organized tree.

use clap::error::ErrorKind;
use musicfs::cli::Command;
use musicfs::mount::{self, MountPlan};
use std::process::ExitCode;

/// Bad arguments: the contract other tools rely on.
const EXIT_USAGE: u8 = 2;
/// A failure while running.
const EXIT_FAILURE: u8 = 1;

/// jemalloc, set up for a long-running daemon in `musicfs::sys::memory`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // The watchdog's probe (see systemd::start_watchdog): statfs and exit.
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.len() == 3 && args[1] == musicfs::service::systemd::PROBE_ARG {
        let answers = musicfs::service::systemd::fuse_answers(std::path::Path::new(&args[2]));
        return if answers {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // A mount's connection guard (see kernel::guard).
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(4).collect();
    if args.len() == 4 && args[1] == musicfs::kernel::guard::GUARD_ARG {
        let text = |a: &std::ffi::OsString| a.to_string_lossy().into_owned();
        return musicfs::kernel::guard::run(&text(&args[2]), &text(&args[3]));
    }
    let cli = match musicfs::cli::config::parse_command_line() {
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
            // The --config file, under the command line: its errors are usage errors.
            let args = match musicfs::cli::config::resolve(*args) {
                Ok(args) => args,
                Err(e) => {
                    eprintln!("musicfs: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            if let Err(e) = musicfs::cli::logging::init(&args.log_level, args.log_file.as_deref()) {
                eprintln!("musicfs: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            musicfs::cli::logging::install_panic_hook();
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
                    tracing::error!("{}", musicfs::errors::error_chain(&e));
                    eprintln!("musicfs: error: {}", musicfs::errors::Report(&e));
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Unmount { mountpoint, lazy } => {
            match musicfs::kernel::unmount::unmount(&mountpoint, lazy) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("musicfs: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Status { mountpoint, json } => status(mountpoint.as_deref(), json),
        Command::Rescan { mountpoint } => rescan(mountpoint.as_deref()),
        Command::Search(args) => search(args),
        Command::Pin(args) => musicfs::cli::pin::pin(&args.mountpoint, &args.what),
        Command::Unpin(args) => musicfs::cli::pin::unpin(&args.mountpoint, &args.what),
        Command::Pins { mountpoint, json } => musicfs::cli::pin::list(&mountpoint, json),
    }
}

/// `musicfs status`: asks one running daemon, or every one.
fn status(mountpoint: Option<&std::path::Path>, json: bool) -> ExitCode {
    use musicfs::service::control::client as control;
    let request = serde_json::json!({"cmd": "status"});
    let timeout = std::time::Duration::from_secs(10);
    let mut docs = Vec::new();
    if let Some(m) = mountpoint {
        match control::ask(m, &request, timeout) {
            Ok(doc) => docs.push(doc),
            Err(e) => {
                eprintln!("musicfs: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    } else {
        for socket in control::reachable_sockets() {
            // A socket left by a killed daemon: not an error when listing all.
            if let Ok(doc) = control::request(&socket, &request, timeout) {
                docs.push(doc);
            }
        }
        if docs.is_empty() {
            eprintln!("musicfs: no running MusicFS mount found");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if json {
        let out = if mountpoint.is_some() && docs.len() == 1 {
            docs.remove(0)
        } else {
            serde_json::Value::Array(docs)
        };
        println!("{out:#}");
    } else {
        for doc in &docs {
            print!("{}", control::render_status(doc));
        }
    }
    ExitCode::SUCCESS
}

/// `musicfs rescan`: asks daemons to sync their origins now.
fn rescan(mountpoint: Option<&std::path::Path>) -> ExitCode {
    use musicfs::service::control::client as control;
    let sockets = match mountpoint {
        Some(m) => match control::find_socket(m) {
            Ok(socket) => vec![socket],
            Err(e) => {
                eprintln!("musicfs: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        },
        None => control::reachable_sockets(),
    };
    let request = serde_json::json!({"cmd": "rescan"});
    let mut asked = 0;
    for socket in &sockets {
        // A rescan of a big, slow origin may take a while.
        match control::request(socket, &request, std::time::Duration::from_secs(600)) {
            Ok(answer) => {
                asked += 1;
                for o in answer["rescan"].as_array().into_iter().flatten() {
                    match o["error"].as_str() {
                        Some(e) => println!("origin {}: {e}", o["id"]),
                        None => println!(
                            "origin {}: {} read, {} removed, {} moved, {} unchanged",
                            o["id"], o["read"], o["removed"], o["moved"], o["unchanged"]
                        ),
                    }
                }
            }
            Err(e) if mountpoint.is_some() => {
                eprintln!("musicfs: no daemon answers: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
            Err(_) => {}
        }
    }
    if asked == 0 {
        eprintln!("musicfs: no running MusicFS mount found");
        return ExitCode::from(EXIT_FAILURE);
    }
    ExitCode::SUCCESS
}

/// `musicfs search`: a running daemon of this cache answers if there is
/// one (it sees changes not yet committed to disk); otherwise the saved
/// index is read directly (a reader only: safe beside a daemon).
fn search(args: musicfs::cli::SearchArgs) -> ExitCode {
    use musicfs::search::{SearchError, search_offline};
    let query = args.query.join(" ");
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    if let Some(mountpoint) = &args.mountpoint {
        return search_mount(mountpoint, &query, limit);
    }
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => match musicfs::cli::default_cache_dir() {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("musicfs: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let request = serde_json::json!({"cmd": "search", "query": query, "limit": limit, "cache_dir": cache_dir});
    for socket in musicfs::service::control::client::all_sockets() {
        let Ok(answer) = musicfs::service::control::client::request(
            &socket,
            &request,
            std::time::Duration::from_secs(10),
        ) else {
            continue;
        };
        if let Some(paths) = answer["paths"].as_array() {
            for p in paths.iter().filter_map(|p| p.as_str()) {
                println!("{p}");
            }
            return ExitCode::SUCCESS;
        }
        if let Some(e) = answer["bad_query"].as_str() {
            eprintln!("musicfs: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    match search_offline(&cache_dir, &query, limit) {
        Ok(paths) => {
            for path in paths {
                println!("{path}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ SearchError::BadQuery(_)) => {
            eprintln!("musicfs: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("musicfs: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `musicfs search --mount MOUNTPOINT`: asks that mount's daemon and prints
/// each hit as an absolute path inside the mount.
fn search_mount(mountpoint: &std::path::Path, query: &str, limit: usize) -> ExitCode {
    use musicfs::service::control::client as control;
    let shown = mountpoint.display();
    let Ok(absolute) = mountpoint.canonicalize() else {
        eprintln!("musicfs: '{shown}' does not exist");
        return ExitCode::from(EXIT_USAGE);
    };
    let request =
        serde_json::json!({"cmd": "search", "query": query, "limit": limit, "mount": true});
    let socket = control::socket_path(&absolute);
    let answer = match control::request(&socket, &request, std::time::Duration::from_secs(10)) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("musicfs: no MusicFS mount answers at '{shown}': {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Some(e) = answer["bad_query"].as_str() {
        eprintln!("musicfs: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let Some(paths) = answer["paths"].as_array() else {
        let why = answer["error"].as_str().unwrap_or("no answer");
        eprintln!("musicfs: the mount at '{shown}' cannot search: {why}");
        return ExitCode::from(EXIT_FAILURE);
    };
    for p in paths.iter().filter_map(|p| p.as_str()) {
        println!("{}", absolute.join(p).display());
    }
    ExitCode::SUCCESS
}
