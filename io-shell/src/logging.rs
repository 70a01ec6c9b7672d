//! Logs go to stderr through tracing (journald picks them up under systemd).

use tracing_subscriber::EnvFilter;

/// Installs the subscriber: `RUST_LOG` if set, else `level`.
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(format!("warn,fuser=error,musicfs={level}")).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Logs every panic through tracing, with the thread's name and a
/// backtrace, so a panic in a background thread is never silent.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(thread = name, %info, %backtrace, "panic");
        default(info);
    }));
}
