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

/// One SSM command of a step, with a label for logs.
pub struct Command {
    pub label: String,
    pub script: String,
}

/// The commands that carry out a step.
pub fn commands_for(step: &Step, build_id: &str) -> Vec<Command> {
    match &step.kind {
        StepKind::Run { script } => vec![Command {
            label: "run".into(),
            script: run_command(script, build_id, &step.name),
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

/// Wraps a recipe script so it runs under bash from a file (stdin is /dev/null, so a command
/// that reads stdin cannot swallow the rest of the script), whatever shell SSM starts.
pub fn run_command(script: &str, build_id: &str, step_name: &str) -> String {
    let delimiter = heredoc_delimiter(script, build_id);
    let comment: String = step_name
        .replace('\n', " ")
        .chars()
        .take(COMMENT_MAX_CHARS)
        .collect();
    format!(
        "#!/bin/bash\n# kiln build {build_id}, step: {comment}\nkiln_step=$(mktemp /tmp/kiln-step.XXXXXX)\n\
         cat > \"$kiln_step\" <<'{delimiter}'\n{script}{newline}{delimiter}\n\
         chmod 700 \"$kiln_step\"\nkiln_rc=0\nbash \"$kiln_step\" </dev/null || kiln_rc=$?\nrm -f \"$kiln_step\"\nexit \"$kiln_rc\"\n",
        newline = if script.ends_with('\n') { "" } else { "\n" },
    )
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
        let command = run_command(script, "b-1", "say hi");
        assert!(command.contains(script));
        assert!(command.contains("<<'KILN_EOF_b_1'\n"));
        assert!(command.contains("bash \"$kiln_step\" </dev/null"));
    }

    #[test]
    fn heredoc_delimiter_avoids_lines_of_the_script() {
        let script = "echo a\nKILN_EOF_b\n";
        let command = run_command(script, "b", "x");
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
        let run = run_command(&script, LONG_BUILD_ID, &"n".repeat(500));
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
        let out = bash(&run_command(
            "set -euo pipefail\ncat\necho \"after ${0##*/}\"\nexit 3\n",
            "b-run",
            "x",
        ));
        assert_eq!(out.status.code(), Some(3));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("after kiln-step."),
            "{out:?}"
        );
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
