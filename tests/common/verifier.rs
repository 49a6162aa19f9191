//! The SigV4 verifier (`tests/python/sigv4_server.py`): a Python server that
//! checks every request's signature with botocore's own `SigV4Auth`, and
//! spanwire started with the static credentials it expects.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{free_port, Daemon};

/// The secret key the verifier expects (with access key `AKIDSPANWIRETEST`).
pub const SECRET: &str = "spanwire/test/secret/key/not/a/real/one";

/// The verifier, and the JSON lines it printed so far.
pub struct Verifier {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    pub port: u16,
}

impl Verifier {
    pub fn start(secret: &str) -> Verifier {
        Verifier::with_limits(secret, 0, 0)
    }

    /// A verifier that also refuses requests past `max_items` or `max_bytes`.
    pub fn with_limits(secret: &str, max_items: usize, max_bytes: usize) -> Verifier {
        Verifier::spawn(secret, max_items, max_bytes, 0, 0)
    }

    /// A verifier that is also the container credentials endpoint
    /// (`/creds`), handing out keys valid for `rotate_s` seconds.
    pub fn rotating(rotate_s: u64) -> Verifier {
        Verifier::spawn(SECRET, 0, 0, rotate_s, 0)
    }

    /// A verifier that answers 429 (with Retry-After) and 503 (without) to
    /// two of every `every` requests.
    pub fn throttling(every: usize) -> Verifier {
        Verifier::spawn(SECRET, 0, 0, 0, every)
    }

    fn spawn(
        secret: &str,
        max_items: usize,
        max_bytes: usize,
        rotate_s: u64,
        throttle: usize,
    ) -> Verifier {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sigv4_server.py");
        let mut child = Command::new(super::python())
            .args([
                script,
                &port.to_string(),
                "us-east-1",
                "AKIDSPANWIRETEST",
                secret,
            ])
            .args([
                max_items.to_string(),
                max_bytes.to_string(),
                rotate_s.to_string(),
                throttle.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if v.get("listening").is_some() {
                    let _ = tx.send(());
                } else {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the SigV4 verifier did not start");
        Verifier { child, lines, port }
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Items the verifier accepted for `path`.
    pub fn accepted(&self, path: &str) -> u64 {
        self.lines()
            .iter()
            .filter(|l| l["path"] == path && l["ok"] == true)
            .map(|l| l["items"].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// spanwire with `config`, signing with static credentials and `secret`.
pub fn start(config: &str, health: u16, secret: &str) -> Daemon {
    let env = env(secret);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start_with_env(config, health, &env)
}

pub fn env(secret: &str) -> Vec<(&'static str, String)> {
    super::aws_test_env()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .filter(|(k, _)| *k != "AWS_ACCESS_KEY_ID" && *k != "AWS_SECRET_ACCESS_KEY")
        .chain([
            ("AWS_ACCESS_KEY_ID", "AKIDSPANWIRETEST".to_string()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ])
        .collect()
}
