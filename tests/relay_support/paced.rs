//! A local service that streams a response in pieces, each sent only once the
//! test says the visitor got the one before: a relay that holds bytes back
//! stalls it, so streaming is checked without any timing of its own.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events in each response.
pub const EVENTS: usize = 5;
/// How long the service waits for the visitor to get an event before it gives
/// up: far beyond any scheduling delay on a loaded machine, so only bytes held
/// back until the response ends run into it.
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long the visitor waits for the next bytes: past `ACK_WAIT` and
/// `PAUSE`, so a stalled service reports first and says which event was held back.
pub const VISITOR_WAIT: Duration = Duration::from_secs(20);
/// `/paused-events`' quiet spell before its second event: longer than the
/// 10 s a response head may take to arrive, well within the response timeout.
pub const PAUSE: Duration = Duration::from_millis(10_500);
/// Between the two halves of `/paused-events`' head, so they reach the relay
/// in reads of their own.
const HEAD_GAP: Duration = Duration::from_millis(300);

/// The text of event `i`: one server-sent event.
pub fn event(i: usize) -> String {
    format!("data: event {i}\n\n")
}

/// How the service frames its response, by the request's path.
#[derive(Clone, Copy)]
enum Framing {
    /// `/events`: `text/event-stream`, one chunk per event, kept alive.
    Chunked,
    /// `/paused-events`: as `/events`, its head sent in two halves and
    /// `PAUSE` before the second event, as a quiet stream between heartbeats.
    Paused,
    /// `/until-close`: no Content-Length, the end of the body is the close.
    UntilClose,
    /// `/length`: Content-Length given, the body sent an event at a time.
    Length,
}

/// The paced service on its own port; a thread per connection (`berth share`
/// dials ahead, so some connections never carry a request).
pub struct Paced {
    pub port: u16,
    acks: Sender<()>,
    outcomes: Receiver<Result<(), String>>,
}

impl Paced {
    pub fn start() -> Paced {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (acks, acked) = channel();
        let acked = Arc::new(Mutex::new(acked));
        let (report, outcomes) = channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (acked, report) = (acked.clone(), report.clone());
                std::thread::spawn(move || serve(stream, &acked, &report));
            }
        });
        Paced {
            port,
            acks,
            outcomes,
        }
    }

    /// How the service's last response went: an error names the event the
    /// visitor did not get in time.
    pub fn outcome(&self) -> Result<(), String> {
        self.outcomes
            .recv_timeout(ACK_WAIT * 3)
            .unwrap_or_else(|_| Err("the service never finished a response".into()))
    }

    /// Read from `source` until each event has arrived, telling the service
    /// after each one, then to the end; everything read, or what was missing.
    pub fn watch(&self, source: &mut impl Read) -> Result<Vec<u8>, String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for i in 0..EVENTS {
            let wanted = event(i);
            while !contains(&got, wanted.as_bytes()) {
                match source.read(&mut buf) {
                    Ok(0) => return Err(missing(i, "the response ended", &got)),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(missing(i, &e.to_string(), &got)),
                }
            }
            let _ = self.acks.send(());
        }
        match source.read_to_end(&mut got) {
            Ok(_) => Ok(got),
            Err(e) => Err(format!("the response did not end: {e}")),
        }
    }
}

fn missing(i: usize, why: &str, got: &[u8]) -> String {
    format!(
        "event {i} never reached the visitor ({why}); got {:?}",
        String::from_utf8_lossy(got)
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn serve(stream: TcpStream, acked: &Mutex<Receiver<()>>, report: &Sender<Result<(), String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    while let Some(head) = super::read_head(&mut reader) {
        let path = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
        let framing = match path.as_str() {
            "/until-close" => Framing::UntilClose,
            "/length" => Framing::Length,
            "/paused-events" => Framing::Paused,
            _ => Framing::Chunked,
        };
        let outcome = respond(&mut out, framing, acked);
        let failed = outcome.is_err();
        let _ = report.send(outcome);
        if failed || matches!(framing, Framing::UntilClose) {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Send the head, then each event once the visitor got the one before; the
/// last one too must arrive before the response ends.
fn respond(
    out: &mut TcpStream,
    framing: Framing,
    acked: &Mutex<Receiver<()>>,
) -> Result<(), String> {
    let length: usize = (0..EVENTS).map(|i| event(i).len()).sum();
    let head = match framing {
        Framing::Chunked | Framing::Paused => "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        Framing::UntilClose => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n".to_string(),
        Framing::Length => format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\r\n"),
    };
    let write = |out: &mut TcpStream, bytes: &[u8]| {
        out.write_all(bytes)
            .map_err(|e| format!("the relay stopped taking the response: {e}"))
    };
    if let Framing::Paused = framing {
        let (first, rest) = head.split_at(head.find("\r\n").unwrap_or(0) + 2);
        write(out, first.as_bytes())?;
        std::thread::sleep(HEAD_GAP);
        write(out, rest.as_bytes())?;
    } else {
        write(out, head.as_bytes())?;
    }
    let acked = acked.lock().unwrap();
    for i in 0..EVENTS {
        let text = event(i);
        if i == 1 && matches!(framing, Framing::Paused) {
            std::thread::sleep(PAUSE);
        }
        match framing {
            Framing::Chunked | Framing::Paused => {
                write(out, format!("{:x}\r\n{text}\r\n", text.len()).as_bytes())?
            }
            Framing::UntilClose | Framing::Length => write(out, text.as_bytes())?,
        }
        if acked.recv_timeout(ACK_WAIT).is_err() {
            return Err(format!(
                "event {i} did not reach the visitor within {ACK_WAIT:?} of being sent"
            ));
        }
    }
    if let Framing::Chunked | Framing::Paused = framing {
        write(out, b"0\r\n\r\n")?;
    }
    Ok(())
}
