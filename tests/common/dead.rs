//! Origins that do not work, for deadline tests.
//!
//! `DeadOrigin` accepts TCP connections and never answers (a hung server: the connect succeeds,
//! the response never comes). `closed_port_url` names a port nothing listens on (connection
//! refused at once).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A listener on 127.0.0.1 that accepts connections, reads nothing, answers nothing, and keeps
/// every connection open until dropped.
pub struct DeadOrigin {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl DeadOrigin {
    pub fn start() -> DeadOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, accepted, conns) = (stop.clone(), accepted.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            conns.lock().unwrap().push(s);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        DeadOrigin {
            port,
            stop,
            accepted,
            conns,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `rel` on this origin.
    pub fn url(&self, rel: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            rel.trim_start_matches('/')
        )
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for DeadOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.conns.lock().map(|mut c| c.clear()).ok();
    }
}

/// A URL on a loopback port nothing listens on (connections are refused).
pub fn closed_port_url(rel: &str) -> String {
    // Bind and drop: the port was just free and is unlikely to be taken again this instant.
    let port = super::process::free_port();
    format!("http://127.0.0.1:{port}/{}", rel.trim_start_matches('/'))
}
