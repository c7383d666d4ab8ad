//! Control frames read and written on the event loop.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{take_frame, Frame, MAX_FRAME_BYTES};

/// Reads and writes frames on a connection, which it owns.
pub struct Frames<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Frames<S> {
    /// Frames from `stream`, after the bytes that came with its handshake.
    pub fn new(stream: S, already: Vec<u8>) -> Frames<S> {
        Frames {
            stream,
            buf: already,
        }
    }

    /// Whether a whole frame is buffered already (the next `next` will not wait).
    pub fn has_frame(&self) -> bool {
        self.buf.contains(&b'\n')
    }

    /// The next frame. Cancel-safe: a `select!` that drops it loses no byte.
    /// EOF, a frame over `MAX_FRAME_BYTES` or bad JSON is an error.
    pub async fn next(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let want = chunk.len().min(MAX_FRAME_BYTES - self.buf.len());
            match self.stream.read(&mut chunk[..want]).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Frames<S> {
    /// Write one frame and flush it.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let mut line = serde_json::to_vec(frame).map_err(io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line).await?;
        self.stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_and_handshake_bytes_are_kept() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (near, mut far) = tokio::io::duplex(64);
            let mut frames = Frames::new(near, b"{\"ping\":{}}\n{\"po".to_vec());
            assert!(frames.has_frame());
            assert_eq!(frames.next().await.unwrap(), Frame::Ping {});
            far.write_all(b"ng\":{}}\n").await.unwrap();
            assert_eq!(frames.next().await.unwrap(), Frame::Pong {});
            frames.send(&Frame::Ping {}).await.unwrap();
            let mut line = [0u8; 12];
            far.read_exact(&mut line).await.unwrap();
            assert_eq!(&line, b"{\"ping\":{}}\n");
            far.write_all(b"{\"nope\":1}\n").await.unwrap();
            assert!(frames.next().await.is_err());
            drop(far);
            assert!(frames.next().await.is_err());
        });
    }
}
