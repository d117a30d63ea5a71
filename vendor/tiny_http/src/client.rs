use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, Method};
use crate::util::refined_tcp_stream::Deadline;
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriter, SequentialWriterBuilder};
use crate::{Limits, Request};

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // hookflow patch (see vendor/README.md): bounds on request heads, and their state.
    limits: Limits,
    /// Deadline of the reads of the request head being read.
    deadline: Deadline,
    /// Bytes of the current request head read so far.
    head_bytes: usize,
    /// No request has been read yet (its head deadline runs from the accept).
    first: bool,
    /// The answer to the request handed out last: what its handler writes comes through the
    /// channel, and this connection's own thread writes it to the socket (see `next`).
    answer: Option<(std::sync::mpsc::Receiver<Vec<u8>>, SequentialWriter<BufWriter<RefinedTcpStream>>)>,
    /// That request's body was not read (over the limit): once its answer is out, the
    /// connection lingers and closes.
    close_after_answer: bool,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// hookflow patch: answer this error (JSON) and close the connection.
    Reject(Rejection),
    ReadIoError(IoError),
}

/// hookflow patch: a request refused before it reaches the application.
#[derive(Debug)]
struct Rejection {
    status: u16,
    code: &'static str,
    message: &'static str,
}

/// A 400 `bad_request`.
fn bad(message: &'static str) -> ReadError {
    ReadError::Reject(bad_rejection(message))
}

fn bad_rejection(message: &'static str) -> Rejection {
    Rejection {
        status: 400,
        code: "bad_request",
        message,
    }
}

