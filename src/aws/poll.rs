//! Time-bounded waiting with adaptive polling.
//!
//! Waits are bounded by time, never by a count of attempts: a slow but healthy AWS is waited for
//! as long as the phase's timeout allows. The interval starts short (a state change is noticed
//! quickly when AWS is fast, as the emulator is), then grows with the time already waited (about a
//! tenth of it), so a 20-minute snapshot is not polled every 200 ms. Throttling and other transient
//! failures double the interval instead of failing the wait.
//!
//! Every pause is jittered by ±[`JITTER`], so builds started together do not poll in step.
//! Time is tokio's, so tests on the in-memory fake run every wait on a paused, virtual clock.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// The first poll interval.
pub const POLL_MIN: Duration = Duration::from_millis(250);
/// The first poll interval of SSM waits (agent registration, command invocations): Run Command
/// is never done within a second, and eight builds starting steps together should not burst
/// dozens of requests a second at SSM.
pub const SSM_POLL_MIN: Duration = Duration::from_secs(1);
/// Each pause is the computed interval times a random factor in `1 ± JITTER`.
pub const JITTER: f64 = 0.2;
/// The interval never grows beyond this.
pub const POLL_MAX: Duration = Duration::from_secs(15);
/// The interval is about this fraction of the time already waited.
const POLL_FRACTION: u32 = 10;
/// Transient failures (throttling, 5xx, no connection) are waited through, but not forever: after
/// this long without one successful look, the wait fails with the last error.
pub const UNREACHABLE_LIMIT: Duration = Duration::from_secs(120);

/// What one look at a resource found.
pub enum Probe<T> {
    /// The wait is over.
    Done(T),
    /// Not yet; the current state, for the progress line and a timeout message.
    Pending(String),
}

/// What is being waited for, for messages.
pub struct Wait<'a> {
    pub phase: &'static str,
    pub resource: &'a str,
    pub region: &'a str,
    pub timeout: Duration,
    /// What to check when the wait times out.
    pub hint: &'a str,
}

