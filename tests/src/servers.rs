//! Real servers on loopback for remote-origin tests and benchmarks:
//! moto's S3 server ([`MotoServer`]) and OpenSSH's sshd ([`Sshd`]).
//!
//! Each is started by the test on a free 127.0.0.1 port, waited for with a
//! bounded wait, and killed when dropped. A missing server program is a
//! panic with the command that installs it (`scripts/install-deps`): such
//! a test must fail, never pass by skipping.

use musicfs::origin::{RemoteLimits, S3Config, S3Credentials, Secret, SftpConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound, then released for the server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Every process descended from `root` (children, their children...), from
/// /proc: sshd forks a process per connection (in a session of its own),
/// which killing the listener alone leaves serving.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// SIGKILLs `child` and everything it started, at once: a server dying,
/// not shutting down.
fn kill_tree(child: &mut Child) {
    // Found before the parent dies: its orphans are handed to init at once.
    let below = descendants(child.id());
    let _ = child.kill();
    for pid in below {
        // SAFETY: kill(2) with a pid read from /proc and SIGKILL; at worst
        // the process is already gone (ESRCH).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = child.wait();
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// moto's S3-compatible server (`moto_server`, from `pip install
/// 'moto[server]'`), in memory.
pub struct MotoServer {
    child: Child,
    port: u16,
    /// Holds moto's log until the server is gone.
    _dir: tempfile::TempDir,
}

impl MotoServer {
    /// Starts moto on a free port and waits until it answers HTTP.
    pub fn start() -> MotoServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let err_log = dir.path().join("moto.err");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&err_log).expect("log"))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run moto_server ({e}); install it: pip install 'moto[server]' (scripts/install-deps)"
                    )
                });
            match wait_http(&mut child, port) {
                Ok(()) => {
                    return MotoServer {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                Err(why) => {
                    kill(&mut child);
                    last = format!("{why}\n{}", log_tail(&err_log));
                }
            }
        }
        panic!("moto_server did not start: {last}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A plain HTTP/1.1 request with a body; moto does not check
    /// signatures. Returns the status and body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        http(self.port, method, path, body)
    }

    /// Kills the server (its in-memory buckets die with it).
    pub fn kill(&mut self) {
        kill_tree(&mut self.child);
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self
            .http("PUT", &format!("/{bucket}"), &[])
            .expect("create bucket");
        assert!(
            (200..300).contains(&status),
            "create bucket {bucket}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Test credentials (moto takes any).
    pub fn credentials() -> S3Credentials {
        S3Credentials::Static {
            access_key_id: Secret::new("AKIAMUSICFSTEST00001"),
            secret_access_key: Secret::new("musicfs-test-secret-key-do-not-log"),
            session_token: None,
        }
    }

    /// An origin configuration for `bucket`/`prefix` on this server, or on
    /// `via` (a fault proxy's port) instead.
    pub fn s3_config(&self, bucket: &str, prefix: &str, via: Option<u16>) -> S3Config {
        let mut config = S3Config::new(bucket, prefix);
        config.endpoint = Some(format!("http://127.0.0.1:{}", via.unwrap_or(self.port)));
        config.region = Some("us-east-1".into());
        config.path_style = Some(true);
        config.credentials = MotoServer::credentials();
        config.limits = RemoteLimits::default();
        config
    }

    /// An OpenDAL operator for writing test data into `bucket`.
    fn writer(&self, bucket: &str) -> opendal::Operator {
        let builder = opendal::services::S3::default()
            .bucket(bucket)
            .endpoint(&self.endpoint())
            .region("us-east-1")
            // Not the origins' test keys: OpenDAL's static provider logs
            // its keys at debug level, and tests check those never show.
            .access_key_id("moto-uploader")
            .secret_access_key("moto-uploader")
            .disable_config_load()
            .disable_ec2_metadata();
        opendal::Operator::new(builder)
            .expect("s3 operator")
            .finish()
    }

    /// Uploads every regular file under `dir` to `bucket` under `prefix`
    /// (16 at a time); returns how many.
    pub fn upload_dir(&self, bucket: &str, prefix: &str, dir: &Path) -> usize {
        let files = crate::files_under(dir);
        let op = self.writer(bucket);
        let prefix = prefix.trim_matches('/');
        let jobs: Vec<(String, PathBuf)> = files
            .iter()
            .map(|rel| {
                let rel = rel.to_str().expect("generated names are UTF-8");
                let key = if prefix.is_empty() {
                    rel.to_owned()
                } else {
                    format!("{prefix}/{rel}")
                };
                (key, dir.join(rel))
            })
            .collect();
        on_own_runtime(|rt| {
            rt.block_on(async {
                use futures::StreamExt;
                let results: Vec<()> = futures::stream::iter(jobs)
                    .map(|(key, path)| {
                        let op = op.clone();
                        async move {
                            let data = tokio::fs::read(&path).await.expect("read library file");
                            op.write(&key, data)
                                .await
                                .unwrap_or_else(|e| panic!("upload {key}: {e}"));
                        }
                    })
                    .buffer_unordered(16)
                    .collect()
                    .await;
                results.len()
            })
        })
    }

    /// Writes one object.
    pub fn put(&self, bucket: &str, key: &str, data: Vec<u8>) {
        let op = self.writer(bucket);
        on_own_runtime(|rt| rt.block_on(op.write(key, data)).map(drop)).expect("put");
    }

    /// Deletes one object.
    pub fn delete(&self, bucket: &str, key: &str) {
        let op = self.writer(bucket);
        on_own_runtime(|rt| rt.block_on(op.delete(key))).expect("delete");
    }
}

/// Runs `f` with a runtime of its own on a thread of its own, so that the
/// helpers work from sync tests and from inside a test's `block_on` alike.
fn on_own_runtime<T: Send>(f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            f(&rt)
        })
        .join()
        .expect("helper thread")
    })
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// OpenSSH's sshd on loopback with a generated host key and user key,
/// serving SFTP (`internal-sftp`) to the current user, by key only.
pub struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    user: String,
}

