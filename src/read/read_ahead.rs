//! Read-ahead: runs a blocking reader (a log's zstd decoder) on its own
//! thread and hands what it reads to the consumer (the searcher) in a few
//! large buffers, so decoding and searching run on two cores at once, as
//! `zstdcat FILES | grep` does in two processes.
//!
//! Memory is bounded: [`BUFFERS`] buffers of [`BUFFER`] bytes circulate
//! between the two threads (filled ones one way, emptied ones back), and
//! none is allocated after the start. When the consumer is dropped (a search
//! that stopped early), the producer's next hand-over fails and it stops.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Size of each buffer handed over.
pub const BUFFER: usize = 256 << 10;
/// Buffers in circulation: the producer runs at most this far ahead.
pub const BUFFERS: usize = 4;

/// The consumer's end: a [`Read`] over the buffers the producer filled.
pub struct ReadAhead {
    filled: Receiver<io::Result<Vec<u8>>>,
    empty: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Starts reading `source` on a blocking thread of the runtime this is
/// called from. Errors reach the consumer in order, after the bytes read
/// before them.
pub fn spawn<R: Read + Send + 'static>(source: R) -> ReadAhead {
    let (filled_tx, filled) = sync_channel(BUFFERS);
    let (empty, empty_rx) = sync_channel(BUFFERS);
    for _ in 0..BUFFERS {
        // The channel holds BUFFERS and its receiver is alive: this cannot fail.
        let _ = empty.try_send(Vec::with_capacity(BUFFER));
    }
    tokio::task::spawn_blocking(move || produce(source, &filled_tx, &empty_rx));
    ReadAhead {
        filled,
        empty,
        current: Vec::new(),
        pos: 0,
        done: false,
    }
}

/// Fills empty buffers from `source` until its end, an error, or the
/// consumer is gone.
fn produce<R: Read>(
    mut source: R,
    filled: &SyncSender<io::Result<Vec<u8>>>,
    empty: &Receiver<Vec<u8>>,
) {
    while let Ok(mut buf) = empty.recv() {
        buf.resize(BUFFER, 0);
        let mut len = 0;
        let mut error = None;
        while len < BUFFER {
            match source.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        buf.truncate(len);
        let end = len < BUFFER;
        if len > 0 && filled.send(Ok(buf)).is_err() {
            return;
        }
        if let Some(e) = error {
            let _ = filled.send(Err(e));
            return;
        }
        if end {
            // Dropping the sender tells the consumer the stream ended.
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let next = match self.filled.recv() {
                Ok(Ok(next)) => next,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            };
            let spent = std::mem::replace(&mut self.current, next);
            self.pos = 0;
            // The producer may already be gone (end of stream): nothing to return it to.
            let _ = self.empty.try_send(spent);
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that yields `data` in reads of `step` bytes, then `error` if given.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        error: bool,
    }

    impl Read for Source {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                if self.error {
                    return Err(io::Error::other("broken source"));
                }
                return Ok(0);
            }
            let n = out.len().min(self.step).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hands_over_every_byte_in_order() {
        // Empty, smaller than a buffer, exactly the buffers in circulation, and
        // many times them (the buffers are reused).
        for len in [0, 1000, BUFFER * BUFFERS, BUFFER * 11 + 17] {
            let want = data(len);
            let source = Source {
                data: want.clone(),
                pos: 0,
                step: 7919,
                error: false,
            };
            let got = tokio::task::spawn_blocking(move || {
                let mut got = Vec::new();
                spawn(source).read_to_end(&mut got).map(|_| got)
            })
            .await
            .unwrap()
            .unwrap();
            assert!(got == want, "{len} bytes come back unchanged");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_follows_the_bytes_read_before_it() {
        let want = data(BUFFER + 5);
        let source = Source {
            data: want.clone(),
            pos: 0,
            step: 4096,
            error: true,
        };
        let (got, err) = tokio::task::spawn_blocking(move || {
            let mut reader = spawn(source);
            let mut got = Vec::new();
            let err = reader.read_to_end(&mut got).unwrap_err();
            (got, err)
        })
        .await
        .unwrap();
        assert!(got == want);
        assert_eq!(err.to_string(), "broken source");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_that_stops_early_stops_the_producer() {
        let source = Source {
            data: data(BUFFER * 64),
            pos: 0,
            step: BUFFER,
            error: false,
        };
        let mut reader = spawn(source);
        let mut first = [0u8; 10];
        tokio::task::spawn_blocking(move || {
            reader.read_exact(&mut first).unwrap();
            drop(reader);
        })
        .await
        .unwrap();
        // The producer ends instead of blocking a thread forever: the runtime
        // would otherwise wait for it at shutdown, and this test would hang.
    }
}
