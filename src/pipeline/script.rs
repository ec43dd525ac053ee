//! The shell scripts that carry out recipe steps on a builder, built by pure functions: a run
//! step's wrapper, a file step's chunked and checksummed upload, a check step's HTTP poll loop.
//! [`commands_for`] picks them by step kind (one arm per kind: a new kind's commands go there).
//! Nothing here talks to AWS; [`super::steps`] sends the scripts through SSM.

use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::plan::{Step, StepKind};

/// Raw bytes per upload command: base64 makes them a third larger (45,056 bytes become 60,076),
/// which with the command around them stays under
/// [`SSM_COMMAND_BUDGET_BYTES`](crate::limits::SSM_COMMAND_BUDGET_BYTES), close to SSM's
/// 64 KB document limit, so a file takes as few commands as SSM allows.
pub const UPLOAD_CHUNK: usize = 44 * 1024;
/// The step name in a run command's comment line is cut to this many characters.
const COMMENT_MAX_CHARS: usize = 100;

/// How much of the end of a run step's log the wrapper prints: SSM keeps only the first 24,000
/// characters of a command's stdout, so this tail (plus one header line) always arrives whole.
pub const WRAPPER_TAIL_BYTES: usize = 20_000;
/// Raw bytes of the builder's log per read command: base64 makes 21,336 characters of stdout,
/// under SSM's 24,000.
pub const LOG_READ_CHUNK: usize = 16_000;
/// The line a run step's log gets when the step runs again after the reboot it asked for (exit
/// 194): the log of the run before the reboot stays above it.
pub const RERUN_LINE: &str =
    "--- kiln: the step runs again after the reboot it asked for (exit 194) ---";
/// The first line of what the wrapper prints after the script: `kiln-log-size <bytes>`.
const SIZE_HEADER: &str = "kiln-log-size ";
/// The first line of a read command's answer: `kiln-log <size>`, then the base64 of the bytes.
const READ_HEADER: &str = "kiln-log ";

/// One SSM command of a step, with a label for logs.
pub struct Command {
    pub label: String,
    pub script: String,
    /// The log on the builder this command writes its output to (a run step's), if any.
    pub log: Option<String>,
}

/// The commands that carry out a step.
/// `log` is where a run step's complete output goes on the builder ([`builder_log`]).
pub fn commands_for(step: &Step, build_id: &str, log: &str) -> Vec<Command> {
    match &step.kind {
        StepKind::Run { script } => vec![Command {
            label: "run".into(),
            script: run_command(script, build_id, &step.name, log),
            log: Some(log.to_owned()),
        }],
        StepKind::File {
            content,
            destination,
            mode,
            owner,
            ..
        } => upload_commands(content, destination, *mode, owner.as_deref(), build_id),
        StepKind::Check {
            url,
            expect_status,
            expect_body,
            interval,
        } => vec![Command {
            label: "check".into(),
            script: check_command(
                url,
                *expect_status,
                expect_body.as_deref(),
                *interval,
                step.timeout,
            ),
            log: None,
        }],
    }
}

