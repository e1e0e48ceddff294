//! A TCP relay on loopback between syncease and a server, to see and bend what a run asks: it
//! counts connections and (for HTTP, as to Garage) requests by kind, and can lose the answer to
//! one request or go silent from one request on. A relay changes nothing a signature covers: the client signs the Host it
//! connects to, and that is the Host the server receives.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does to requests whose request line (`PUT /bucket/key?… HTTP/1.1`) matches.
#[derive(Clone, Copy, Debug)]
pub enum Bend {
    /// Pass the first such request on, wait for the server's whole answer, drop it, and close
    /// the client's connection: the request is done, the client never hears so.
    LoseAnswer(fn(&str) -> bool),
    /// From the first such request on, pass nothing more on and answer nothing, on every
    /// connection, new ones included.
    GoSilent(fn(&str) -> bool),
    /// Answer every such request with a server error (500) in the server's stead, and close
    /// that connection: the request never reaches the server.
    Fail(fn(&str) -> bool),
    /// Answer every request whose head (request line and headers, lower-cased) is such with
    /// S3's 501 NotImplemented in the server's stead: the request never reaches the server.
    Refuse(fn(&str) -> bool),
    /// Once `after` more bytes went from clients to the server (over every connection), cut every
    /// connection open then; with `then_refuse`, close every later one at once (a host gone).
    Cut { after: u64, then_refuse: bool },
}

/// The answers of [`Bend::Fail`] and [`Bend::Refuse`].
const FAILED: &str = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\
                      Connection: close\r\n\r\n";
const NOT_IMPLEMENTED: &str = "HTTP/1.1 501 Not Implemented\r\nContent-Type: application/xml\r\n\
    Content-Length: 119\r\nConnection: close\r\n\r\n\
    <?xml version=\"1.0\" encoding=\"UTF-8\"?>\
    <Error><Code>NotImplemented</Code><Message>Not implemented here</Message></Error>";

#[derive(Default)]
struct State {
    counts: BTreeMap<String, u64>,
    /// Each request's head: its request line and headers (as much as came with the line).
    heads: Vec<String>,
    /// Connections accepted.
    connections: u64,
    /// Connections cut by [`Bend::Cut`].
    cut: u64,
    /// Bytes passed from clients to the server.
    forwarded: u64,
    /// The client side of every connection, to cut them.
    live: Vec<TcpStream>,
    /// New connections are closed at once.
    refusing: bool,
    /// Connections accepted from now on, before the others are closed at once.
    accepting: Option<u64>,
    bend: Option<Bend>,
    silent: bool,
}

pub struct Relay {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl Relay {
    pub fn start(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                {
                    let mut st = shared.lock().unwrap();
                    let full = st.accepting == Some(0);
                    if let Some(n) = &mut st.accepting {
                        *n = n.saturating_sub(1);
                    }
                    if st.refusing || full {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let state = shared.clone();
                {
                    let mut st = state.lock().unwrap();
                    st.connections += 1;
                    if let Ok(clone) = client.try_clone() {
                        st.live.push(clone);
                    }
                }
                std::thread::spawn(move || relay(client, server, state));
            }
        });
        Relay { endpoint, state }
    }

    /// Bend what comes from now on (`Cut` counts the bytes from now on).
    pub fn bend(&self, bend: Bend) {
        let mut st = self.state.lock().unwrap();
        st.bend = Some(bend);
        st.forwarded = 0;
    }

    /// Accept `n` more connections, and close every later one at once (a server capping a
    /// user's connections).
    pub fn accept_only(&self, n: u64) {
        self.state.lock().unwrap().accepting = Some(n);
    }

    /// Connections cut so far (see [`Bend::Cut`]).
    pub fn cut(&self) -> u64 {
        self.state.lock().unwrap().cut
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.lock().unwrap().connections
    }

    /// The heads of the requests since the last call (request line and headers).
    pub fn heads(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().heads)
    }

    /// Requests per kind since the last call: the method, or `LIST` for a bucket listing.
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.state.lock().unwrap().counts)
    }
}

