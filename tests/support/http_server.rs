//! A small real HTTP/1.1 server on 127.0.0.1 for the model-manager tests: one thread per
//! connection, `Range: bytes=N-` answered with 206 (or 416), and per-path behaviours that
//! real servers show — a 404, a connection dropped mid-file, a slow trickle, a server that
//! ignores Range, an HTML error page, a stall. Every request is logged with its Range.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a path is served.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The bytes, honouring Range.
    Serve,
    /// 404 Not Found.
    NotFound,
    /// On each of the first `times` requests, send the headers of the full answer, then only
    /// `after` bytes of the body, then close the connection.
    DropAfter { after: usize, times: usize },
    /// Send the body `chunk` bytes at a time with `delay` between chunks.
    Slow { chunk: usize, delay: Duration },
    /// Always answer 200 with the whole body, whatever the Range.
    IgnoreRange,
    /// 200 with `Content-Type: text/html` and a small page.
    Html,
    /// Send the headers and `after` bytes, then go silent (keeping the connection open)
    /// for `silence`.
    Stall { after: usize, silence: Duration },
}

#[derive(Debug, Clone)]
struct Resource {
    body: Arc<Vec<u8>>,
    mode: Mode,
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
}

pub struct Server {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Resource>>>,
    log: Arc<Mutex<Vec<Request>>>,
    /// Requests served per path, for `DropAfter`.
    counts: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = Self {
            port,
            routes: Arc::default(),
            log: Arc::default(),
            counts: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (routes, log, counts, stop) =
            (server.routes.clone(), server.log.clone(), server.counts.clone(), server.stop.clone());
        std::thread::Builder::new()
            .name("test-http-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (routes, log, counts) = (routes.clone(), log.clone(), counts.clone());
                    let _ = std::thread::Builder::new()
                        .name("test-http-conn".into())
                        .spawn(move || handle(stream, &routes, &log, &counts));
                }
            })
            .expect("spawn");
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn route(&self, path: &str, body: Vec<u8>, mode: Mode) {
        self.routes.lock().unwrap().insert(path.to_owned(), Resource { body: Arc::new(body), mode });
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Resource>>,
    log: &Mutex<Vec<Request>>,
    counts: &Mutex<HashMap<String, usize>>,
) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_owned());
            }
        }
    }
    log.lock().unwrap().push(Request { path: path.clone(), range: range.clone() });
    let nth = {
        let mut c = counts.lock().unwrap();
        let n = c.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let resource = routes.lock().unwrap().get(&path).cloned();
    let Some(res) = resource else {
        respond(&mut stream, "404 Not Found", &[], b"not found");
        return;
    };
    let body = &res.body[..];
    match res.mode {
        Mode::NotFound => respond(&mut stream, "404 Not Found", &[], b"not found"),
        Mode::Html => respond(
            &mut stream,
            "200 OK",
            &[("Content-Type", "text/html; charset=utf-8".into())],
            b"<html><body>quota exceeded</body></html>",
        ),
        Mode::IgnoreRange => respond(&mut stream, "200 OK", &[], body),
        _ => {
            let start = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-'));
            let start: usize = start.and_then(|s| s.parse().ok()).unwrap_or(0);
            if start >= body.len() && range.is_some() {
                respond(
                    &mut stream,
                    "416 Range Not Satisfiable",
                    &[("Content-Range", format!("bytes */{}", body.len()))],
                    b"",
                );
                return;
            }
            let part = &body[start..];
            let (status, extra) = if range.is_some() {
                (
                    "206 Partial Content",
                    vec![("Content-Range", format!("bytes {start}-{}/{}", body.len() - 1, body.len()))],
                )
            } else {
                ("200 OK", vec![])
            };
            if write_head(&mut stream, status, &extra, part.len()).is_err() {
                return;
            }
            match res.mode {
                Mode::DropAfter { after, times } if nth <= times => {
                    let _ = stream.write_all(&part[..after.min(part.len())]);
                    let _ = stream.flush();
                    let _ = stream.shutdown(Shutdown::Both);
                }
                Mode::Slow { chunk, delay } => {
                    for c in part.chunks(chunk.max(1)) {
                        if stream.write_all(c).and_then(|()| stream.flush()).is_err() {
                            return;
                        }
                        std::thread::sleep(delay);
                    }
                }
                Mode::Stall { after, silence } => {
                    let _ = stream.write_all(&part[..after.min(part.len())]);
                    let _ = stream.flush();
                    std::thread::sleep(silence);
                }
                _ => {
                    let _ = stream.write_all(part);
                }
            }
        }
    }
}

fn write_head(stream: &mut TcpStream, status: &str, extra: &[(&str, String)], len: usize) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        head.push_str("Content-Type: application/octet-stream\r\n");
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

fn respond(stream: &mut TcpStream, status: &str, extra: &[(&str, String)], body: &[u8]) {
    if write_head(stream, status, extra, body.len()).is_ok() {
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// sha256 as lowercase hex.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
