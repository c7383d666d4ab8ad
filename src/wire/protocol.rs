//! The relay's control protocol: newline-delimited JSON frames of one serde enum.

use std::io;
#[cfg(any(test, fuzzing))]
use std::io::{Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `Upgrade` token of both relay paths.
pub const UPGRADE: &str = "berth-relay/1";
/// Largest control frame, newline included; a longer one closes the control connection.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Each side sends a ping after this long without sending anything.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// A control connection silent for this long is closed.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// One control frame, written as one JSON line: `{"connect":{"id":"..."}}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Frame {
    /// Server → client, once after the 101: the tunnel is live at `url`.
    Ready { tunnel_id: String, url: String },
    /// Server → client: a public connection waits; open `accept/{id}` for it.
    Connect { id: String },
    /// Server → client, after each request through the tunnel has been answered:
    /// what the inspector recorded (path redacted as recorded, cut to 4 KiB), from
    /// which `berth share` prints its per-request lines.
    Request {
        method: String,
        path: String,
        status: u16,
        duration_ms: u64,
        bytes_in: u64,
        bytes_out: u64,
    },
    /// Server → client, last: the tunnel was closed on purpose (an admin, a
    /// revoked token); the client should not reconnect.
    Closed { reason: String },
    /// Either way: are you there?
    Ping {},
    /// Either way: the answer to a ping.
    Pong {},
}

/// Write one frame and flush it (the checks' way; the relay and `share`
/// write frames on the event loop).
#[cfg(any(test, fuzzing))]
pub fn write_frame(to: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let mut line = serde_json::to_vec(frame).map_err(io::Error::other)?;
    line.push(b'\n');
    to.write_all(&line)?;
    to.flush()
}

/// Reads frames from a stream, keeping a partial line across read timeouts
/// (the checks' way; see [`crate::wire::control::Frames`] on the event loop).
#[cfg(any(test, fuzzing))]
pub struct FrameReader<R> {
    stream: R,
    buf: Vec<u8>,
}