/// hookflow patch: after an answer that closes the connection, what the client still sends is
/// read and dropped for up to this long (and `LINGER_BYTES`), so that closing with unread data
/// does not reset the connection before the client has read the answer (RFC 9112 §9.6).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        Self::with_limits(write_socket, read_socket, Limits::default())
    }

    /// hookflow patch: the same, with bounds on request heads.
    pub(crate) fn with_limits(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Limits,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        let deadline = read_socket.deadline();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits,
            deadline,
            head_bytes: 0,
            first: true,
            answer: None,
            close_after_answer: false,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    ///
    /// hookflow patch: the whole head (request line and headers) is bounded by
    /// `limits.max_header_bytes` (431 beyond, and nothing past the bound is buffered); a line
    /// must end with CRLF (a bare LF or CR is a 400, RFC 9112 §2.2), hold no other control
    /// character and be ASCII (400, where upstream dropped the connection); the first byte of a
    /// request starts its head deadline.
    fn read_next_line(&mut self) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(b) => b.map_err(ReadError::ReadIoError)?,
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };

            if self.head_bytes == 0 && self.deadline.get().is_none() {
                self.deadline
                    .set(Some(Instant::now() + self.limits.header_timeout));
            }
            self.head_bytes += 1;
            if self.head_bytes > self.limits.max_header_bytes {
                return Err(ReadError::Reject(Rejection {
                    status: 431,
                    code: "headers_too_large",
                    message: "the request line and headers are larger than this server accepts",
                }));
            }

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf)
                    .map_err(|_| bad("the request line or a header is not ASCII"));
            }
            if byte == b'\n' || prev_byte_was_cr {
                return Err(bad("lines of the request head must end with CRLF"));
            }
            if byte >= 0x80 {
                return Err(bad("the request line or a header is not ASCII"));
            }
            if (byte < 0x20 && byte != b'\t' && byte != b'\r') || byte == 0x7f {
                return Err(bad("the request line or a header holds a control character"));
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // hookflow patch: the head of the first request must arrive within the header timeout
        // of the accept; that of a later one within the timeout of its first byte (before it,
        // the socket's idle timeout applies).
        self.head_bytes = 0;
        if self.first {
            self.first = false;
            self.deadline
                .set(Some(Instant::now() + self.limits.header_timeout));
        }
        let head = self.read_head();
        self.deadline.set(None);
        let (method, path, version, headers) = match head {
            Ok(head) => head,
            // A client that stopped in the middle of a head gets a 408; an idle one (nothing
            // of a next request sent) is closed silently, as it may be sending one just now.
            Err(ReadError::ReadIoError(ref e))
                if self.head_bytes > 0
                    && matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
            {
                return Err(ReadError::Reject(Rejection {
                    status: 408,
                    code: "request_timeout",
                    message: "the request line and headers did not arrive in time",
                }));
            }
            Err(e) => return Err(e),
        };

        // building the writer for the request; hookflow patch: the handler writes into a
        // channel, and this connection's thread writes to the socket (`next`)
        let mut writer = self.sink.next().unwrap();
        let (answer_tx, answer_rx) = std::sync::mpsc::channel();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader; the body is read meanwhile (hookflow patch), within its
        // own deadline
        self.deadline
            .set(Some(Instant::now() + self.limits.body_timeout));
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version,
            headers,
            self.remote_addr.as_ref().ok().copied().flatten(),
            data_source,
            ChannelWriter::new(answer_tx),
            self.limits.max_body_bytes,
            &mut writer,
        );
        self.deadline.set(None);
        let request = request.map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e)
                    if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
                {
                    ReadError::Reject(Rejection {
                        status: 408,
                        code: "request_timeout",
                        message: "the request body did not arrive in time",
                    })
                }
                // chunked_transfer's decoder says so of a chunk size or ending it cannot read
                request::RequestCreationError::CreationIoError(e)
                    if e.kind() == ErrorKind::InvalidInput =>
                {
                    ReadError::Reject(bad_rejection("the chunked body is not well formed"))
                }
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::Reject(Rejection {
                        status: 417,
                        code: "expectation_failed",
                        message: "the only Expect this server knows is 100-continue",
                    })
                }
            }
        })?;

        // return the request
        // Only now: a request refused above is answered by `reject` in the next slot, which
        // waits for this one to be let go.
        self.answer = Some((answer_rx, writer));
        Ok(request)
    }

    /// Reads and checks the request line and the headers.
    fn read_head(&mut self) -> Result<(Method, String, HTTPVersion, Vec<Header>), ReadError> {
        // reading the request line; empty lines before it are ignored (RFC 9112 §2.2)
        let line = loop {
            let line = self.read_next_line()?;
            if !line.is_empty() {
                break line;
            }
        };
        let (method, path, version) = parse_request_line(line.as_str())?;
        if version > (1, 1) {
            return Err(ReadError::Reject(Rejection {
                status: 505,
                code: "http_version_not_supported",
                message: "this server only supports HTTP versions 1.0 and 1.1",
            }));
        }

        // getting all headers
        let mut headers = Vec::new();
        loop {
            let line = self.read_next_line()?;

            if line.is_empty() {
                break;
            };
            // obsolete line folding (a line starting with whitespace) is refused, RFC 9112 §5.2
            if line.as_str().starts_with([' ', '\t']) {
                return Err(bad("header lines must not be folded"));
            }
            match Header::from_str(line.as_str().trim_end()) {
                Ok(h) if is_token(h.field.as_str().as_str()) => headers.push(h),
                _ => return Err(bad("a header line is not `name: value`")),
            }
        }

        check_framing(&headers)?;
        Ok((method, path, version, headers))
    }

    /// hookflow patch: answers a refused request with a JSON error and closes the connection:
    /// the answer is flushed, the write side shut (the client reads it, then end of stream),
    /// and what the client still sends is read for a moment before the socket closes.
    fn reject(&mut self, r: Rejection) {
        use crate::response::json_error;
        let writer = self.sink.next().unwrap();
        json_error(r.status, r.code, r.message)
            .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
            .ok();
        self.linger();
    }

    /// hookflow patch: closes our side after what was answered has gone out, and reads (and
    /// drops) for a moment what the client still sends, so that closing does not reset the
    /// connection under the answer it has not read yet.
    fn linger(&mut self) {
        self.sink.with_inner(|w| {
            w.flush().ok();
            w.get_mut().shutdown_write().ok();
        });
        self.deadline.set(Some(Instant::now() + LINGER_TIME));
        let mut scratch = [0u8; 8192];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match self.next_header_source.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
        self.deadline.set(None);
    }
}

