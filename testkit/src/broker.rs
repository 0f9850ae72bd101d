//! A Mosquitto broker of a test's own: started from a config file in a temporary folder on
//! a loopback port (never the system service), stopped (SIGKILL) on drop. For the MQTT tests
//! and benchmarks.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `mosquitto`.
pub struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Start one on a port the OS picks (bound and released just before, so another
    /// program could take it in between; the start then fails and says so).
    pub fn start() -> Result<Mosquitto, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        Self::start_on(port)
    }

    /// Start one on `port` (e.g. again on the port of one that was stopped), and wait at
    /// most 10 s until it accepts connections.
    pub fn start_on(port: u16) -> Result<Mosquitto, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let conf: PathBuf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto ({e}); scripts/setup.sh installs it"))?;
        let mut broker = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let addr = broker.addr();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "mosquitto on port {port} exited at start: {status}"
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "mosquitto on port {port} did not listen within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