impl Sshd {
    /// Generates keys and a config, starts `/usr/sbin/sshd -D -e` on a free
    /// port, and waits for its SSH banner.
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let keygen = |name: &str| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(dir.path().join(name))
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run ssh-keygen ({e}); install openssh-client (scripts/install-deps)"
                    )
                });
            assert!(
                out.status.success(),
                "ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        keygen("host_ed25519");
        keygen("user_ed25519");
        std::fs::copy(
            dir.path().join("user_ed25519.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        std::fs::write(
            dir.path().join("ssh_config"),
            "# empty: tests ignore ~/.ssh/config\n",
        )
        .expect("ssh_config");
        let user = current_user();
        let log = dir.path().join("sshd.log");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            let d = dir.path().display();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\n\
                     ListenAddress 127.0.0.1\n\
                     HostKey {d}/host_ed25519\n\
                     AuthorizedKeysFile {d}/authorized_keys\n\
                     PidFile {d}/sshd.pid\n\
                     Subsystem sftp internal-sftp\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     PermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     AllowUsers {user}\n\
                     MaxStartups 100:30:200\n\
                     MaxSessions 100\n\
                     LogLevel VERBOSE\n"
                ),
            )
            .expect("sshd_config");
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run /usr/sbin/sshd ({e}); install openssh-server (scripts/install-deps)")
                });
            match wait_banner(&mut child, port) {
                Ok(()) => {
                    return Sshd {
                        child,
                        port,
                        dir,
                        user,
                    };
                }
                Err(why) => {
                    kill(&mut child);
                    last = format!("{why}\n{}", log_tail(&log));
                }
            }
        }
        panic!("sshd did not start: {last}");
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The user logging in (the current one).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key the server accepts.
    pub fn user_key(&self) -> PathBuf {
        self.dir.path().join("user_ed25519")
    }

    /// An empty ssh config file, so tests do not depend on `~/.ssh/config`.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The server's host public key line (`ssh-ed25519 AAAA... comment`).
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .expect("host key")
            .trim()
            .to_owned()
    }

    /// Writes a known_hosts file vouching for this server's host key on
    /// 127.0.0.1 at each of `ports` (the server's, a proxy's).
    pub fn known_hosts(&self, ports: &[u16]) -> PathBuf {
        let key = self.host_key();
        let text: String = ports
            .iter()
            .map(|p| format!("[127.0.0.1]:{p} {key}\n"))
            .collect();
        let path = self.dir.path().join(format!(
            "known_hosts-{}",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join("-")
        ));
        std::fs::write(&path, text).expect("known_hosts");
        path
    }

    /// An origin configuration for the directory `root` of this machine,
    /// served by this sshd, reached on `via` (a proxy's port) or directly.
    pub fn sftp_config(&self, root: &Path, via: Option<u16>) -> SftpConfig {
        let port = via.unwrap_or(self.port);
        let mut config = SftpConfig::new("127.0.0.1", root);
        config.port = Some(port);
        config.user = Some(self.user.clone());
        config.key_file = Some(self.user_key());
        config.known_hosts = Some(self.known_hosts(&[port]));
        config.ssh_config = Some(self.ssh_config());
        config
    }

    /// Kills the server and every session it serves, as a crash or a
    /// power cut would: connections drop, new ones are refused.
    pub fn kill(&mut self) {
        kill_tree(&mut self.child);
    }

    /// sshd's log so far (for failure messages).
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("sshd.log"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits (bounded) until moto answers HTTP on `port`.
fn wait_http(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("moto_server exited: {status}"));
        }
        if let Ok((200..=299, _)) = http(port, "GET", "/moto-api/", &[]) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("moto_server did not answer within 60 s".into())
}

/// Waits (bounded) until sshd sends its banner on `port`.
fn wait_banner(child: &mut Child, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited: {status}"));
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut banner = [0u8; 7];
            if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0" {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("sshd did not send its banner within 60 s".into())
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`; returns status and body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad HTTP answer: {text:.200}"))?;
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| out[i + 4..].to_vec())
        .unwrap_or_default();
    Ok((status, body))
}
