//! AWS's eventual consistency: right after the call that creates it, a new id may answer
//! `*.NotFound` for a while (CreateTags, Describe*, TerminateInstances, DeregisterImage,
//! DeleteSnapshot). Such an answer within [`VISIBILITY_WINDOW`] of the creation means "not
//! visible yet", and the call is tried again; after it, the answer stands: a removal that
//! answers NotFound then found the resource already gone.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::aws::poll::jittered;
use crate::error::{Error, Result};

/// How long a `*.NotFound` answer about an id kiln just created is read as "not visible yet".
pub const VISIBILITY_WINDOW: Duration = Duration::from_secs(60);
/// The pause between tries while an id is not visible yet.
const VISIBILITY_RETRY: Duration = Duration::from_secs(1);

/// Whether `error` is AWS saying it does not know an id (a launch template version it does not
/// know answers `InvalidLaunchTemplateId.VersionNotFound`).
pub fn is_not_found(error: &Error) -> bool {
    error.meaning() == Some(crate::aws::Meaning::NotFound)
}

/// What a removal of something kiln created found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// AWS no longer knew it, past the time a new id may be invisible.
    AlreadyGone,
}

/// How much longer something created at `created` may be invisible: none when it is unknown
/// (whatever kiln did not just create is taken at AWS's word).
pub fn settling_time(created: Option<SystemTime>) -> Duration {
    created.map_or(Duration::ZERO, |at| {
        VISIBILITY_WINDOW.saturating_sub(at.elapsed().unwrap_or_default())
    })
}

/// Runs `call` until it answers something other than `*.NotFound`, or until
/// [`VISIBILITY_WINDOW`] has passed since the first try.
pub async fn until_visible<T, F, Fut>(call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_while(
        VISIBILITY_WINDOW,
        call,
        |answer| matches!(answer, Err(e) if is_not_found(e)),
    )
    .await
}

/// Removes something created at `created` (`None`: long enough ago) with `call`: a
/// `*.NotFound` answer is tried again while the id may still be invisible, and then means it
/// was already gone.
pub async fn remove_created<F, Fut>(created: Option<SystemTime>, call: F) -> Result<Removal>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let answer = retry_while(
        settling_time(created),
        call,
        |answer| matches!(answer, Err(e) if is_not_found(e)),
    )
    .await;
    match answer {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if is_not_found(&e) => Ok(Removal::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// Looks up something created at `created` with `call` (which answers `None`, or
/// `*.NotFound`, for an unknown id), trying again while it may still be invisible.
pub async fn find_created<T, F, Fut>(created: Option<SystemTime>, call: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let missing = |answer: &Result<Option<T>>| match answer {
        Ok(found) => found.is_none(),
        Err(e) => is_not_found(e),
    };
    match retry_while(settling_time(created), call, missing).await {
        Err(e) if is_not_found(&e) => Ok(None),
        answer => answer,
    }
}

/// Runs `call` while its answer is `missing` and `window` (from the first try) has not passed;
/// the last answer stands.
async fn retry_while<T, F, Fut>(window: Duration, mut call: F, missing: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let started = Instant::now();
    loop {
        let answer = call().await;
        if !missing(&answer) || started.elapsed() >= window {
            return answer;
        }
        tracing::debug!("not visible yet, trying again");
        tokio::time::sleep(jittered(VISIBILITY_RETRY)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AwsError;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn not_found() -> Error {
        Error::Aws(AwsError {
            operation: "DeregisterImage",
            resource: "ami-1".into(),
            region: "eu-west-1".into(),
            code: Some("InvalidAMIID.NotFound".into()),
            message: "The image id '[ami-1]' does not exist".into(),
            http_status: None,
        })
    }

    #[test]
    fn only_what_was_just_created_is_given_time() {
        assert_eq!(settling_time(None), Duration::ZERO);
        let long_ago = SystemTime::now() - 2 * VISIBILITY_WINDOW;
        assert_eq!(settling_time(Some(long_ago)), Duration::ZERO);
        assert!(settling_time(Some(SystemTime::now())) > VISIBILITY_WINDOW / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_id_is_removed_once_visible_and_an_old_one_is_gone_at_once() {
        let tries = AtomicU32::new(0);
        let removal = remove_created(Some(SystemTime::now()), || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(not_found()),
                _ => Ok(()),
            }
        })
        .await;
        assert_eq!(removal.expect("removed"), Removal::Removed);
        assert_eq!(tries.load(Ordering::SeqCst), 4);

        let tries = AtomicU32::new(0);
        let removal = remove_created(None, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(not_found())
        })
        .await;
        assert_eq!(removal.expect("gone"), Removal::AlreadyGone);
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_id_never_seen_is_gone_after_the_window() {
        let started = Instant::now();
        let found: Option<u8> = find_created(Some(SystemTime::now()), || async { Ok(None) })
            .await
            .expect("lookup");
        assert_eq!(found, None);
        let waited = started.elapsed();
        assert!(
            waited >= VISIBILITY_WINDOW - Duration::from_secs(2),
            "{waited:?}"
        );
        assert!(
            waited < VISIBILITY_WINDOW + Duration::from_secs(5),
            "{waited:?}"
        );
    }
}
