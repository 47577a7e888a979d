//! Runs a command and streams its output line by line, each line prefixed
//! with the stream it came from; exits with the command's exit code.
//!
//! ```text
//! cargo run --example subprocess_pipe -- sh -c 'echo hello; echo oops >&2; exit 3'
//! subprocess_pipe PROGRAM [ARGS...]
//! ```
//!
//! prints `out: hello` and `err: oops` (in the order they arrive) and
//! exits with 3. A command killed by a signal gives 128 + the signal, as
//! a shell reports it.
//!
//! The child is a [`sloop::subprocess::Child`]: its stdout and stderr are
//! bridge streams (`AsyncBufRead`), read by two tasks on the loop while a
//! third waits for the exit. Its stdin is this program's.

use std::process::{Command, ExitCode, Stdio};

use futures::io::AsyncBufReadExt;
use futures::StreamExt;
use sloop::pipe::PipeReader;
use sloop::EventLoop;

/// Prints each line of `stream` with `prefix`.
async fn print_lines(stream: PipeReader, prefix: &'static str) {
    let mut lines = stream.lines();
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => println!("{prefix}: {line}"),
            Err(e) => {
                eprintln!("reading the child's {prefix}: {e}");
                break;
            }
        }
    }
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let program = args
        .next()
        .ok_or("usage: subprocess_pipe PROGRAM [ARGS...]")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let lp = EventLoop::new()?;
    let mut child = lp.spawn_child(&mut cmd)?;
    let out = lp.spawn_local(print_lines(child.stdout.take().ok_or("no stdout")?, "out"));
    let err = lp.spawn_local(print_lines(child.stderr.take().ok_or("no stderr")?, "err"));
    let status = lp.run_until_complete(async move {
        // Both streams to their end, then the exit.
        let _ = out.await;
        let _ = err.await;
        child.wait().await
    })??;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(code as u8))
}
