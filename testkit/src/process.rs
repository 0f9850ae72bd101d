//! Run a child process with a deadline: its stdin fed from a buffer, its stdout and stderr
//! read to the end on threads of their own (so a chatty child never blocks on a full pipe),
//! and the child killed once the deadline passes.
//!
//! The child is reaped with `wait4`, which also gives its user + system CPU time (the
//! benchmark reports it), and the moment it was seen to exit is kept (within a millisecond)
//! so a caller can place the child's own measured span on its clock.

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the output pipes may stay open after the child has exited (a grandchild that
/// inherited them keeps them open) before the run counts as failed.
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// Read `pipe` line by line on a thread of its own; each line arrives on the receiver as it
/// comes (without its newline), and the receiver disconnects at the pipe's end.
pub fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Read `pipe` to its end on a thread of its own; the text arrives on the receiver once.
pub fn collect(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = { pipe }.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// What a finished child printed, how it ended and what it cost.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// When it was seen to exit.
    pub ended: Instant,
    /// Its user + system CPU time (zero where `wait4` is not available).
    pub cpu: Duration,
}

impl Finished {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit status and both outputs, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A started child whose output is being collected. Killed and reaped on drop unless
/// [`Running::wait`] reaped it.
pub struct Running {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stdin_writer: Option<JoinHandle<()>>,
    what: String,
    reaped: bool,
}

impl Running {
    /// Start `cmd` with `stdin` as its input (none at all when empty: stdin is `/dev/null`),
    /// stdout and stderr piped and collected.
    pub fn spawn(cmd: &mut Command, stdin: &[u8]) -> Result<Running, String> {
        let what = describe_command(cmd);
        cmd.stdin(if stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{what}`: {e}"))?;
        let stdin_writer = child.stdin.take().map(|mut pipe| {
            let input = stdin.to_vec();
            // Dropping the pipe at the end closes the child's stdin.
            thread::spawn(move || {
                let _ = pipe.write_all(&input);
            })
        });
        Ok(Running {
            stdout: collect(child.stdout.take().expect("stdout is piped")),
            stderr: collect(child.stderr.take().expect("stderr is piped")),
            child,
            stdin_writer,
            what,
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until the child exits or `deadline` passes (then it is killed and this fails);
    /// then wait (at most 5 s more) for its output pipes to close.
    pub fn wait(mut self, deadline: Instant) -> Result<Finished, String> {
        let (status, cpu) = loop {
            match reap(&mut self.child) {
                Ok(Some(done)) => break done,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                Ok(None) => return Err(format!("`{}` ran past its deadline; killed", self.what)),
                Err(e) => return Err(format!("waiting for `{}`: {e}", self.what)),
            }
        };
        self.reaped = true;
        let ended = Instant::now();
        if let Some(w) = self.stdin_writer.take() {
            let _ = w.join();
        }
        let pipes_by = ended + PIPE_GRACE;
        let text = |rx: &Receiver<String>, name: &str| {
            rx.recv_timeout(pipes_by.saturating_duration_since(Instant::now()))
                .map_err(|_| {
                    format!(
                        "`{}` exited ({status:?}) but its {name} stayed open for {PIPE_GRACE:?} \
                         (a process it started still holds it?)",
                        self.what
                    )
                })
        };
        let stdout = text(&self.stdout, "stdout")?;
        let stderr = text(&self.stderr, "stderr")?;
        Ok(Finished {
            status,
            stdout,
            stderr,
            ended,
            cpu,
        })
    }
}

impl Drop for Running {
    /// A child not reaped by [`Running::wait`] (an error or a deadline on the way) is
    /// killed and reaped.
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` to its end with `stdin` as its input; past `timeout` it is killed and this
/// fails.
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Result<Finished, String> {
    let deadline = Instant::now() + timeout;
    Running::spawn(cmd, stdin)?.wait(deadline)
}

/// `program arg arg …`, for messages.
pub fn describe_command(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        out.push(' ');
        out.push_str(&a.to_string_lossy());
    }
    out
}

/// Reap `child` if it has exited, without blocking: its status and CPU time.
#[cfg(unix)]
fn reap(child: &mut Child) -> std::io::Result<Option<(ExitStatus, Duration)>> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 only writes its out-parameters.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
            let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
            return Ok(Some((ExitStatus::from_raw(status), cpu)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(unix))]
fn reap(child: &mut Child) -> std::io::Result<Option<(ExitStatus, Duration)>> {
    Ok(child.try_wait()?.map(|s| (s, Duration::ZERO)))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn collects_both_outputs_the_status_and_feeds_stdin() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read line; echo \"out $line\"; echo err >&2; exit 3"]);
        let run = run(&mut cmd, b"hello\n", Duration::from_secs(30)).unwrap();
        assert_eq!(run.stdout, "out hello\n");
        assert_eq!(run.stderr, "err\n");
        assert_eq!(run.status.code(), Some(3));
        assert!(!run.success());
        assert!(
            run.describe().contains("---- stderr ----\nerr"),
            "{}",
            run.describe()
        );
    }

    #[test]
    fn a_child_past_its_deadline_is_killed_and_reported() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let err = run(&mut cmd, b"", Duration::from_millis(100)).unwrap_err();
        assert!(
            err.contains("`sleep 600` ran past its deadline; killed"),
            "{err}"
        );
    }

    #[test]
    fn a_program_that_does_not_exist_is_a_clear_error() {
        let mut cmd = Command::new("/nonexistent/udphub-testkit-program");
        let err = run(&mut cmd, b"", Duration::from_secs(5)).unwrap_err();
        assert!(err.starts_with("cannot start `/nonexistent/"), "{err}");
    }
}