#[cfg(any(test, fuzzing))]
impl<R: Read> FrameReader<R> {
    pub fn new(stream: R) -> FrameReader<R> {
        FrameReader {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next frame. A read timeout surfaces as `WouldBlock`/`TimedOut` and
    /// loses nothing; EOF, a frame over `MAX_FRAME_BYTES` or bad JSON is an error.
    pub fn read(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let want = chunk.len().min(MAX_FRAME_BYTES - self.buf.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The first frame of `buf`, taken out of it; an error for bad JSON or a
/// frame over `MAX_FRAME_BYTES`; None while its line is incomplete.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<io::Result<Frame>> {
    if let Some(at) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=at).collect();
        return Some(
            serde_json::from_slice(&line[..at])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        );
    }
    (buf.len() >= MAX_FRAME_BYTES).then(|| {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control frame larger than 64 KiB",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(frame: &Frame) -> String {
        let mut out = Vec::new();
        write_frame(&mut out, frame).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn frames_have_the_documented_shape() {
        let ready = Frame::Ready {
            tunnel_id: "t1".into(),
            url: "http://a.localhost:8080".into(),
        };
        assert_eq!(
            wire(&ready),
            "{\"ready\":{\"tunnel_id\":\"t1\",\"url\":\"http://a.localhost:8080\"}}\n"
        );
        assert_eq!(
            wire(&Frame::Connect { id: "ab".into() }),
            "{\"connect\":{\"id\":\"ab\"}}\n"
        );
        assert_eq!(
            wire(&Frame::Closed {
                reason: "closed by an admin".into()
            }),
            "{\"closed\":{\"reason\":\"closed by an admin\"}}\n"
        );
        let request = Frame::Request {
            method: "GET".into(),
            path: "/a?b=1".into(),
            status: 200,
            duration_ms: 3,
            bytes_in: 0,
            bytes_out: 512,
        };
        assert_eq!(
            wire(&request),
            "{\"request\":{\"method\":\"GET\",\"path\":\"/a?b=1\",\"status\":200,\"duration_ms\":3,\"bytes_in\":0,\"bytes_out\":512}}\n"
        );
        assert_eq!(wire(&Frame::Ping {}), "{\"ping\":{}}\n");
        assert_eq!(wire(&Frame::Pong {}), "{\"pong\":{}}\n");
    }

    #[test]
    fn frames_read_back_one_per_line() {
        let text = format!("{}{}", wire(&Frame::Ping {}), wire(&Frame::Pong {}));
        let mut reader = FrameReader::new(text.as_bytes());
        assert_eq!(reader.read().unwrap(), Frame::Ping {});
        assert_eq!(reader.read().unwrap(), Frame::Pong {});
        assert!(reader.read().is_err());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused() {
        let id = "a".repeat(MAX_FRAME_BYTES);
        let text = wire(&Frame::Connect { id });
        let mut reader = FrameReader::new(text.as_bytes());
        assert_eq!(
            reader.read().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let id = "a".repeat(MAX_FRAME_BYTES - 100);
        let text = wire(&Frame::Connect { id: id.clone() });
        assert_eq!(
            FrameReader::new(text.as_bytes()).read().unwrap(),
            Frame::Connect { id }
        );
    }

    #[test]
    fn unknown_frames_are_errors() {
        let mut reader = FrameReader::new(&b"{\"launch\":{}}\n"[..]);
        assert!(reader.read().is_err());
    }
}

/// Properties of the frame reader on any input: by proptest here (CI,
/// bounded) and by the cargo-fuzz target in `fuzz/`.
#[cfg(any(test, fuzzing))]
pub mod props {
    use super::*;

    /// Read frames from `raw` until an error: never a panic or a hang, a
    /// frame only from a line within the limit, and every frame read writes
    /// back as one line within the limit that reads to the same frame.
    pub fn control_frames(raw: &[u8]) {
        let mut reader = FrameReader::new(raw);
        let mut consumed = 0;
        // Each frame takes at least its newline: no more frames than lines.
        for _ in 0..=raw.iter().filter(|&&b| b == b'\n').count() {
            let Ok(frame) = reader.read() else { return };
            let line_end = consumed
                + raw[consumed..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("a frame ends at a newline");
            assert!(line_end - consumed < MAX_FRAME_BYTES);
            consumed = line_end + 1;
            let mut wire = Vec::new();
            write_frame(&mut wire, &frame).unwrap();
            assert!(wire.len() <= MAX_FRAME_BYTES, "{}", wire.len());
            assert_eq!(FrameReader::new(&wire[..]).read().unwrap(), frame);
        }
        panic!("more frames than lines");
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        /// Lines of frame-like JSON, some mangled.
        fn lines() -> impl Strategy<Value = Vec<u8>> {
            let line = prop::sample::select(vec![
                r#"{"ping":{}}"#,
                r#"{"pong":{}}"#,
                r#"{"connect":{"id":"a\u0000b\"c"}}"#,
                r#"{"ready":{"tunnel_id":"t","url":"http://x"}}"#,
                r#"{"request":{"method":"GET","path":"/\u009b\u202e","status":200,"duration_ms":1,"bytes_in":18446744073709551615,"bytes_out":0}}"#,
                r#"{"request":{"method":"GET","path":"/","status":70000,"duration_ms":1,"bytes_in":0,"bytes_out":0}}"#,
                r#"{"closed":{"reason":"x","extra":1}}"#,
                r#"{"ping":{},"pong":{}}"#,
                r#"{"ping":null}"#,
                r#"[1,2]"#,
                "",
            ]);
            let mangle = (any::<prop::sample::Index>(), any::<u8>());
            (
                prop::collection::vec(line, 0..6),
                prop::collection::vec(mangle, 0..3),
            )
                .prop_map(|(lines, mangles)| {
                    let mut raw = lines.join("\n").into_bytes();
                    for (at, byte) in mangles {
                        if !raw.is_empty() {
                            let at = at.index(raw.len());
                            raw[at] = byte;
                        }
                    }
                    raw
                })
        }

        proptest! {
            #[test]
            fn frames_of_plausible_lines(raw in lines()) {
                control_frames(&raw);
            }

            #[test]
            fn frames_of_any_bytes(raw in prop::collection::vec(any::<u8>(), 0..200)) {
                control_frames(&raw);
            }
        }

        #[test]
        fn a_long_line_is_refused_however_it_arrives() {
            let mut raw = vec![b' '; MAX_FRAME_BYTES];
            raw.extend_from_slice(b"{\"ping\":{}}\n");
            control_frames(&raw);
            assert!(FrameReader::new(&raw[..]).read().is_err());
        }
    }
}
