//! Fewer socket writes for many small responses on one client connection.
//!
//! h2 writes a connection's pending frames whenever its connection task runs, and ends each
//! such write with a flush. Two things made that one `writev` per response here:
//!
//! - With vectored writes, h2 keeps a DATA payload of 256 bytes or more out of its write
//!   buffer and flushes before it buffers the next frame; a range answer with one 256-byte
//!   value is past that. With plain writes, h2 copies payloads below 1 KiB into its buffer
//!   (and tops a larger frame's header up to 1 KiB from the payload, so no 9-byte packet goes
//!   out alone), so the answers of many streams leave in one write. [`WriteBatching`] reports
//!   plain writes for that.
//! - A handler task that finishes an answer wakes the connection task, and tokio runs a task
//!   woken that way next (its LIFO slot): the connection writes that one answer before the
//!   other handlers that are ready have run. [`WriteBatching`] therefore lets the first write
//!   after a flush wait one turn of the scheduler (it wakes itself and returns `Pending`, which
//!   puts the task behind the tasks that are ready), so the answers finished meanwhile go in
//!   the same write. With nothing else ready the turn costs a few microseconds.
//!
//! gRPC-Go, which etcd serves with, does the same in its own way: its writer goroutine
//! flushes only when it has nothing more to write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A client connection whose writes are batched (see the module doc).
pub struct WriteBatching<IO> {
    io: IO,
    /// The scheduler turn before the first write since the last flush was taken.
    yielded: bool,
}

impl<IO> WriteBatching<IO> {
    /// Wraps an accepted connection.
    pub fn new(io: IO) -> Self {
        WriteBatching { io, yielded: false }
    }

    /// `Pending` once per flush cycle, with the task woken, so that it runs again after the
    /// tasks that are ready now.
    fn take_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteBatching<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteBatching<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.take_turn(cx));
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.take_turn(cx));
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    /// Plain writes, so that h2 copies small payloads into its write buffer (module doc).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = std::task::ready!(Pin::new(&mut this.io).poll_flush(cx));
        this.yielded = false;
        Poll::Ready(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for WriteBatching<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The first write after a flush gives up its turn once (and wakes its task); the writes
    /// after it in the same cycle go straight through; a flush starts a new cycle. Every byte
    /// reaches the other end, in order, and writes are reported as plain (not vectored).
    #[tokio::test]
    async fn one_turn_per_flush_cycle_and_every_byte_arrives() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = WriteBatching::new(a);
        assert!(!io.is_write_vectored());
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut write = |io: &mut WriteBatching<_>, buf: &[u8]| {
            Pin::new(io).poll_write(&mut cx, buf).map(|r| r.ok())
        };

        assert!(write(&mut io, b"one").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(write(&mut io, b"one"), Poll::Ready(Some(3)));
        assert_eq!(write(&mut io, b"two"), Poll::Ready(Some(3)));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);

        let flushed = Pin::new(&mut io).poll_flush(&mut Context::from_waker(&waker));
        assert!(matches!(flushed, Poll::Ready(Ok(()))));
        assert!(write(&mut io, b"three").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(write(&mut io, b"three"), Poll::Ready(Some(5)));

        let mut got = [0u8; 11];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"onetwothree");
    }

    /// On a runtime, the turn lets the tasks that are ready run before the write: a task
    /// spawned after the writer records itself first. Without the turn the writer would.
    #[tokio::test(flavor = "current_thread")]
    async fn tasks_ready_before_the_write_run_first() {
        let (a, mut b) = tokio::io::duplex(1024);
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        let writer = tokio::spawn(async move {
            let mut io = WriteBatching::new(a);
            io.write_all(b"answer").await.expect("write");
            io.flush().await.expect("flush");
            o.lock().expect("order").push("writer");
            io
        });
        let o = order.clone();
        let other = tokio::spawn(async move { o.lock().expect("order").push("other") });
        let _io = writer.await.expect("writer");
        other.await.expect("other");
        assert_eq!(*order.lock().expect("order"), ["other", "writer"]);
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"answer");
    }
}