/// hookflow patch: RFC 9112 §6 framing, checked before a body is read, so that a request cannot
/// mean one thing here and another to a proxy in front. A `Transfer-Encoding` other than exactly
/// `chunked` is not implemented (501); `Transfer-Encoding` together with `Content-Length`, more
/// than one `Content-Length`, or one that is not a number is a 400. All close the connection.
fn check_framing(headers: &[Header]) -> Result<(), ReadError> {
    let mut te = headers.iter().filter(|h| h.field.equiv("Transfer-Encoding"));
    let mut cl = headers.iter().filter(|h| h.field.equiv("Content-Length"));
    let (first_te, first_cl) = (te.next(), cl.next());
    if first_te.is_some() && first_cl.is_some() {
        return Err(bad(
            "a request must not have both Transfer-Encoding and Content-Length",
        ));
    }
    if let Some(h) = first_te {
        if te.next().is_some() || !h.value.as_str().trim().eq_ignore_ascii_case("chunked") {
            return Err(ReadError::Reject(Rejection {
                status: 501,
                code: "not_implemented",
                message: "the only Transfer-Encoding this server accepts is chunked",
            }));
        }
    }
    if let Some(h) = first_cl {
        if cl.next().is_some() {
            return Err(bad("a request must not have more than one Content-Length"));
        }
        let v = h.value.as_str().trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.parse::<usize>().is_err() {
            return Err(bad("Content-Length must be a number of bytes"));
        }
    }
    Ok(())
}

/// A header name: one or more `tchar` (RFC 9110 §5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // hookflow patch: the answer to the previous request is written here, on this
        // connection's own thread, as its handler writes it (until the handler lets go of it):
        // a client that does not read its answers holds this thread, never a handler. Requests
        // of a connection are thus handed out one at a time, each once the one before is
        // answered (pipelined requests are still read and answered in order).
        if let Some((chunks, mut socket)) = self.answer.take() {
            let mut written = true;
            for chunk in chunks.iter() {
                if socket.write_all(&chunk).and_then(|()| socket.flush()).is_err() {
                    written = false;
                    break;
                }
            }
            drop(socket);
            if !written {
                return None;
            }
            // The previous request's body was not read; its answer (which says `Connection:
            // close`) is out: the connection closes, lingering as a rejection does so that the
            // client can read that answer.
            if self.close_after_answer {
                self.linger();
                return None;
            }
        }

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        let rq = match self.read() {
            Err(ReadError::Reject(r)) => {
                self.reject(r);
                return None; // we don't know where the next request would start,
                             // se we have to close
            }

            Err(ReadError::ReadIoError(_)) => return None,

            Ok(rq) => rq,
        };
        self.close_after_answer = rq.closes_after();

        // updating the status of the connection
        let connection_header = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Connection"))
            .map(|h| h.value.as_str());

        let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

        match lowercase {
            Some(ref val) if val.contains("close") => self.no_more_requests = true,
            Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
            Some(ref val)
                if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
            {
                self.no_more_requests = true
            }
            None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
            _ => (),
        };

        // returning the request
        Some(rq)
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(bad("the request line is not `METHOD target HTTP/1.1`")),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
///
/// hookflow patch: exactly three parts separated by single spaces, as RFC 9112 §3 has it.
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().filter(|p| !p.is_empty()).map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());
    if parts.next().is_some() {
        return Err(bad("the request line is not `METHOD target HTTP/1.1`"));
    }

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or_else(|| bad("the request line is not `METHOD target HTTP/1.1`"))
}

/// hookflow patch: the writer a request's handler writes its answer into. It keeps what is
/// written and hands it to the connection's thread at each flush (and when dropped), without
/// ever waiting: a client that does not read holds that thread only.
struct ChannelWriter {
    buffer: Vec<u8>,
    to: std::sync::mpsc::Sender<Vec<u8>>,
}

impl ChannelWriter {
    fn new(to: std::sync::mpsc::Sender<Vec<u8>>) -> ChannelWriter {
        ChannelWriter { buffer: Vec::new(), to }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.buffer.extend_from_slice(buf);
        // A large answer goes in parts, so the client gets its beginning while the rest is made.
        if self.buffer.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> IoResult<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buffer);
        self.to
            .send(chunk)
            .map_err(|_| IoError::new(ErrorKind::BrokenPipe, "the connection is closed"))
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
