//! The control channel's wire format: command lines in (length-capped,
//! cancel-safe) and replies out (one line per reply line, with CR/LF in any
//! text flattened so that no name or argument can forge a reply line).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("command line longer than {0} bytes")]
    TooLong(usize),
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads CRLF (or LF) terminated command lines, never buffering more than
/// `max` bytes. `next` is cancel-safe: bytes read stay in the buffer.
pub struct LineReader {
    buf: BytesMut,
    max: usize,
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(512),
            max,
        }
    }

    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<String, LineError> {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                if i > self.max {
                    return Err(LineError::TooLong(self.max));
                }
                let line = self.buf.split_to(i + 1);
                return Ok(clean(&line));
            }
            if self.buf.len() > self.max {
                return Err(LineError::TooLong(self.max));
            }
            let room = (self.max + 1 - self.buf.len()).min(chunk.len());
            let n = r.read(&mut chunk[..room]).await?;
            if n == 0 {
                return Err(LineError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Drops whatever the client sent after the current line: after `AUTH
    /// TLS` nothing sent in clear text may be taken as a command.
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        n
    }
}

/// The text of a line: line ending removed, Telnet IAC sequences and other
/// leading control bytes (sent before ABOR by some clients) skipped.
fn clean(line: &[u8]) -> String {
    let end = line
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    let start = line[..end]
        .iter()
        .position(|&b| b.is_ascii_graphic() || b == b' ')
        .unwrap_or(end);
    String::from_utf8_lossy(&line[start..end]).into_owned()
}

/// Splits a command line into its upper-cased verb and its argument.
pub fn split(line: &str) -> (String, &str) {
    match line.split_once(' ') {
        Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
        None => (line.trim().to_ascii_uppercase(), ""),
    }
}

/// A reply text made safe for one line: CR, LF and other control characters
/// become spaces.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Formats a reply; several lines become an RFC 959 multi-line reply.
pub fn reply(code: u16, lines: &[&str]) -> String {
    match lines {
        [] => format!("{code} \r\n"),
        [one] => format!("{code} {}\r\n", one_line(one)),
        [first, middle @ .., last] => {
            let mut out = format!("{code}-{}\r\n", one_line(first));
            for l in middle {
                // A middle line must not start with a code and a space.
                out.push(' ');
                out.push_str(&one_line(l));
                out.push_str("\r\n");
            }
            out.push_str(&format!("{code} {}\r\n", one_line(last)));
            out
        }
    }
}

/// A path quoted for a 257 reply: embedded quotes are doubled (RFC 959).
pub fn quote_path(p: &str) -> String {
    format!("\"{}\"", one_line(p).replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_split_at_newline_and_the_cap_holds() {
        let mut r = LineReader::new(16);
        let mut input: &[u8] = b"USER qa\r\nPASS x\nNOOP\r\n";
        assert_eq!(r.next(&mut input).await.unwrap(), "USER qa");
        assert_eq!(r.next(&mut input).await.unwrap(), "PASS x");
        assert_eq!(r.next(&mut input).await.unwrap(), "NOOP");
        assert!(matches!(r.next(&mut input).await, Err(LineError::Closed)));

        let long = vec![b'A'; 100];
        let mut input: &[u8] = &long;
        assert!(matches!(
            r.next(&mut input).await,
            Err(LineError::TooLong(16))
        ));
        // The cap counts every byte before the LF, CR included.
        let mut r = LineReader::new(16);
        let mut input: &[u8] = b"0123456789abcdef\r\n";
        assert!(matches!(
            r.next(&mut input).await,
            Err(LineError::TooLong(16))
        ));
        let mut r = LineReader::new(16);
        let mut input: &[u8] = b"0123456789abcde\n";
        assert_eq!(r.next(&mut input).await.unwrap(), "0123456789abcde");
    }

    #[tokio::test]
    async fn telnet_bytes_before_abor_are_skipped() {
        let mut r = LineReader::new(64);
        let mut input: &[u8] = b"\xff\xf4\xff\xf2ABOR\r\n";
        assert_eq!(r.next(&mut input).await.unwrap(), "ABOR");
    }

    #[test]
    fn replies_cannot_be_forged() {
        assert_eq!(
            reply(550, &["no such file: a\r\n230 fake"]),
            "550 no such file: a  230 fake\r\n"
        );
        assert_eq!(reply(211, &["a", "b", "c"]), "211-a\r\n b\r\n211 c\r\n");
        assert_eq!(quote_path("/a\"b"), "\"/a\"\"b\"");
        assert_eq!(split("retr  /x "), ("RETR".to_string(), "/x"));
        assert_eq!(split("NOOP"), ("NOOP".to_string(), ""));
    }
}
