//! What a plugin writes to stdout and stderr.
//!
//! A plugin has no terminal, so without this its prints would be lost, and
//! with them the one line that explains a trap: a Rust plugin's panic
//! message goes to stderr just before the `unreachable` that ends it. Each
//! stream keeps the last [`KEPT_BYTES`] of what a call wrote; the runtime
//! forwards them to tracing after the call and quotes the end of stderr in
//! a trap's error.
//!
//! A write is never refused: Rust's `eprintln!` panics when stderr fails,
//! so a bounded stream that said "full" would turn a chatty plugin into a
//! trapping one. Older output is dropped instead, and counted.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tracing::{info, warn};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much of a call's output each stream keeps.
pub const KEPT_BYTES: usize = 4096;

/// How much a single WASI write may carry; the guest splits larger ones.
const WRITE_PERMIT: usize = 64 * 1024;

/// How many of stderr's last lines a trap's error quotes.
const LAST_WORDS_LINES: usize = 2;

/// What Rust's panic hook adds after every panic message: no help on a
/// Plugin's status, where it would push the message itself out.
const BACKTRACE_HINT: &str = "note: run with `RUST_BACKTRACE=1`";

/// A plugin instance's two output streams.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Output {
    /// Forwards what the last call wrote to tracing (stdout as info, stderr
    /// as warnings, in the caller's span) and returns stderr's last words.
    pub fn forward(&self) -> String {
        let stdout = self.stdout.take();
        for line in stdout.lines() {
            info!(stream = "stdout", "{line}");
        }
        let stderr = self.stderr.take();
        for line in stderr.lines() {
            warn!(stream = "stderr", "{line}");
        }
        for (stream, written) in [("stdout", &stdout), ("stderr", &stderr)] {
            if written.dropped > 0 {
                warn!(
                    stream,
                    dropped_bytes = written.dropped,
                    kept_bytes = KEPT_BYTES,
                    "plugin output beyond what is kept was dropped"
                );
            }
        }
        stderr.last_words()
    }
}

/// One captured stream of one plugin instance. Clones share the buffer.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    tail: Arc<Mutex<Tail>>,
}

#[derive(Debug, Default)]
struct Tail {
    bytes: VecDeque<u8>,
    dropped: usize,
}

/// What a stream received since it was last taken.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The kept end of the output, decoded lossily.
    pub text: String,
    /// Bytes written before the kept end, and so lost.
    pub dropped: usize,
}

impl Captured {
    fn append(&self, bytes: &[u8]) {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.bytes.extend(bytes);
        let excess = tail.bytes.len().saturating_sub(KEPT_BYTES);
        if excess > 0 {
            tail.bytes.drain(..excess);
            tail.dropped += excess;
        }
    }

    /// Empties the stream, returning what it held.
    pub fn take(&self) -> Written {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = tail.bytes.drain(..).collect();
        Written {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            dropped: std::mem::take(&mut tail.dropped),
        }
    }
}

impl Written {
    /// The non-empty lines, in order.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty())
    }

    /// The last few lines on one line, for an error message; empty when
    /// nothing was written.
    pub fn last_words(&self) -> String {
        let lines: Vec<&str> = self
            .lines()
            .filter(|line| !line.starts_with(BACKTRACE_HINT))
            .collect();
        let start = lines.len().saturating_sub(LAST_WORDS_LINES);
        lines[start..].join(" / ")
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Captured {
    /// Always writable.
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_keeps_what_was_written_until_taken() {
        let stream = Captured::default();
        stream.append(b"first line\n");
        stream.append(b"second line\n");
        let written = stream.take();
        assert_eq!(written.text, "first line\nsecond line\n");
        assert_eq!(written.dropped, 0);
        assert_eq!(stream.take(), Written::default());
    }

    #[test]
    fn a_long_output_keeps_its_end_and_counts_what_it_dropped() {
        let stream = Captured::default();
        stream.append(&vec![b'x'; KEPT_BYTES]);
        stream.append(b"\nthe end\n");
        let written = stream.take();
        assert_eq!(written.text.len(), KEPT_BYTES);
        assert!(written.text.ends_with("x\nthe end\n"));
        assert_eq!(written.dropped, "\nthe end\n".len());
    }

    #[test]
    fn a_write_is_never_refused_however_much_came_before() {
        let mut stream = Captured::default();
        for _ in 0..100 {
            assert_eq!(stream.check_write().unwrap(), WRITE_PERMIT);
            stream
                .write(bytes::Bytes::from(vec![b'y'; WRITE_PERMIT]))
                .unwrap();
        }
        assert_eq!(stream.take().dropped, 100 * WRITE_PERMIT - KEPT_BYTES);
    }

    #[test]
    fn last_words_are_the_final_lines_of_a_panic() {
        let stream = Captured::default();
        stream.append(
            b"starting\n\nthread '<unnamed>' panicked at src/lib.rs:65:23:\nasked to trap\n\
              note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        );
        let written = stream.take();
        assert_eq!(
            written.last_words(),
            "thread '<unnamed>' panicked at src/lib.rs:65:23: / asked to trap"
        );
    }

    #[test]
    fn invalid_utf8_is_shown_not_refused() {
        let stream = Captured::default();
        stream.append(b"bad \xff byte\n");
        assert_eq!(stream.take().last_words(), "bad \u{fffd} byte");
    }

    #[test]
    fn nothing_written_has_no_last_words() {
        assert_eq!(Captured::default().take().last_words(), "");
    }
}
