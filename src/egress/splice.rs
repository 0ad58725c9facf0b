//! A tunnel's bytes carried between two sockets by splice(2) through a pipe each way: the
//! kernel hands pages from one socket to the other and they are never copied into this
//! process. Copying through a buffer (tokio's `copy_bidirectional`, hyper's upgraded
//! connection) cost the proxy more than half of a direct connection's bulk throughput
//! (docs/performance.md, `cargo bench --bench egress`). Used by the egress proxy on the
//! host and by the forwarder inside the container.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::net::Shutdown;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;

/// What each pipe may hold: the most one splice moves before the other side must drain it.
const PIPE_SIZE: usize = 256 << 10;

/// Either end of a tunnel, still registered with the runtime for readiness.
pub enum Socket {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Socket {
    /// Runs `f` on the socket's descriptor once it is ready for `interest`, again after
    /// each EAGAIN.
    async fn io<R>(
        &self,
        interest: Interest,
        mut f: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Self::Tcp(s) => s.async_io(interest, || f(s.as_fd())).await,
            Self::Unix(s) => s.async_io(interest, || f(s.as_fd())).await,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(s) => s.as_fd(),
            Self::Unix(s) => s.as_fd(),
        }
    }
}

/// Carries bytes both ways until each side has closed its half (a half closed is passed on
/// as a shutdown of the other's write half, as `copy_bidirectional` does) or either side
/// fails. `a_to_b` and `b_to_a` count the bytes moved.
pub async fn tunnel(
    a: &Socket,
    b: &Socket,
    a_to_b: &AtomicU64,
    b_to_a: &AtomicU64,
) -> io::Result<()> {
    tokio::try_join!(one_way(a, b, a_to_b), one_way(b, a, b_to_a))?;
    Ok(())
}

async fn one_way(from: &Socket, to: &Socket, moved: &AtomicU64) -> io::Result<()> {
    let (pipe_r, pipe_w) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
    // A larger pipe moves more per call. Where the user's pipe budget is spent the pipe
    // stays smaller; a splice moves what fits, so only speed depends on it.
    let cap = rustix::pipe::fcntl_setpipe_size(&pipe_w, PIPE_SIZE).unwrap_or(64 << 10);
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut in_pipe = 0usize;
    loop {
        if in_pipe == 0 {
            // The pipe is empty, so EAGAIN here can only mean the socket has nothing yet.
            let n = from
                .io(Interest::READABLE, |fd| {
                    rustix::pipe::splice(fd, None, &pipe_w, None, cap, flags)
                        .map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                // The sender closed its half: pass it on, and leave the other way running.
                match rustix::net::shutdown(to.fd(), Shutdown::Write) {
                    Ok(()) | Err(rustix::io::Errno::NOTCONN) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            in_pipe = n;
        } else {
            // The pipe holds bytes, so EAGAIN here can only mean the socket is full.
            let n = to
                .io(Interest::WRITABLE, |fd| {
                    rustix::pipe::splice(&pipe_r, None, fd, None, in_pipe, flags)
                        .map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            in_pipe -= n;
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UnixStream};

    /// A tunnel between a unix socket pair's end and a loopback TCP connection's end:
    /// what each outer end writes, the other reads, byte for byte, counted, and a half
    /// closed on one side reaches the other while the other way still runs.
    #[tokio::test]
    async fn bytes_cross_both_ways_counted_and_a_half_close_is_passed_on() {
        let (mut agent, proxy_side) = UnixStream::pair().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest_side = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut dest, _) = l.accept().await.unwrap();
        let (out, inn) = (AtomicU64::new(0), AtomicU64::new(0));
        let a = Socket::Unix(proxy_side);
        let b = Socket::Tcp(dest_side);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let peers = async {
            agent.write_all(b"hello").await.unwrap();
            agent.shutdown().await.unwrap();
            let mut got = Vec::new();
            dest.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            // The agent's half is closed; the destination's answer still arrives.
            dest.write_all(&big).await.unwrap();
            dest.shutdown().await.unwrap();
            let mut back = Vec::new();
            agent.read_to_end(&mut back).await.unwrap();
            assert!(back == big, "{} bytes back", back.len());
        };
        let (r, ()) = tokio::join!(tunnel(&a, &b, &out, &inn), peers);
        r.unwrap();
        assert_eq!(out.load(Ordering::Relaxed), 5);
        assert_eq!(inn.load(Ordering::Relaxed), big.len() as u64);
    }
}