/// Polls `probe` until it answers `Done`, fails with a non-transient error, or the wait's timeout
/// passes. `on_state` is told of every new state. The first pause is [`POLL_MIN`].
pub async fn wait_until<T, F, Fut>(
    wait: Wait<'_>,
    on_state: impl FnMut(&str),
    probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>>>,
{
    wait_until_from(POLL_MIN, wait, on_state, probe).await
}

/// [`wait_until`] whose pauses start at `first` (at least) instead of [`POLL_MIN`].
pub async fn wait_until_from<T, F, Fut>(
    first: Duration,
    wait: Wait<'_>,
    mut on_state: impl FnMut(&str),
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>>>,
{
    let started = Instant::now();
    let mut last_state = String::from("(not seen yet)");
    let mut penalty = Duration::ZERO;
    let mut last_success = Instant::now();
    loop {
        match probe().await {
            Ok(Probe::Done(value)) => return Ok(value),
            Ok(Probe::Pending(state)) => {
                if state != last_state {
                    on_state(&state);
                    last_state = state;
                }
                penalty = Duration::ZERO;
                last_success = Instant::now();
            }
            Err(e) if e.is_transient() && last_success.elapsed() < UNREACHABLE_LIMIT => {
                tracing::debug!(
                    "{}: transient failure while waiting, backing off: {e}",
                    wait.phase
                );
                penalty = (penalty * 2).clamp(Duration::from_millis(500), POLL_MAX);
            }
            Err(e) => return Err(e),
        }
        let waited = started.elapsed();
        if waited >= wait.timeout {
            return Err(Error::Timeout {
                phase: wait.phase,
                resource: wait.resource.to_owned(),
                region: wait.region.to_owned(),
                waited,
                last_state,
                hint: wait.hint.to_owned(),
            });
        }
        let interval =
            jittered(next_interval(waited).max(first).max(penalty)).min(wait.timeout - waited);
        tokio::time::sleep(interval).await;
    }
}

/// [`wait_until_from`] that pauses first (`first`, jittered) instead of looking at once: for
/// a state just changed or just seen (a command just sent, a command just seen starting), where
/// an immediate look only adds a request.
pub async fn wait_after_pause<T, F, Fut>(
    first: Duration,
    wait: Wait<'_>,
    on_state: impl FnMut(&str),
    probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>>>,
{
    tokio::time::sleep(jittered(first).min(wait.timeout)).await;
    wait_until_from(first, wait, on_state, probe).await
}

/// The pause before the next poll after `waited` has passed.
pub fn next_interval(waited: Duration) -> Duration {
    (waited / POLL_FRACTION).clamp(POLL_MIN, POLL_MAX)
}

/// `interval` times a random factor in `1 ± JITTER`.
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_jittered_within_a_fifth() {
        let base = Duration::from_secs(10);
        let pauses: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        assert!(pauses
            .iter()
            .all(|p| *p >= base.mul_f64(0.8) && *p <= base.mul_f64(1.2)));
        let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
        assert!(
            distinct.len() > 100,
            "not random: {} distinct pauses",
            distinct.len()
        );
        assert!(pauses.iter().any(|p| *p < base.mul_f64(0.95)));
        assert!(pauses.iter().any(|p| *p > base.mul_f64(1.05)));
    }

    #[tokio::test(start_paused = true)]
    async fn ssm_waits_first_look_again_after_about_a_second() {
        let mut looks = Vec::new();
        let started = Instant::now();
        let mut n = 0;
        wait_until_from(
            SSM_POLL_MIN,
            five_seconds(),
            |_| {},
            || {
                looks.push(started.elapsed());
                n += 1;
                std::future::ready(Ok(if n == 3 {
                    Probe::Done(())
                } else {
                    Probe::Pending("p".into())
                }))
            },
        )
        .await
        .unwrap();
        assert_eq!(looks.len(), 3);
        let first_pause = looks[1] - looks[0];
        assert!(
            first_pause >= Duration::from_millis(800) && first_pause <= Duration::from_millis(1200),
            "{first_pause:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_after_a_pause_does_not_look_at_once() {
        let started = Instant::now();
        let mut first_look = None;
        wait_after_pause(
            SSM_POLL_MIN,
            five_seconds(),
            |_| {},
            || {
                first_look.get_or_insert(started.elapsed());
                std::future::ready(Ok(Probe::Done(())))
            },
        )
        .await
        .unwrap();
        let first_look = first_look.expect("looked");
        assert!(
            first_look >= Duration::from_millis(800) && first_look <= Duration::from_millis(1200),
            "{first_look:?}"
        );
    }

    #[test]
    fn interval_starts_short_and_grows_with_the_wait() {
        assert_eq!(next_interval(Duration::ZERO), POLL_MIN);
        assert_eq!(
            next_interval(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            next_interval(Duration::from_secs(60)),
            Duration::from_secs(6)
        );
        assert_eq!(next_interval(Duration::from_secs(3600)), POLL_MAX);
    }

    #[tokio::test]
    async fn a_wait_is_bounded_by_time_not_attempts() {
        let wait = Wait {
            phase: "waiting",
            resource: "r-1",
            region: "xx-test-1",
            timeout: Duration::from_millis(350),
            hint: "look",
        };
        let mut polls = 0;
        let err = wait_until::<(), _, _>(
            wait,
            |_| {},
            || {
                polls += 1;
                async { Ok(Probe::Pending("pending".into())) }
            },
        )
        .await
        .unwrap_err();
        assert!(polls >= 2, "polled {polls} times");
        let text = err.to_string();
        assert!(
            text.starts_with("timed out after 0s waiting (r-1 in xx-test-1, last seen: pending)"),
            "{text}"
        );
    }

    fn five_seconds() -> Wait<'static> {
        Wait {
            phase: "w",
            resource: "r",
            region: "x",
            timeout: Duration::from_secs(5),
            hint: "",
        }
    }

    #[tokio::test]
    async fn transient_errors_keep_waiting_and_others_fail() {
        use crate::error::AwsError;
        let aws = |code: &str| {
            Error::Aws(AwsError {
                operation: "Describe",
                resource: "r".into(),
                region: "x".into(),
                code: Some(code.into()),
                message: String::new(),
                http_status: None,
            })
        };
        let mut answers = vec![Err(aws("RequestLimitExceeded")), Ok(Probe::Done(7))].into_iter();
        let wait = five_seconds();
        assert_eq!(
            wait_until(wait, |_| {}, || std::future::ready(answers.next().unwrap()))
                .await
                .unwrap(),
            7
        );

        let wait = five_seconds();
        let err = wait_until::<(), _, _>(
            wait,
            |_| {},
            || std::future::ready(Err(aws("InvalidInstanceID.NotFound"))),
        )
        .await
        .unwrap_err();
        assert_eq!(err.aws_code(), Some("InvalidInstanceID.NotFound"));
    }
}