/// A delimiter that does not occur in `text`.
fn heredoc_delimiter(text: &str, build_id: &str) -> String {
    let base = format!(
        "KILN_EOF_{}",
        build_id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let mut delimiter = base.clone();
    let mut n = 0;
    while text.lines().any(|l| l.trim() == delimiter) {
        n += 1;
        delimiter = format!("{base}_{n}");
    }
    delimiter
}

/// Where a step (its log's file name, `NN-step-name`) writes its complete output on the builder.
pub fn builder_log(build_id: &str, file_name: &str) -> String {
    let build = build_id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    format!("/var/log/kiln/{build}/{file_name}.log")
}

/// Wraps a recipe script so it runs under bash from a file (stdin is /dev/null, so a command
/// that reads stdin cannot swallow the rest of the script), whatever shell SSM starts.
///
/// stdout and stderr both go to `log` on the builder, never truncated, and read while the step
/// runs ([`read_log_command`]); afterwards the wrapper prints the log's size and its last
/// [`WRAPPER_TAIL_BYTES`], so a short output needs no read at all ([`parse_wrapper_output`]).
///
/// A script that exits 194 asks the SSM agent to reboot the instance and run the command again
/// ("Handling reboots when running commands", Systems Manager user guide): the wrapper then finds
/// its log from the run before the reboot and appends to it, after a line that says so
/// ([`RERUN_LINE`]), instead of starting it afresh.
pub fn run_command(script: &str, build_id: &str, step_name: &str, log: &str) -> String {
    let delimiter = heredoc_delimiter(script, build_id);
    let comment: String = step_name
        .replace('\n', " ")
        .chars()
        .take(COMMENT_MAX_CHARS)
        .collect();
    format!(
        "#!/bin/bash\n# kiln build {build_id}, step: {comment}\nkiln_log={log}\n\
         mkdir -p \"$(dirname \"$kiln_log\")\" || exit 125\n\
         if [ -e \"$kiln_log\" ]; then echo \"{RERUN_LINE}\" >>\"$kiln_log\"; else : > \"$kiln_log\" || exit 125; fi\n\
         kiln_step=$(mktemp /tmp/kiln-step.XXXXXX)\n\
         cat > \"$kiln_step\" <<'{delimiter}'\n{script}{newline}{delimiter}\n\
         chmod 700 \"$kiln_step\"\nkiln_rc=0\nbash \"$kiln_step\" </dev/null >>\"$kiln_log\" 2>&1 || kiln_rc=$?\nrm -f \"$kiln_step\"\n\
         echo \"{SIZE_HEADER}$(stat -c %s \"$kiln_log\")\"\ntail -c {WRAPPER_TAIL_BYTES} \"$kiln_log\"\nexit \"$kiln_rc\"\n",
        log = shell_quote(log),
        newline = if script.ends_with('\n') { "" } else { "\n" },
    )
}

/// Prints the size of the builder's `log` and the base64 of up to [`LOG_READ_CHUNK`] bytes from
/// byte `from`; fails when the log does not exist.
pub fn read_log_command(log: &str, from: u64) -> String {
    format!(
        "#!/bin/bash\n# kiln read-log\nkiln_log={log}; kiln_from={from}\n\
         [ -f \"$kiln_log\" ] || {{ echo \"no log $kiln_log\" >&2; exit 1; }}\n\
         echo \"{READ_HEADER}$(stat -c %s \"$kiln_log\")\"\n\
         tail -c +$((kiln_from + 1)) \"$kiln_log\" | head -c {LOG_READ_CHUNK} | base64 -w 0\necho\n",
        log = shell_quote(log),
    )
}

/// What one read of the builder's log returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// The log's size when it was read.
    pub size: u64,
    pub bytes: Vec<u8>,
}

/// The answer of a [`read_log_command`]; `None` when it is not one.
pub fn parse_log_read(stdout: &str) -> Option<LogRead> {
    let mut lines = stdout.lines();
    let size = lines
        .next()?
        .strip_prefix(READ_HEADER)?
        .trim()
        .parse()
        .ok()?;
    let encoded = lines.next().unwrap_or_default().trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    Some(LogRead { size, bytes })
}

