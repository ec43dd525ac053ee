//! AWS's eventual consistency: right after the call that creates it, a new id may answer
//! `*.NotFound` for a while (CreateTags, Describe*, TerminateInstances, DeleteSnapshot). Such an
//! answer within [`VISIBILITY_WINDOW`] of the first try means "not visible yet", and the call is
//! tried again; after it, the answer stands.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::aws::poll::jittered;
use crate::error::{Error, Result};

/// How long a `*.NotFound` answer about an id kiln just created is read as "not visible yet".
pub const VISIBILITY_WINDOW: Duration = Duration::from_secs(60);
/// The pause between tries while an id is not visible yet.
const VISIBILITY_RETRY: Duration = Duration::from_secs(1);

/// Whether `error` is AWS saying it does not know an id.
pub fn is_not_found(error: &Error) -> bool {
    error
        .aws_code()
        .is_some_and(|code| code.ends_with(".NotFound"))
}

/// Runs `call` until it answers something other than `*.NotFound`, or until
/// [`VISIBILITY_WINDOW`] has passed since the first try.
pub async fn until_visible<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    loop {
        match call().await {
            Err(e) if is_not_found(&e) && started.elapsed() < VISIBILITY_WINDOW => {
                tracing::debug!("not visible yet, trying again: {e}");
                tokio::time::sleep(jittered(VISIBILITY_RETRY)).await;
            }
            answer => return answer,
        }
    }
}
