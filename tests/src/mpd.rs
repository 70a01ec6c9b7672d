//! A real MPD (Debian's `mpd` and `mpc`) on loopback, with its own config
//! in a temp dir and a null audio output: a music server that scans a
//! folder and plays from it, as users point one at a MusicFS mount.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tag fields compared between two scans, as `mpc -f` prints them.
pub const TAG_FORMAT: &str = "%artist%\u{1f}%albumartist%\u{1f}%album%\u{1f}%title%\u{1f}%track%\u{1f}%disc%\u{1f}%date%\u{1f}%genre%\u{1f}%time%";

/// A running MPD; stopped when dropped.
pub struct Mpd {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its folder (config, database, log).
    pub dir: PathBuf,
}

impl Mpd {
    /// Starts an MPD whose `music_directory` is `music`, its files in `dir`.
    /// Panics with a clear message if mpd is not installed: such a test
    /// must fail, never pass silently.
    pub fn start(music: &Path, dir: &Path) -> Mpd {
        std::fs::create_dir_all(dir).expect("mpd dir");
        let port = free_port();
        let conf = dir.join("mpd.conf");
        let p = |name: &str| dir.join(name).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "music_directory \"{}\"\n\
                 db_file \"{}\"\n\
                 log_file \"{}\"\n\
                 pid_file \"{}\"\n\
                 state_file \"{}\"\n\
                 bind_to_address \"127.0.0.1\"\n\
                 port \"{port}\"\n\
                 auto_update \"no\"\n\
                 audio_output {{\n  type \"null\"\n  name \"null\"\n  mixer_type \"none\"\n}}\n",
                music.display(),
                p("db"),
                p("mpd.log"),
                p("pid"),
                p("state"),
            ),
        )
        .expect("mpd.conf");
        let child = Command::new("mpd")
            .arg("--no-daemon")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "mpd must be installed (apt-get install mpd mpc; scripts/install-deps does it)",
            );
        let mpd = Mpd {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        let up = crate::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "mpd did not start:\n{}", mpd.log());
        mpd
    }

    /// `mpc -p PORT ARGS...`: its stdout, or a panic with its stderr.
    pub fn mpc(&self, args: &[&str]) -> String {
        let out = Command::new("mpc")
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("mpc must be installed");
        assert!(
            out.status.success(),
            "mpc {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A full database update, waited for.
    pub fn update(&self) {
        self.mpc(&["update", "--wait"]);
    }

    /// Every song in MPD's database: its path and its tags as [`TAG_FORMAT`].
    pub fn songs(&self) -> Vec<(String, String)> {
        // Fields apart with the unit separator: names may hold tabs.
        let format = format!("%file%\u{1e}{TAG_FORMAT}");
        self.mpc(&["-f", &format, "listall"])
            .lines()
            .filter_map(|l| l.split_once('\u{1e}'))
            .map(|(file, tags)| (file.to_owned(), tags.to_owned()))
            .collect()
    }

    /// MPD's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mpd.log")).unwrap_or_default()
    }
}

impl Drop for Mpd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}