/// The run wrapper's own stdout: the log's final size and its last bytes. `None` when it is not
/// that, or when the tail did not arrive byte for byte (SSM stores text, so bytes that are not
/// UTF-8 come back changed): the log is then read instead.
pub fn parse_wrapper_output(stdout: &str) -> Option<(u64, &[u8])> {
    let (header, tail) = stdout.split_once('\n')?;
    let size: u64 = header.strip_prefix(SIZE_HEADER)?.trim().parse().ok()?;
    let expected = size.min(WRAPPER_TAIL_BYTES as u64);
    (tail.len() as u64 == expected).then_some((size, tail.as_bytes()))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Uploads `content` in base64 chunks, then decodes, verifies its sha256 on the instance, and
/// installs it with its mode and owner.
pub fn upload_commands(
    content: &[u8],
    destination: &str,
    mode: u32,
    owner: Option<&str>,
    build_id: &str,
) -> Vec<Command> {
    let digest = hex::encode(Sha256::digest(content));
    let staging = format!(
        "/tmp/kiln-upload-{}-{}",
        build_id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
        &digest[..16]
    );
    let chunks: Vec<&[u8]> = if content.is_empty() {
        vec![&[][..]]
    } else {
        content.chunks(UPLOAD_CHUNK).collect()
    };
    let total = chunks.len();
    let mut commands = Vec::with_capacity(total);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(chunk);
        let redirect = if i == 0 { ">" } else { ">>" };
        let mut script = format!(
            "#!/bin/bash\nset -euo pipefail\nprintf '%s' '{encoded}' {redirect} {staging}.b64\n"
        );
        if i + 1 == total {
            let owner_flag = owner.map(|o| {
                let (user, group) = o.split_once(':').unwrap_or((o, ""));
                if group.is_empty() {
                    format!(" -o {}", shell_quote(user))
                } else {
                    format!(" -o {} -g {}", shell_quote(user), shell_quote(group))
                }
            });
            script.push_str(&format!(
                "base64 -d {staging}.b64 > {staging}\nrm -f {staging}.b64\n\
                 echo '{digest}  {staging}' | sha256sum -c --quiet -\n\
                 install -D -m {mode:04o}{owner} {staging} {dest}\nrm -f {staging}\n\
                 echo 'installed {dest_plain} ({len} bytes, sha256 {digest})'\n",
                owner = owner_flag.unwrap_or_default(),
                dest = shell_quote(destination),
                dest_plain = destination.replace('\'', ""),
                len = content.len(),
            ));
        }
        commands.push(Command {
            label: format!("upload {}/{total}", i + 1),
            script,
            log: None,
        });
    }
    commands
}

