//! The one error type of kiln: what went wrong, the exit code it maps to, and how it reads.
//!
//! Every AWS failure names the operation, the resource and the region, and says what the user can
//! do. A failed build carries what it had created and what teardown did, so the message tells the
//! whole story; teardown problems are added to the original error, never substituted for it.

use std::fmt;
use std::time::Duration;

use crate::recipe::Diagnostic;

/// Exit codes are part of the CLI contract.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    /// `kiln build --require-release`: the image was built (or reused) but a hold (`kiln
    /// rollback`) kept it from being released.
    pub const HELD: i32 = 3;
    pub const INTERRUPTED: i32 = 130;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// Bad command-line usage (exit 2, nothing created).
    Usage(String),
    /// The recipe is invalid: every problem found, with positions (exit 2, nothing created).
    Recipe(Vec<Diagnostic>),
    /// An AWS API call failed.
    Aws(AwsError),
    /// A bounded wait ran out of time.
    Timeout {
        phase: &'static str,
        resource: String,
        region: String,
        waited: Duration,
        last_state: String,
        hint: String,
    },
    /// A resource reached a state it will never leave (an image `failed`, an instance terminated
    /// under us, a refresh that failed).
    BadState {
        phase: &'static str,
        resource: String,
        region: String,
        state: String,
        reason: String,
    },
    /// A recipe step failed on the builder.
    StepFailed {
        step: String,
        instance: String,
        status: String,
        exit_code: Option<i32>,
        stdout_tail: String,
        stderr_tail: String,
        log: String,
    },
    /// Something kiln refuses to do, with the reason (exit 1).
    Refused(String),
    /// A failure inside kiln itself (a value that could not be encoded): a bug to report.
    Internal(String),
    /// Local I/O (state folder, manifest file, logs).
    Io {
        action: String,
        path: String,
        source: std::io::Error,
    },
    /// A release that did not complete (exit 1): what happened, in words that claim no more than
    /// AWS said, then what is true now (the default, what the group runs) and what to do next.
    Release { what: String, state: Vec<String> },
    /// SIGINT or SIGTERM arrived; cleanup ran (exit 130).
    Interrupted { signal: &'static str },
    /// The primary error of a build plus what teardown did about the resources it had created.
    Build {
        primary: Box<Error>,
        cleanup: Vec<String>,
    },
}

/// An AWS API failure with its context.
#[derive(Debug)]
pub struct AwsError {
    pub operation: &'static str,
    pub resource: String,
    pub region: String,
    pub code: Option<String>,
    pub message: String,
    /// The HTTP status of an answer that was not an AWS one (no error code in it: a proxy, a
    /// web server, a wrong `--endpoint-url`); `None` for AWS errors and for no answer at all.
    pub http_status: Option<u16>,
}

