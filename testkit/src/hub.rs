//! A `hub` process on OS-chosen loopback ports, for tests and benchmarks.
//!
//! [`HubProcess::start`] runs `hub --img-port 0 --msg-port 0 --tcp-port 0 <args>` (later
//! flags override earlier ones, so `--img-port 9000` or `--no-msg` in `args` win) and reads
//! its stdout up to `hub: ready`, taking each service's bound address from its
//! `hub: img listening on udp 127.0.0.1:40001` line (`hub: http listening on
//! http://127.0.0.1:40004` with `--http`). [`HubProcess::stop`] sends SIGINT or SIGTERM,
//! waits a bounded time for the hub to exit (and kills it past that), and returns its exit
//! status and everything it printed; with `--json-summary` among the arguments,
//! [`Stopped::summary`] reads the exit summary back as a [`HubSummary`].
//!
//! The hub's stdout is read line by line on a thread of its own for the whole run and its
//! stderr is collected likewise, so the hub never blocks on a full pipe and a failure
//! message can show both.

use crate::process::{describe_command, lines};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use udphub::hub::stats::HubSummary;

/// The addresses the hub's services bound (`None`: the service is off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    pub img: Option<SocketAddr>,
    pub msg: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// The web view, with `--http`.
    pub http: Option<SocketAddr>,
}

impl Ports {
    /// Take the address from one of the hub's `listening` lines; other lines are ignored.
    /// An address that does not parse, an unknown service or one listed twice is an error.
    pub fn read_line(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (slot, addr) = match words.as_slice() {
            ["hub:", "http", "listening", "on", url] => {
                let addr = url
                    .strip_prefix("http://")
                    .ok_or_else(|| format!("bad url in hub line {line:?}"))?;
                (&mut self.http, addr)
            }
            ["hub:", service, "listening", "on", _transport, addr] => {
                let slot = match *service {
                    "img" => &mut self.img,
                    "msg" => &mut self.msg,
                    "tcp" => &mut self.tcp,
                    other => return Err(format!("unknown service {other:?} in hub line {line:?}")),
                };
                (slot, *addr)
            }
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(format!("service listed twice: {line:?}"));
        }
        *slot = Some(
            addr.parse()
                .map_err(|e| format!("bad address in hub line {line:?}: {e}"))?,
        );
        Ok(())
    }
}

/// The signal [`HubProcess::stop`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Int,
    /// What a service manager sends.
    Term,
}

/// A stopped hub: how it exited and everything it printed.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Every stdout line, each ending in `\n`.
    pub stdout: String,
    pub stderr: String,
}

impl Stopped {
    /// The exit summary of a hub started with `--json-summary`: its last stdout line.
    pub fn summary(&self) -> Result<HubSummary, String> {
        let last = self.stdout.lines().last().unwrap_or("");
        serde_json::from_str(last).map_err(|e| {
            format!(
                "the hub's last stdout line is not its JSON summary ({e}); stdout:\n{}",
                self.stdout
            )
        })
    }
}

