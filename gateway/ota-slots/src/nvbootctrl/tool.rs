//! Running `nvbootctrl -t rootfs ...`: output bounded, errors that name the
//! exact command line.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use crate::SlotError;

/// nvbootctrl prints a few lines; more than this is not the tool we expect.
const MAX_OUTPUT: u64 = 64 * 1024;

pub(crate) struct Tool {
    path: PathBuf,
}

/// What a finished run printed; `code` is its exit status.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Tool {
    pub fn new(path: &Path) -> Tool {
        Tool {
            path: path.to_path_buf(),
        }
    }

    pub fn command_line(&self, args: &[&str]) -> String {
        format!("{} -t rootfs {}", self.path.display(), args.join(" "))
    }

    fn error(&self, args: &[&str], detail: impl Into<String>) -> SlotError {
        SlotError::Command {
            command: self.command_line(args),
            detail: detail.into(),
        }
    }

    /// Runs the tool to completion. Each stream is read on its own thread
    /// and kept up to [`MAX_OUTPUT`] bytes; the rest is drained and thrown
    /// away so the child never blocks on a full pipe.
    pub fn run(&self, args: &[&str]) -> Result<Run, SlotError> {
        let mut child = Command::new(&self.path)
            .args(["-t", "rootfs"])
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.error(args, format!("cannot start {}: {e}", self.path.display())))?;
        let stderr = child
            .stderr
            .take()
            .map(|s| thread::spawn(move || read_capped(s)));
        let stdout = child.stdout.take().map(read_capped).transpose();
        let stderr = match stderr.map(|t| t.join()) {
            Some(Ok(r)) => r.map(Some),
            Some(Err(_)) => Err(io::Error::other("stderr reader panicked")),
            None => Ok(None),
        };
        let status = child
            .wait()
            .map_err(|e| self.error(args, format!("waiting: {e}")))?;
        let (stdout, stderr) = match (stdout, stderr) {
            (Ok(o), Ok(e)) => (o.unwrap_or_default(), e.unwrap_or_default()),
            (Err(e), _) | (_, Err(e)) => {
                return Err(self.error(args, format!("reading output: {e}")))
            }
        };
        if stdout.1 || stderr.1 {
            return Err(self.error(args, format!("printed more than {MAX_OUTPUT} bytes")));
        }
        let code = status
            .code()
            .ok_or_else(|| self.error(args, format!("killed: {status}")))?;
        Ok(Run {
            code,
            stdout: stdout.0,
            stderr: stderr.0,
        })
    }

    /// Runs a command that must succeed; returns what it printed.
    pub fn check(&self, args: &[&str]) -> Result<String, SlotError> {
        let run = self.run(args)?;
        if run.code != 0 {
            let said = run.stderr.trim();
            let said = if said.is_empty() {
                run.stdout.trim()
            } else {
                said
            };
            return Err(self.error(args, format!("exit status {}: {said}", run.code)));
        }
        Ok(run.stdout)
    }

    /// Runs a yes/no query (`is-slot-...`): exit 0 is yes, any other exit
    /// status is no; failing to run at all is an error.
    pub fn probe(&self, args: &[&str]) -> Result<bool, SlotError> {
        Ok(self.run(args)?.code == 0)
    }

    pub fn unexpected(&self, args: &[&str], what: &str, output: &str) -> SlotError {
        let shown: String = output.chars().take(200).collect();
        self.error(args, format!("unexpected output ({what}): {shown:?}"))
    }
}

/// The text read (lossily decoded) and whether there was more.
fn read_capped(stream: impl Read) -> io::Result<(String, bool)> {
    let mut stream = stream;
    let mut buf = Vec::new();
    (&mut stream).take(MAX_OUTPUT).read_to_end(&mut buf)?;
    let more = io::copy(&mut stream, &mut io::sink())? > 0;
    Ok((String::from_utf8_lossy(&buf).into_owned(), more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capped_keeps_the_head_and_reports_the_rest() {
        let data = vec![b'x'; MAX_OUTPUT as usize + 10];
        let (text, more) = read_capped(&data[..]).unwrap();
        assert_eq!((text.len() as u64, more), (MAX_OUTPUT, true));
        let (text, more) = read_capped(&b"0\n"[..]).unwrap();
        assert_eq!((text.as_str(), more), ("0\n", false));
    }

    #[test]
    fn a_missing_tool_is_an_error_naming_the_command() {
        let tool = Tool::new(Path::new("/nonexistent/nvbootctrl"));
        let err = tool.run(&["get-current-slot"]).err().unwrap().to_string();
        assert!(
            err.contains("/nonexistent/nvbootctrl -t rootfs get-current-slot"),
            "{err}"
        );
    }
}