/// Polls `url` from the builder until it answers `expect_status` (and contains `expect_body`),
/// or `timeout` passes; prints the last answer on failure.
pub fn check_command(
    url: &str,
    expect_status: u16,
    expect_body: Option<&str>,
    interval: Duration,
    timeout: Duration,
) -> String {
    let body_test = match expect_body {
        Some(body) => format!(" && grep -qF -- {} \"$kiln_body\"", shell_quote(body)),
        None => String::new(),
    };
    format!(
        "#!/bin/bash\nset -uo pipefail\nkiln_body=$(mktemp)\ndeadline=$((SECONDS + {timeout}))\nattempt=0\n\
         while :; do\n  attempt=$((attempt + 1))\n  \
         status=$(curl -sS -o \"$kiln_body\" -w '%{{http_code}}' --max-time 10 {url} 2>/dev/null) || status=000\n  \
         if [ \"$status\" = \"{expect_status}\" ]{body_test}; then\n    \
         echo \"check passed after $attempt attempt(s): HTTP $status from {url_plain}\"\n    rm -f \"$kiln_body\"\n    exit 0\n  fi\n  \
         if [ \"$SECONDS\" -ge \"$deadline\" ]; then\n    \
         echo \"check failed after $attempt attempt(s): last answer HTTP $status from {url_plain}, expected {expect_status}{expect_note}\" >&2\n    \
         head -c 2000 \"$kiln_body\" >&2\n    rm -f \"$kiln_body\"\n    exit 1\n  fi\n  sleep {interval}\ndone\n",
        timeout = timeout.as_secs().max(1),
        url = shell_quote(url),
        url_plain = url.replace(['"', '\'', '$', '`', '\\'], ""),
        interval = interval.as_secs_f64().max(0.1),
        expect_note = expect_body.map(|b| format!(" with body containing {}", b.replace(['"', '\'', '$', '`', '\\'], ""))).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_command_keeps_the_script_verbatim_and_runs_it_with_bash() {
        let script = "set -euo pipefail\necho \"${HOME}\" $((1+1))\n";
        let command = run_command(script, "b-1", "say hi", "/var/log/kiln/b-1/01-x.log");
        assert!(command.contains(script));
        assert!(command.contains("<<'KILN_EOF_b_1'\n"));
        assert!(command.contains("bash \"$kiln_step\" </dev/null"));
    }

    #[test]
    fn heredoc_delimiter_avoids_lines_of_the_script() {
        let script = "echo a\nKILN_EOF_b\n";
        let command = run_command(script, "b", "x", "/tmp/x.log");
        assert!(command.contains("<<'KILN_EOF_b_1'"));
    }

    #[test]
    fn uploads_are_chunked_and_verified() {
        let content = vec![b'x'; UPLOAD_CHUNK * 2 + 10];
        let commands = upload_commands(&content, "/etc/app/conf", 0o640, Some("root:app"), "b-1");
        assert_eq!(commands.len(), 3);
        assert!(commands[0].script.contains("> /tmp/kiln-upload-b-1-"));
        assert!(commands[1].script.contains(">> /tmp/kiln-upload-b-1-"));
        let last = &commands[2].script;
        let digest = hex::encode(Sha256::digest(&content));
        assert!(last.contains(&format!("echo '{digest}  /tmp/kiln-upload-b-1-")));
        assert!(last.contains("install -D -m 0640 -o 'root' -g 'app' "));
        assert!(last.ends_with(&format!(
            "echo 'installed /etc/app/conf ({} bytes, sha256 {digest})'\n",
            content.len()
        )));
    }

    /// The longest build id kiln makes (`20261125t214628123z-9dede2`), with room to spare.
    const LONG_BUILD_ID: &str = "20261125t214628123z-9dede2-0000000000";

    #[test]
    fn every_command_fits_ssms_document_limit() {
        use crate::limits::{RUN_SCRIPT_MAX_BYTES, SSM_COMMAND_BUDGET_BYTES};
        let content: Vec<u8> = (0..UPLOAD_CHUNK * 3).map(|i| (i * 7 % 256) as u8).collect();
        let owner = Some("some-long-user-name:some-long-group-name");
        let destination = format!("/opt/{}/file.bin", "d".repeat(200));
        let uploads = upload_commands(&content, &destination, 0o644, owner, LONG_BUILD_ID);
        assert_eq!(uploads.len(), 3);
        for command in &uploads {
            let size = command.script.len();
            assert!(
                size <= SSM_COMMAND_BUDGET_BYTES,
                "{}: {size}",
                command.label
            );
            // Near the limit: not hundreds of small commands for a large file.
            assert!(
                size >= SSM_COMMAND_BUDGET_BYTES - 2048,
                "{}: {size}",
                command.label
            );
        }
        let script = "x".repeat(RUN_SCRIPT_MAX_BYTES);
        let log = builder_log(LONG_BUILD_ID, &format!("01-{}", "n".repeat(48)));
        let run = run_command(&script, LONG_BUILD_ID, &"n".repeat(500), &log);
        assert!(run.len() <= SSM_COMMAND_BUDGET_BYTES, "{}", run.len());
    }

    #[test]
    fn empty_files_upload_in_one_command() {
        let commands = upload_commands(b"", "/etc/empty", 0o644, None, "b");
        assert_eq!(commands.len(), 1);
        assert!(commands[0].script.contains("install -D -m 0644 /tmp/"));
    }

    #[test]
    fn check_command_quotes_the_url_and_body() {
        let command = check_command(
            "http://127.0.0.1:9090/health",
            200,
            Some("\"UP\""),
            Duration::from_secs(2),
            Duration::from_secs(120),
        );
        assert!(command.contains("curl -sS -o \"$kiln_body\" -w '%{http_code}' --max-time 10 'http://127.0.0.1:9090/health'"));
        assert!(command.contains("grep -qF -- '\"UP\"' \"$kiln_body\""));
        assert!(command.contains("deadline=$((SECONDS + 120))"));
    }

    // The commands are shell: run them here with bash, as the SSM agent would on the builder.

    fn bash(script: &str) -> std::process::Output {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash")
    }

    #[test]
    fn run_command_runs_the_script_and_keeps_its_exit_code_and_stdin_away() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/01-x.log");
        let out = bash(&run_command(
            "set -euo pipefail\ncat\necho \"after ${0##*/}\"\necho oops >&2\nexit 3\n",
            "b-run",
            "x",
            log.to_str().unwrap(),
        ));
        assert_eq!(out.status.code(), Some(3));
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged.starts_with("after kiln-step.") && logged.ends_with("oops\n"),
            "{logged}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (size, tail) = parse_wrapper_output(&stdout).expect("the wrapper's output");
        assert_eq!((size, tail), (logged.len() as u64, logged.as_bytes()));
    }

    /// A long output: the wrapper prints only the end; reading the log from an offset returns
    /// the exact bytes, chunk by chunk, whatever they are.
    #[test]
    fn the_log_is_read_whole_in_chunks_and_the_wrapper_prints_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("01-long.log");
        let log = log.to_str().unwrap();
        let out = bash(&run_command(
            "for i in $(seq 1 6000); do echo \"line $i é\"; done\nprintf '\\377'\n",
            "b-long",
            "long",
            log,
        ));
        assert!(out.status.success(), "{out:?}");
        let logged = std::fs::read(log).unwrap();
        assert!(logged.len() > 3 * LOG_READ_CHUNK);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The last byte is not UTF-8: the tail does not survive as text, so it is not trusted.
        assert_eq!(parse_wrapper_output(&stdout), None);
        let mut read = Vec::new();
        while read.len() < logged.len() {
            let out = bash(&read_log_command(log, read.len() as u64));
            let answer = parse_log_read(&String::from_utf8_lossy(&out.stdout)).unwrap();
            assert_eq!(answer.size, logged.len() as u64);
            assert!(!answer.bytes.is_empty() && answer.bytes.len() <= LOG_READ_CHUNK);
            read.extend(answer.bytes);
        }
        assert_eq!(read, logged);
        let missing = bash(&read_log_command("/nonexistent/kiln.log", 0));
        assert!(!missing.status.success());
    }

    #[test]
    fn upload_commands_install_the_exact_bytes_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("etc/app/app.conf");
        let content: Vec<u8> = (0..UPLOAD_CHUNK * 2 + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let commands = upload_commands(
            &content,
            destination.to_str().unwrap(),
            0o640,
            None,
            "b-upload-ok",
        );
        assert_eq!(commands.len(), 3);
        for command in &commands {
            let out = bash(&command.script);
            assert!(out.status.success(), "{}: {out:?}", command.label);
        }
        assert_eq!(std::fs::read(&destination).unwrap(), content);
        assert_eq!(
            std::fs::metadata(&destination)
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o640
        );
    }

    #[test]
    fn a_lost_chunk_fails_the_checksum_and_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("app.conf");
        let content = vec![b'k'; UPLOAD_CHUNK + 1];
        let commands = upload_commands(
            &content,
            destination.to_str().unwrap(),
            0o644,
            None,
            "b-upload-lost",
        );
        assert_eq!(commands.len(), 2);
        let out = bash(&commands[1].script);
        assert!(!out.status.success());
        assert!(!destination.exists());
    }

    /// Answers every connection with the same response, for as long as the test runs.
    fn serve(status: &'static str, body: &'static str) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer);
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        port
    }

    #[test]
    fn check_command_passes_on_the_expected_answer_and_fails_with_the_last_one() {
        let up = serve("200 OK", "{\"service\":\"UP\"}");
        let url = format!("http://127.0.0.1:{up}/health");
        let out = bash(&check_command(
            &url,
            200,
            Some("\"UP\""),
            Duration::from_millis(200),
            Duration::from_secs(5),
        ));
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout)
            .contains("check passed after 1 attempt(s): HTTP 200"));

        let down = serve("503 Service Unavailable", "starting");
        let url = format!("http://127.0.0.1:{down}/health");
        let out = bash(&check_command(
            &url,
            200,
            None,
            Duration::from_millis(300),
            Duration::from_secs(1),
        ));
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("last answer HTTP 503"), "{stderr}");
        assert!(stderr.contains("starting"), "{stderr}");
    }
}