/// A running `hub`. Killed (SIGKILL) on drop unless stopped with [`HubProcess::stop`]; a
/// drop during a panic prints what the hub wrote.
pub struct HubProcess {
    child: Option<Child>,
    pub ports: Ports,
    stdout_lines: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr_text: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl HubProcess {
    /// Start `bin --img-port 0 --msg-port 0 --tcp-port 0 <args>` with `env` set (`Some`) or
    /// removed (`None`), and wait at most `within` for its `hub: ready` line.
    pub fn start(
        bin: &Path,
        args: &[&str],
        env: &[(&str, Option<&str>)],
        within: Duration,
    ) -> Result<HubProcess, String> {
        let mut cmd = Command::new(bin);
        for (key, value) in env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        Self::start_command(cmd, args, within)
    }

    /// Like [`HubProcess::start`], with `cmd` in place of the bare binary: the hub's path
    /// behind a wrapper that execs it (`ip netns exec NS …/hub`, so the pid is the hub's),
    /// with its environment already set.
    pub fn start_command(
        mut cmd: Command,
        args: &[&str],
        within: Duration,
    ) -> Result<HubProcess, String> {
        let shown = describe_command(&cmd);
        cmd.args(["--img-port", "0", "--msg-port", "0", "--tcp-port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {shown}: {e}"))?;

        let stdout = child.stdout.take().expect("stdout is piped");
        let stdout_lines = lines(stdout);
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr_text);
        let stderr_thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let mut hub = HubProcess {
            child: Some(child),
            ports: Ports::default(),
            stdout_lines,
            stdout_seen: Vec::new(),
            stderr_text,
            stderr_thread: Some(stderr_thread),
        };
        if let Err(why) = hub.wait_ready(within) {
            let status = hub.kill_and_reap();
            return Err(format!(
                "hub {args:?} failed to start: {why}; exit status {status:?}\nstdout so far:\n{}\nstderr:\n{}",
                hub.stdout_seen.join("\n"),
                hub.stderr()
            ));
        }
        Ok(hub)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    if line.trim_end() == "hub: ready" {
                        return Ok(());
                    }
                    self.ports.read_line(&line)?;
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no `hub: ready` line within {within:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the hub closed stdout (exited?) before `hub: ready`".into())
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the hub is running").id()
    }

    /// What the hub has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Send `signal`, wait at most `within` for the hub to exit (past that it is killed and
    /// this fails), and return its exit status and everything it printed.
    pub fn stop(mut self, signal: Signal, within: Duration) -> Result<Stopped, String> {
        let pid = self.pid();
        let signo = match signal {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
        };
        // SAFETY: kill(2) on a pid this process started and has not reaped.
        if unsafe { libc::kill(pid as libc::pid_t, signo) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("kill -{signal:?} {pid}: {e}"));
        }
        let deadline = Instant::now() + within;
        let status = loop {
            let child = self.child.as_mut().expect("the hub is running");
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = self.kill_and_reap();
                    return Err(format!(
                        "the hub did not exit within {within:?} of SIG{}; killed it with \
                         SIGKILL.\nstderr:\n{}",
                        format!("{signal:?}").to_uppercase(),
                        self.stderr()
                    ));
                }
                Err(e) => {
                    let _ = self.kill_and_reap();
                    return Err(format!("waiting for the hub: {e}"));
                }
            }
        };
        self.child = None;
        // The hub has exited, so its stdout is closed: the reader reaches its end and
        // drops the sender. Bounded anyway (a process it started could hold the pipe).
        let deadline = Instant::now() + within;
        loop {
            match self
                .stdout_lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.stdout_seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    return Err("the hub's stdout stayed open after it exited".into())
                }
            }
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let mut stdout = self.stdout_seen.join("\n");
        stdout.push('\n');
        Ok(Stopped {
            status,
            stdout,
            stderr: self.stderr(),
        })
    }

    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        let status = child.wait().ok();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        status
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.kill_and_reap();
            if thread::panicking() {
                eprintln!(
                    "---- hub stdout ----\n{}\n---- hub stderr ----\n{}",
                    self.stdout_seen.join("\n"),
                    self.stderr()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_listening_line_and_ignores_others() {
        let mut p = Ports::default();
        for line in [
            "hub: img listening on udp 127.0.0.1:40001",
            "hub: msg listening on udp 127.0.0.1:40002",
            "hub: tcp listening on tcp 127.0.0.1:40003",
            "hub: http listening on http://127.0.0.1:40004",
            "something else entirely",
        ] {
            p.read_line(line).unwrap();
        }
        let addr = |port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(
            p,
            Ports {
                img: addr(40001),
                msg: addr(40002),
                tcp: addr(40003),
                http: addr(40004),
            }
        );
    }

    #[test]
    fn refuses_bad_addresses_unknown_and_repeated_services() {
        let mut p = Ports::default();
        let err = p
            .read_line("hub: img listening on udp nowhere")
            .unwrap_err();
        assert!(err.contains("bad address"), "{err}");
        let err = p
            .read_line("hub: foo listening on udp 127.0.0.1:1")
            .unwrap_err();
        assert!(err.contains("unknown service"), "{err}");
        p.read_line("hub: tcp listening on tcp 127.0.0.1:1")
            .unwrap();
        let err = p
            .read_line("hub: tcp listening on tcp 127.0.0.1:2")
            .unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = p.read_line("hub: http listening on ftp://x").unwrap_err();
        assert!(err.contains("bad url"), "{err}");
    }
}
