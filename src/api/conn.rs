//! What one TCP connection may hold: a place among the connections open at
//! once (in all, and per client address), and a socket whose writes may not
//! stall for longer than the write timeout.
//!
//! Together with hyper's header-read timeout (which also closes a keep-alive
//! connection that stays idle), these bound what idle or non-reading clients
//! can take: sockets, tasks and buffered response bytes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// File descriptors kept back from the connection cap for model files,
/// blobs, the store and logs.
const RESERVED_FDS: u64 = 64;
/// The cap when the file-descriptor limit cannot be read or is huge.
const DEFAULT_MAX: usize = 4096;
/// How long the refusal of a connection over the cap may take to write.
const REFUSAL_WRITE: Duration = Duration::from_secs(2);
/// The kernel send buffer asked for each connection (Linux doubles it). Left
/// to autotuning, a client that stops reading pins up to `tcp_wmem`'s
/// maximum (4 MiB by default) of kernel memory per connection and fills
/// it before the write timeout can start; 1 MiB in flight still carries
/// 280 Mbit/s at a 30 ms round trip, more than an edge box serves blobs at.
const SEND_BUFFER: libc::c_int = 512 << 10;

/// Counts open connections, in all and per client address.
#[derive(Debug)]
pub struct Limits {
    max_total: usize,
    max_per_peer: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// A connection's place; giving it back (on drop) lets another in.
#[derive(Debug)]
pub struct Place {
    limits: Arc<Limits>,
    peer: IpAddr,
}

impl Limits {
    /// Limits for `max` connections (default: what the file-descriptor
    /// limit allows, after raising the soft limit to the hard one); one
    /// address may hold half, so one client cannot lock the others out.
    pub fn new(max: Option<usize>) -> Arc<Limits> {
        let max_total = max.unwrap_or_else(|| {
            let fds = raise_fd_limit();
            usize::try_from(fds.saturating_sub(RESERVED_FDS))
                .unwrap_or(DEFAULT_MAX)
                .clamp(16, DEFAULT_MAX)
        });
        Arc::new(Limits {
            max_total,
            max_per_peer: (max_total / 2).max(1),
            open: Mutex::new(Open::default()),
        })
    }

    /// The connection cap in force.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Takes a place for a connection from `peer`, or `None` when the
    /// server or that address is at its cap.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Place> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.per_peer.get(&peer).copied().unwrap_or(0);
        if open.total >= self.max_total || mine >= self.max_per_peer {
            return None;
        }
        open.total += 1;
        open.per_peer.insert(peer, mine + 1);
        Some(Place {
            limits: Arc::clone(self),
            peer,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Answers a connection over the cap with a 503 and closes it, within a
/// bounded time (a client that does not read gets nothing).
pub async fn refuse<S: AsyncWrite + Unpin>(mut stream: S) {
    const BODY: &str = "{\"error\":\"server busy: too many open connections\"}";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE, write).await;
}

/// Caps the kernel send buffer of an accepted socket at [`SEND_BUFFER`]
/// (a failure leaves autotuning on, which is only less bounded).
pub fn cap_send_buffer(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size = SEND_BUFFER;
    // SAFETY: the fd is a live socket owned by `stream`; setsockopt reads
    // `size_of::<c_int>()` bytes from the pointer we pass.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::debug!("SO_SNDBUF: {}", io::Error::last_os_error());
    }
}

/// Raises the soft file-descriptor limit to the hard one (a server's
/// sockets need more than a login shell's 1,024) and returns the limit in
/// force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return DEFAULT_MAX as u64;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; failure leaves the
        // old limit, which we then report.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    // rlim_t is u32 on 32-bit targets (armv7) and u64 elsewhere.
    #[allow(clippy::useless_conversion)]
    u64::from(lim.rlim_cur)
}

/// A socket whose writes fail with `TimedOut` once one has made no progress
/// for the write timeout: hyper then drops the connection, the response
/// body's receiver goes, and the generation feeding it stops.
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// Wraps `inner` with a write timeout of `limit`.
    pub fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a write or flush returned: progress clears the stall timer,
    /// `Pending` starts it (or finds it expired).
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("client read nothing for {limit:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_half() {
        let limits = Limits::new(Some(4));
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = limits.admit(a).expect("first place");
        let _second = limits.admit(a).expect("second place");
        assert!(limits.admit(a).is_none(), "a third for one address");
        let _c = limits.admit(b).expect("another address gets in");
        let _d = limits.admit(b).expect("its second");
        assert!(
            limits.admit([127, 0, 0, 4].into()).is_none(),
            "over the total"
        );
        drop(first);
        assert!(
            limits.admit(a).is_some(),
            "a place given back is free again"
        );
    }
}