impl AwsError {
    /// What the user can do about it, judged by the error code AWS returned.
    pub fn hint(&self) -> String {
        let code = self.code.as_deref().unwrap_or("");
        match code {
            "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "AuthFailure" => format!(
                "the caller is not allowed to call {}; `kiln iam-policy RECIPE` prints the policy kiln needs",
                self.operation
            ),
            "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "InvalidClientTokenId" | "UnrecognizedClientException"
            | "CredentialsNotLoaded" => {
                "the credentials are missing or expired: pick a profile (--profile or AWS_PROFILE), run `aws sso login` for an SSO profile, \
                 or export fresh AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); `aws sts get-caller-identity` \
                 shows whether they work. Not retried: waiting does not fix credentials".into()
            }
            c if c.ends_with(".NotFound") || c.ends_with("NotFoundException") || c == "InvalidInstanceId" => format!(
                "check that {} exists in region {} and that the account is the right one",
                self.resource, self.region
            ),
            "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => {
                "AWS kept throttling after all retries: run fewer builds at once or retry later".into()
            }
            "InvalidAMIName.Duplicate" => {
                "AMI names are unique per account and region: put {{ timestamp }} or {{ build_id }} in image.name (the default has {{ timestamp }}, one-second resolution)".into()
            }
            "InsufficientInstanceCapacity" | "Unsupported" => {
                "try another instance type or subnet (availability zone)".into()
            }
            "" if self.http_status.is_some_and(|s| s >= 500 || s == 429) => {
                "the endpoint kept failing through every retry: if it is AWS's, retry later (AWS Health shows outages); \
                 if not, check --endpoint-url, AWS_ENDPOINT_URL, `endpoint_url` in the profile and the proxy (HTTPS_PROXY)"
                    .into()
            }
            "" if self.http_status.is_some() => {
                "check that the endpoint is AWS's (or an AWS emulator's): --endpoint-url, AWS_ENDPOINT_URL, `endpoint_url` in the profile, \
                 and that no proxy (HTTPS_PROXY) answers in its place"
                    .into()
            }
            "" => "check the network, --endpoint-url / AWS_ENDPOINT_URL and the region, then retry".into(),
            _ => "see the AWS message above; re-run with -v for the full request log".into(),
        }
    }
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Recipe(_) => exit::USAGE,
            Error::Interrupted { .. } => exit::INTERRUPTED,
            Error::Build { primary, .. } => primary.exit_code(),
            _ => exit::FAILURE,
        }
    }

    pub fn io(
        action: impl Into<String>,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action: action.into(),
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// True for failures that the next poll may not see again (throttling, 5xx, lost connections):
    /// wait loops keep waiting on them instead of failing the build.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Aws(e) => match e.code.as_deref() {
                // No answer (a lost connection), or one that was not AWS's: only a failing
                // server's (5xx, 429) may differ next time; a web page or a 404 will not.
                None => e.http_status.is_none_or(|s| s >= 500 || s == 429),
                Some(code) => matches!(
                    code,
                    "RequestLimitExceeded"
                        | "Throttling"
                        | "ThrottlingException"
                        | "TooManyRequestsException"
                        | "InternalError"
                        | "InternalFailure"
                        | "InternalServerError"
                        | "ServiceUnavailable"
                        | "Unavailable"
                ),
            },
            _ => false,
        }
    }

    /// This error with `lines` of what was undone after it (added to a [`Error::Build`]'s
    /// cleanup, or making one).
    pub fn with_cleanup(self, lines: Vec<String>) -> Error {
        match self {
            Error::Build {
                primary,
                mut cleanup,
            } => {
                cleanup.extend(lines);
                Error::Build { primary, cleanup }
            }
            other => Error::Build {
                primary: Box::new(other),
                cleanup: lines,
            },
        }
    }

    /// What an AWS failure means to the pipeline ([`crate::aws::Meaning`]), when it is one the
    /// pipeline reacts to.
    pub fn meaning(&self) -> Option<crate::aws::Meaning> {
        self.aws_code().and_then(crate::aws::Meaning::of)
    }

    /// The AWS error code, if this is an AWS failure.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Error::Aws(e) => e.code.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "{message}"),
            Error::Recipe(diagnostics) => {
                let count = diagnostics.len();
                for d in diagnostics {
                    writeln!(f, "{}", d.render())?;
                }
                write!(f, "the recipe has {count} problem{}; nothing was created", if count == 1 { "" } else { "s" })
            }
            Error::Aws(e) => {
                write!(f, "{} failed for {} in {}", e.operation, e.resource, e.region)?;
                match &e.code {
                    Some(code) => write!(f, ": {code}: {}", e.message)?,
                    None => write!(f, ": {}", e.message)?,
                }
                write!(f, "\n  hint: {}", e.hint())
            }
            Error::Timeout { phase, resource, region, waited, last_state, hint } => write!(
                f,
                "timed out after {} {phase} ({resource} in {region}, last seen: {last_state})\n  hint: {hint}",
                humantime::format_duration(Duration::from_secs(waited.as_secs()))
            ),
            Error::BadState { phase, resource, region, state, reason } => {
                write!(f, "{phase}: {resource} in {region} is {state}")?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            Error::StepFailed { step, instance, status, exit_code, stdout_tail, stderr_tail, log } => {
                write!(f, "step `{step}` failed on {instance}: {status}")?;
                if let Some(code) = exit_code {
                    write!(f, " (exit code {code})")?;
                }
                write_block(f, "stderr:", stderr_tail)?;
                write_block(f, "output (last lines):", stdout_tail)?;
                write!(f, "\n  full output: {log}")
            }
            Error::Refused(message) => write!(f, "{message}"),
            Error::Internal(message) => write!(f, "internal error: {message} (please report this as a bug)"),
            Error::Io { action, path, source } => write!(f, "could not {action} {path}: {source}"),
            Error::Interrupted { signal } => write!(f, "interrupted by {signal}"),
            Error::Release { what, state } => {
                write!(f, "release failed: {what}")?;
                for line in state {
                    write!(f, "\n  {line}")?;
                }
                Ok(())
            }
            Error::Build { primary, cleanup } => {
                write!(f, "{primary}")?;
                if !cleanup.is_empty() {
                    write!(f, "\ncleanup:")?;
                    for line in cleanup {
                        write!(f, "\n  {line}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// An indented block of output under a heading; nothing when the output is blank.
fn write_block(f: &mut fmt::Formatter<'_>, heading: &str, text: &str) -> fmt::Result {
    if text.trim().is_empty() {
        return Ok(());
    }
    write!(f, "\n  {heading}")?;
    for line in text.trim_end().lines() {
        write!(f, "\n    {line}")?;
    }
    Ok(())
}

impl std::error::Error for Error {}
