//! A TCP fault proxy between a client and a real server, in-process.
//!
//! It forwards bytes and nothing else (no protocol is imitated), and can be
//! told to misbehave the way networks do, mid-test:
//!
//! - [`Fault::Latency`]: every chunk from the server arrives that much
//!   later (pipelined, like Toxiproxy's latency toxic: a 1 MiB answer is
//!   late by the latency, not by the latency per chunk);
//! - [`Fault::Reset`]: open connections are reset (RST, via `SO_LINGER`
//!   0) and new ones are accepted and reset at once;
//! - [`Fault::Blackhole`]: the server "accepts and never answers": open
//!   connections stop moving bytes (held, as a partition holds them, not
//!   dropped) and new ones are accepted but never connected upstream;
//! - [`Fault::Bandwidth`]: server-to-client bytes per second, per
//!   connection;
//! - [`FaultProxy::heal`]: back to forwarding; held bytes flow again.
//!
//! Why not the `noxious` crate (a Rust port of Toxiproxy)? Its last
//! release is from 2021, on tokio-util 0.6 and rand 0.8; as a library its
//! control path is a request channel meant for its own HTTP API, and it has
//! no reset toxic. What is needed here is a hundred lines of tokio.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How the proxy misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Delay server-to-client bytes by this much.
    Latency(Duration),
    /// Reset every connection, open or new.
    Reset,
    /// Accept, and move no bytes at all.
    Blackhole,
    /// Server-to-client bytes per second at most, per connection.
    Bandwidth(u64),
}

struct Shared {
    fault: watch::Sender<Fault>,
    accepted: AtomicU64,
    down_bytes: AtomicU64,
}

/// A fault proxy listening on a free loopback port.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts forwarding from a free port on 127.0.0.1 to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (fault, _) = watch::channel(Fault::None);
        let shared = Arc::new(Shared {
            fault,
            accepted: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(client, upstream, Arc::clone(&s)));
            }
        });
        FaultProxy {
            addr,
            shared,
            rt: Some(rt),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Starts misbehaving (or, with [`Fault::None`], stops).
    pub fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    /// Forwards normally again.
    pub fn heal(&self) {
        self.set(Fault::None);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Server-to-client bytes forwarded so far.
    pub fn down_bytes(&self) -> u64 {
        self.shared.down_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Makes the next close of `fd` a reset (RST) instead of an orderly FIN.
fn linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket owned by a live stream of the caller,
    // and `linger` is a valid struct of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut fault = shared.fault.subscribe();
    // A new connection under a reset is reset at once; under a blackhole it
    // is held, never connected, until the fault goes away.
    loop {
        let now = *fault.borrow_and_update();
        match now {
            Fault::Reset => {
                linger_zero(client.as_raw_fd());
                return;
            }
            Fault::Blackhole => {
                if fault.changed().await.is_err() {
                    return;
                }
            }
            _ => break,
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        linger_zero(client.as_raw_fd());
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let fds = [client.as_raw_fd(), server.as_raw_fd()];
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = forward(client_read, server_write, shared.fault.subscribe(), None);
    let down = forward(
        server_read,
        client_write,
        shared.fault.subscribe(),
        Some(&shared.down_bytes),
    );
    let reset = async {
        let _ = fault.wait_for(|f| *f == Fault::Reset).await;
        // Still open: the halves live in `up` and `down` until this
        // select ends, and their drop then closes with RST.
        for fd in fds {
            linger_zero(fd);
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = reset => {}
    }
}

/// Copies one direction, applying the current fault to each chunk. A
/// reader feeds a writer through a queue of timestamped chunks, so latency
/// delays every chunk by the same amount without adding up.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    fault: watch::Receiver<Fault>,
    counter: Option<&AtomicU64>,
) {
    let downstream = counter.is_some();
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let mut read_fault = fault.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // A blackhole holds the bytes where they are.
            if read_fault
                .wait_for(|f| *f != Fault::Blackhole)
                .await
                .is_err()
            {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = match *read_fault.borrow() {
                Fault::Latency(d) if downstream => d,
                _ => Duration::ZERO,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let mut write_fault = fault;
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if write_fault
                .wait_for(|f| *f != Fault::Blackhole)
                .await
                .is_err()
            {
                return;
            }
            let cap = match *write_fault.borrow() {
                Fault::Bandwidth(bps) if downstream => Some(bps.max(1)),
                _ => None,
            };
            match cap {
                Some(bps) => {
                    // Paced in slices of a tenth of a second's worth.
                    let slice = usize::try_from(bps / 10).unwrap_or(usize::MAX).max(1);
                    for part in chunk.chunks(slice) {
                        let started = Instant::now();
                        if to.write_all(part).await.is_err() {
                            return;
                        }
                        let due = Duration::from_secs_f64(part.len() as f64 / bps as f64);
                        tokio::time::sleep_until(started + due).await;
                    }
                }
                None => {
                    if to.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            }
            if let Some(c) = counter {
                c.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant as StdInstant;

    /// An echo server on loopback (the thing behind the proxy).
    fn echo() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(addr: SocketAddr, timeout: Duration) -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn faults_and_recovery() {
        let proxy = FaultProxy::start(echo());
        let t = Duration::from_secs(5);
        assert_eq!(roundtrip(proxy.addr(), t).unwrap(), b"ping");

        proxy.set(Fault::Latency(Duration::from_millis(300)));
        let started = StdInstant::now();
        assert_eq!(roundtrip(proxy.addr(), t).unwrap(), b"ping");
        assert!(started.elapsed() >= Duration::from_millis(290));

        proxy.set(Fault::Reset);
        let err = roundtrip(proxy.addr(), t).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ),
            "{err:?}"
        );

        proxy.set(Fault::Blackhole);
        let err = roundtrip(proxy.addr(), Duration::from_millis(300)).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err:?}"
        );

        proxy.heal();
        assert_eq!(roundtrip(proxy.addr(), t).unwrap(), b"ping");
    }
}
