//! How the command-line programs end: success, or one line of error and a failure status.

use std::error::Error;
use std::process::ExitCode;

/// `error` and its sources as one line: `message: source: source…`, each source appended only
/// when the message does not already contain it, line breaks folded into spaces.
pub fn one_line(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        source = s.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command-line count that must be at least 1 (a batch size), for `clap`'s `value_parser`.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Ends a program: status 0 on success; otherwise `error: …` on one line of standard error
/// (see [`one_line`]) and status 1, without a panic message or a backtrace.
pub fn exit(result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_appended_once_and_lines_folded() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read\n  the file")]
        struct Outer(#[source] std::io::Error);
        let io = std::io::Error::other("disk on fire");
        assert_eq!(one_line(&Outer(io)), "cannot read the file: disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: {0}")]
        struct Repeats(#[source] std::io::Error);
        let io = std::io::Error::other("gone");
        assert_eq!(one_line(&Repeats(io)), "wrapped: gone");
    }
}