/// A request line's kind: its method, or `LIST` for a GET of a bucket listing.
fn kind(line: &str) -> String {
    let method = line.split(' ').next().unwrap_or_default();
    let query = line.split(' ').nth(1).and_then(|t| t.split_once('?'));
    match query {
        Some((_, q)) if method == "GET" && q.split('&').any(|p| p.starts_with("list-type=")) => {
            "LIST".into()
        }
        _ => method.into(),
    }
}

fn relay(mut client: TcpStream, mut server: TcpStream, state: Arc<Mutex<State>>) {
    // Set when the answer now coming is to be dropped, and the client cut off after it.
    let lose = Arc::new(AtomicBool::new(false));
    let (mut client_back, mut server_back) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let losing = lose.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 << 10];
        loop {
            let n = match server_back.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if losing.load(Ordering::SeqCst) {
                // The answer's head is enough to know the server has acted (Garage answers
                // a Complete when it is done); the client never sees it.
                std::thread::sleep(Duration::from_millis(200));
                break;
            }
            if client_back.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = client_back.shutdown(Shutdown::Both);
    });
    // Request lines are found by their shape (METHOD /target HTTP/1.1), wherever a body
    // before them ended; the unparsed rest of a read is kept for the next one.
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if state.lock().unwrap().silent {
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut parsed = 0;
        let mut go_silent = false;
        let mut fail = None;
        loop {
            let next = METHODS
                .iter()
                .filter_map(|m| find(&pending[parsed..], m.as_bytes()))
                .min();
            let Some(at) = next else { break };
            let start = parsed + at;
            let Some(len) = find(&pending[start..], b"\r\n") else {
                break;
            };
            let line = String::from_utf8_lossy(&pending[start..start + len]).into_owned();
            parsed = start + len + 2;
            if !line.ends_with(" HTTP/1.1") {
                continue;
            }
            let head_end = find(&pending[start..], b"\r\n\r\n").unwrap_or(pending.len() - start);
            let head = String::from_utf8_lossy(&pending[start..start + head_end]).into_owned();
            let mut st = state.lock().unwrap();
            *st.counts.entry(kind(&line)).or_insert(0) += 1;
            st.heads.push(head.clone());
            match st.bend {
                Some(Bend::LoseAnswer(matches)) if matches(&line) => {
                    st.bend = None;
                    lose.store(true, Ordering::SeqCst);
                }
                Some(Bend::GoSilent(matches)) if matches(&line) => {
                    st.silent = true;
                    go_silent = true;
                }
                Some(Bend::Fail(matches)) if matches(&line) => fail = Some(FAILED),
                Some(Bend::Refuse(matches)) if matches(&head.to_ascii_lowercase()) => {
                    fail = Some(NOT_IMPLEMENTED)
                }
                _ => {}
            }
        }
        if let Some(answer) = fail {
            let _ = client.write_all(answer.as_bytes());
            let _ = client.shutdown(Shutdown::Both);
            break;
        }
        pending.drain(..parsed);
        let excess = pending.len().saturating_sub(16 << 10);
        pending.drain(..excess);
        // Going silent drops this whole read, the request and anything before it in it.
        if go_silent {
            continue;
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
        let mut st = state.lock().unwrap();
        st.forwarded += n as u64;
        if let Some(Bend::Cut { after, then_refuse }) = st.bend {
            if st.forwarded >= after {
                st.bend = None;
                st.refusing = then_refuse;
                for live in std::mem::take(&mut st.live) {
                    let _ = live.shutdown(Shutdown::Both);
                    st.cut += 1;
                }
            }
        }
    }
    if !state.lock().unwrap().silent {
        let _ = server.shutdown(Shutdown::Both);
    }
}

/// HTTP's methods, and WebDAV's.
const METHODS: [&str; 10] = [
    "GET /",
    "HEAD /",
    "PUT /",
    "POST /",
    "DELETE /",
    "PROPFIND /",
    "PROPPATCH /",
    "MKCOL /",
    "MOVE /",
    "COPY /",
];

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A loopback port that accepts connections and never answers (held open until the test
/// binary exits).
#[cfg(any(feature = "s3", feature = "sftp"))]
pub fn silent_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for client in listener.incoming() {
            held.push(client);
        }
    });
    port
}
