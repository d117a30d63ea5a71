use std::io::Read;
use std::io::Result as IoResult;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// hookflow patch: the most of an unread body drained when a request is dropped.
const DRAIN_LIMIT: usize = 64 * 1024;

/// hookflow patch: a chunked body's decoder that, when dropped before its end, drains up to
/// `DRAIN_LIMIT` and otherwise marks the connection for closing, as `EqualReader` does.
pub struct DrainOnDrop<R: Read> {
    reader: R,
    ended: bool,
    /// A read failed (a timeout, say): the decoder may have lost its place in the framing
    /// (chunked_transfer keeps a half-read chunk size in a local), so its end means nothing.
    failed: bool,
    abandoned: Arc<AtomicBool>,
}

impl<R: Read> DrainOnDrop<R> {
    pub fn new(reader: R, abandoned: Arc<AtomicBool>) -> Self {
        DrainOnDrop { reader, ended: false, failed: false, abandoned }
    }
}

impl<R: Read> Read for DrainOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        match self.reader.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.ended = true;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

impl<R: Read> Drop for DrainOnDrop<R> {
    fn drop(&mut self) {
        let mut buf = [0u8; 8192];
        let mut drained = 0;
        while !self.ended && !self.failed && drained <= DRAIN_LIMIT {
            match self.reader.read(&mut buf) {
                Ok(0) => self.ended = true,
                Ok(n) => drained += n,
                Err(_) => self.failed = true,
            }
        }
        if !self.ended || self.failed {
            self.abandoned.store(true, Ordering::SeqCst);
        }
    }
}

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. If the limit is not reached
/// when the destructor is called, the remaining bytes will be read and
/// thrown away.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    last_read_signal: Sender<IoResult<()>>,
    /// hookflow patch: set when the body is left unread, so that the connection closes.
    abandoned: Option<Arc<AtomicBool>>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(reader: R, size: usize) -> (EqualReader<R>, Receiver<IoResult<()>>) {
        let (tx, rx) = channel();

        let r = EqualReader {
            reader,
            size,
            last_read_signal: tx,
            abandoned: None,
        };

        (r, rx)
    }

    /// hookflow patch: `abandoned` is set if the body is dropped with more left unread than
    /// can be drained.
    pub fn abandoned_to(mut self, abandoned: Arc<AtomicBool>) -> Self {
        self.abandoned = Some(abandoned);
        self
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        // hookflow patch (see vendor/README.md, upstream tiny-http PR #290): the unread rest of
        // the body is drained through a fixed buffer and only up to DRAIN_LIMIT bytes. The
        // original allocated `vec![0; remaining]` from the client's Content-Length, so one
        // request declaring a huge body aborted the process. Past the limit the connection is
        // left unsynchronised, so the connection is marked for closing (`abandoned`): the
        // unread body must never be parsed as a next request (that would let a client smuggle
        // one past a proxy, in a body the server refused unread).
        let mut remaining_to_read = self.size;
        if remaining_to_read > DRAIN_LIMIT {
            if let Some(a) = &self.abandoned {
                a.store(true, Ordering::SeqCst);
            }
            return;
        }
        let mut buf = [0u8; 8192];

        while remaining_to_read > 0 {
            let want = remaining_to_read.min(buf.len());
            match self.reader.read(&mut buf[..want]) {
                Err(e) => {
                    self.last_read_signal.send(Err(e)).ok();
                    break;
                }
                Ok(0) => {
                    self.last_read_signal.send(Ok(())).ok();
                    break;
                }
                Ok(other) => {
                    remaining_to_read -= other;
                }
            }
        }
        // A drain cut short (a client that stalls past the socket timeout) leaves the rest of
        // the body to come: it must not be read as a request either.
        if remaining_to_read > 0 {
            if let Some(a) = &self.abandoned {
                a.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DrainOnDrop, EqualReader, DRAIN_LIMIT};
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// hookflow patch: a body dropped unread beyond what is drained marks the connection.
    #[test]
    fn a_body_dropped_unread_past_the_drain_limit_is_abandoned() {
        use std::io::Cursor;
        for (len, abandoned) in [(100, false), (DRAIN_LIMIT + 1, true)] {
            let body = vec![b'x'; len];
            let flag = Arc::new(AtomicBool::new(false));
            let (reader, _) = EqualReader::new(Cursor::new(body.clone()), len);
            drop(reader.abandoned_to(flag.clone()));
            assert_eq!(flag.load(Ordering::SeqCst), abandoned, "Content-Length body of {len}");
            // The same as one chunk of a chunked body.
            let chunked = [format!("{len:x}\r\n").into_bytes(), body, b"\r\n0\r\n\r\n".to_vec()].concat();
            let flag = Arc::new(AtomicBool::new(false));
            drop(DrainOnDrop::new(chunked_transfer::Decoder::new(Cursor::new(chunked)), flag.clone()));
            assert_eq!(flag.load(Ordering::SeqCst), abandoned, "chunked body of {len}");
        }
        // A body whose drain stops early (the client stalls: a read fails) is abandoned too.
        struct Stalls;
        impl Read for Stalls {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::TimedOut.into())
            }
        }
        let flag = Arc::new(AtomicBool::new(false));
        drop(EqualReader::new(Stalls, 100).0.abandoned_to(flag.clone()));
        assert!(flag.load(Ordering::SeqCst), "a Content-Length body cut short");
        let flag = Arc::new(AtomicBool::new(false));
        drop(DrainOnDrop::new(Stalls, flag.clone()));
        assert!(flag.load(Ordering::SeqCst), "a chunked body cut short");
    }

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5);

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5);

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }
}
