//! `musicfs pin`, `musicfs unpin` and `musicfs pins`: the command line.
//!
//! What to pin is a search query (`artist:Björk year:1997`), a file or
//! folder of the mount, or a playlist (`.m3u`/`.m3u8`, anywhere) whose
//! entries point into the mount. The daemon pins, saves the pins, and
//! fetches; this shows the progress until every file is cached. Ctrl-C
//! stops the fetch cleanly: the pins stay with what was fetched, and the
//! same `musicfs pin` resumes.

use crate::service::control::client as control;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Bad arguments.
const EXIT_USAGE: u8 = 2;
/// Refused, failed, or not everything could be fetched.
const EXIT_FAILURE: u8 = 1;
/// Stopped by Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
/// How often the progress is asked for.
const POLL: Duration = Duration::from_millis(250);
/// The daemon is idle this long with files still missing: they failed.
const IDLE_GRACE: Duration = Duration::from_secs(2);
/// A control request that pins or saves may wait for the disk.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `musicfs pin MOUNTPOINT WHAT...`.
pub fn pin(mountpoint: &Path, what: &[String]) -> ExitCode {
    let (socket, target) = match prepare(mountpoint, what) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut request = target;
    request["cmd"] = json!("pin");
    let answer = match ask(&socket, &request, mountpoint) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(r) = answer.get("refused") {
        eprintln!(
            "musicfs: cannot pin: these files add {}, {} is pinned already, and pins may take at most {} \
             (a share of --cache-size); unpin something first, or raise --cache-size",
            size(&r["adding_bytes"]),
            size(&r["pinned_bytes"]),
            size(&r["limit_bytes"]),
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Some(code) = answer_error(&answer) {
        return code;
    }
    let inos = answer["inos"].clone();
    if answer["uncacheable"].as_u64().unwrap_or(0) > 0 {
        eprintln!(
            "{} files are only in cache=off origins and were not pinned",
            answer["uncacheable"]
        );
    }
    println!(
        "pinned {} files ({}), {} of them new",
        answer["files"],
        size(&answer["bytes"]),
        answer["new_files"]
    );
    follow(&socket, mountpoint, &inos)
}

/// Shows the fetch of `inos` until every file is cached, some failed, or
/// the user presses Ctrl-C.
fn follow(socket: &Path, mountpoint: &Path, inos: &Value) -> ExitCode {
    let interrupted = crate::sys::catch_interrupts();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {bytes}/{total_bytes} {msg} ({bytes_per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let state_request = json!({"cmd": "pin_state", "inos": inos});
    let mut idle_since: Option<Instant> = None;
    loop {
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            bar.finish_and_clear();
            let pause = json!({"cmd": "pin_pause", "inos": inos});
            let _ = control::request(socket, &pause, REQUEST_TIMEOUT);
            let state = control::request(socket, &state_request, REQUEST_TIMEOUT).ok();
            let (full, files) = state.as_ref().map_or((Value::Null, Value::Null), |s| {
                (s["full"].clone(), s["files"].clone())
            });
            eprintln!(
                "stopped: {full} of {files} files are fully cached; the pins stay with what was \
                 fetched. `musicfs pin` again resumes, `musicfs unpin` releases them."
            );
            return ExitCode::from(EXIT_INTERRUPTED);
        }
        let state = match control::request(socket, &state_request, REQUEST_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                bar.finish_and_clear();
                eprintln!(
                    "musicfs: the mount at '{}' stopped answering: {e}",
                    mountpoint.display()
                );
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let num = |k: &str| state[k].as_u64().unwrap_or(0);
        bar.set_length(num("bytes"));
        bar.set_position(num("cached_bytes"));
        bar.set_message(format!("{}/{} files", num("full"), num("files")));
        if num("full") >= num("files") {
            bar.finish_and_clear();
            println!(
                "{} of {} files cached ({}): they play with no origin",
                num("full"),
                num("files"),
                size(&state["bytes"])
            );
            return ExitCode::SUCCESS;
        }
        let filling = state["filling"].as_bool().unwrap_or(false);
        if filling {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_GRACE {
            bar.finish_and_clear();
            eprintln!(
                "{} of {} files cached; the others could not be fetched now. They stay pinned \
                 and are fetched when their origin answers again:",
                num("full"),
                num("files")
            );
            for f in state["failed"].as_array().into_iter().flatten() {
                eprintln!(
                    "  {}: {}",
                    f["path"].as_str().unwrap_or("?"),
                    f["error"].as_str().unwrap_or("?")
                );
            }
            return ExitCode::from(EXIT_FAILURE);
        }
        std::thread::sleep(POLL);
    }
}

/// `musicfs unpin MOUNTPOINT WHAT...`.
pub fn unpin(mountpoint: &Path, what: &[String]) -> ExitCode {
    let (socket, target) = match prepare(mountpoint, what) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut request = target;
    request["cmd"] = json!("unpin");
    let answer = match ask(&socket, &request, mountpoint) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(code) = answer_error(&answer) {
        return code;
    }
    println!(
        "released {} pinned files (their cached bytes may now be evicted)",
        answer["released"]
    );
    ExitCode::SUCCESS
}

/// `musicfs pins MOUNTPOINT`.
pub fn list(mountpoint: &Path, json_out: bool) -> ExitCode {
    let socket = control::socket_path(mountpoint);
    let answer = match ask(&socket, &json!({"cmd": "pins"}), mountpoint) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(code) = answer_error(&answer) {
        return code;
    }
    if json_out {
        println!("{answer:#}");
        return ExitCode::SUCCESS;
    }
    let files = answer["files"].as_array().cloned().unwrap_or_default();
    let (mut cached, mut total, mut full) = (0u64, 0u64, 0usize);
    for f in &files {
        let (c, s) = (
            f["cached_bytes"].as_u64().unwrap_or(0),
            f["size"].as_u64().unwrap_or(0),
        );
        let state = if c >= s {
            full += 1;
            "full"
        } else if c > 0 {
            "partial"
        } else {
            "none"
        };
        let paused = if f["paused"].as_bool() == Some(true) {
            " (paused)"
        } else {
            ""
        };
        println!(
            "{state:<8}{:>10}  {}{paused}",
            size(&f["size"]),
            f["path"].as_str().unwrap_or("?")
        );
        cached += c;
        total += s;
    }
    println!(
        "{} files pinned, {full} fully cached; {} of {} cached; pins may take {}",
        files.len(),
        size(&json!(cached)),
        size(&json!(total)),
        size(&answer["limit_bytes"]),
    );
    ExitCode::SUCCESS
}

/// The mount's socket and what the arguments name, or the exit code of a
/// usage error (already reported).
fn prepare(mountpoint: &Path, what: &[String]) -> Result<(PathBuf, Value), ExitCode> {
    let Ok(mount) = mountpoint.canonicalize() else {
        eprintln!("musicfs: '{}' does not exist", mountpoint.display());
        return Err(ExitCode::from(EXIT_USAGE));
    };
    let text = what.join(" ");
    let target = target_of(&mount, &text).map_err(|e| {
        eprintln!("musicfs: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    Ok((control::socket_path(&mount), target))
}

/// Why `musicfs pin WHAT` names nothing it can pin.
#[derive(Debug, thiserror::Error)]
enum TargetError {
    /// A path outside the mount that is no playlist.
    #[error("'{text}' is neither in the mount at '{}' nor a playlist (.m3u, .m3u8)", mount.display())]
    Outside {
        /// What was given.
        text: String,
        /// The mount.
        mount: PathBuf,
    },
    /// The playlist cannot be read.
    #[error("cannot read playlist '{}': {source}", playlist.display())]
    Playlist {
        /// The playlist.
        playlist: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// No entry of the playlist is in the mount.
    #[error("no entry of playlist '{}' is a file of the mount at '{}'", playlist.display(), mount.display())]
    NoEntry {
        /// The playlist.
        playlist: PathBuf,
        /// The mount.
        mount: PathBuf,
    },
}

/// A playlist, a file or folder of the mount, or else a search query.
fn target_of(mount: &Path, text: &str) -> Result<Value, TargetError> {
    let given = Path::new(text);
    let candidates = [given.to_path_buf(), mount.join(text)];
    let Some(path) = candidates
        .iter()
        .find_map(|p| p.canonicalize().ok().filter(|_| !text.is_empty()))
    else {
        return Ok(json!({"query": text}));
    };
    if is_playlist(&path) {
        let paths = playlist_entries(&path, mount)?;
        return Ok(json!({"paths": paths}));
    }
    match path.strip_prefix(mount) {
        Ok(rel) => Ok(json!({"paths": [rel.to_string_lossy()]})),
        Err(_) => Err(TargetError::Outside {
            text: text.to_owned(),
            mount: mount.to_path_buf(),
        }),
    }
}

fn is_playlist(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("m3u") || e.eq_ignore_ascii_case("m3u8"))
}

/// The entries of a playlist that are files of the mount, relative to it.
/// Entries are relative to the playlist's folder or absolute; comments and
/// `#EXT` lines are skipped. Entries elsewhere are counted and reported.
fn playlist_entries(playlist: &Path, mount: &Path) -> Result<Vec<String>, TargetError> {
    let bytes = std::fs::read(playlist).map_err(|source| TargetError::Playlist {
        playlist: playlist.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let base = playlist.parent().unwrap_or(Path::new("/"));
    let (mut inside, mut elsewhere) = (Vec::new(), 0usize);
    for line in text.lines() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = base.join(line);
        match entry
            .canonicalize()
            .ok()
            .and_then(|p| p.strip_prefix(mount).ok().map(Path::to_path_buf))
        {
            Some(rel) => inside.push(rel.to_string_lossy().into_owned()),
            None => elsewhere += 1,
        }
    }
    if elsewhere > 0 {
        eprintln!("{elsewhere} entries of the playlist are not files of the mount; skipped");
    }
    if inside.is_empty() {
        return Err(TargetError::NoEntry {
            playlist: playlist.to_path_buf(),
            mount: mount.to_path_buf(),
        });
    }
    Ok(inside)
}

fn ask(socket: &Path, request: &Value, mountpoint: &Path) -> Result<Value, ExitCode> {
    control::request(socket, request, REQUEST_TIMEOUT).map_err(|e| {
        eprintln!(
            "musicfs: no MusicFS mount answers at '{}': {e}",
            mountpoint.display()
        );
        ExitCode::from(EXIT_FAILURE)
    })
}

/// Reports an error answer; `None` if the answer is not one.
fn answer_error(answer: &Value) -> Option<ExitCode> {
    if let Some(e) = answer["bad_query"].as_str() {
        eprintln!("musicfs: {e}");
        return Some(ExitCode::from(EXIT_USAGE));
    }
    let e = answer["error"].as_str()?;
    eprintln!("musicfs: {e}");
    Some(ExitCode::from(EXIT_FAILURE))
}

/// Bytes for people: `12.3 MiB`.
fn size(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0) as f64;
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}
