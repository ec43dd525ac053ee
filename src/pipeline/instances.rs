//! Driving an instance kiln launched (the builder): waiting for a state, terminating it.
//!
//! One wait serves every target state. AWS's eventual consistency is handled here: right after a
//! launch the id may be unknown for a while ("not visible yet"); an instance that ends up
//! terminated when kiln waits for another state fails at once, with AWS's state reason.

use std::time::Duration;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::{Cloud, InstanceQuery, InstanceState};
use crate::error::{Error, Result};
use crate::pipeline::consistency::{is_not_found, until_visible};

/// How long teardown waits for a builder to be gone before it reports and moves on.
pub const TERMINATE_WAIT: Duration = Duration::from_secs(600);

/// Waits until instance `id` is in `target`, telling `on_state` of every other state seen.
pub async fn wait_for_state(
    cloud: &dyn Cloud,
    id: &str,
    target: InstanceState,
    timeout: Duration,
    on_state: impl FnMut(&str),
) -> Result<()> {
    let wait = Wait {
        phase: waiting_for(&target),
        resource: id,
        region: cloud.region(),
        timeout,
        hint: "look at the instance's state reason and system log in the EC2 console (capacity, quotas, a bad image)",
    };
    wait_until(wait, on_state, || async {
        let Some(instance) = cloud.instance(id).await? else {
            // Unknown to AWS: not visible yet after a launch, or long gone after a termination.
            return Ok(match target {
                InstanceState::Terminated => Probe::Done(()),
                _ => Probe::Pending("not visible yet".into()),
            });
        };
        if instance.state == target {
            return Ok(Probe::Done(()));
        }
        if instance.state.is_gone() && target != InstanceState::Terminated {
            return Err(Error::BadState {
                phase: "waiting for the builder",
                resource: id.to_owned(),
                region: cloud.region().to_owned(),
                state: instance.state.to_string(),
                reason: terminated_reason(&instance.state_reason),
            });
        }
        Ok(Probe::Pending(instance.state.to_string()))
    })
    .await
}

fn waiting_for(target: &InstanceState) -> &'static str {
    match target {
        InstanceState::Running => "waiting for the builder to run",
        InstanceState::Stopped => "waiting for the builder to stop",
        InstanceState::Terminated => "waiting for the builder to terminate",
        _ => "waiting for the builder",
    }
}

fn terminated_reason(state_reason: &str) -> String {
    with_state_reason(
        "the builder was terminated outside kiln (or failed to start)",
        state_reason,
    )
}

/// `what`, followed by AWS's state reason when there is one.
pub fn with_state_reason(what: &str, state_reason: &str) -> String {
    if state_reason.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {state_reason}")
    }
}

/// Terminates an instance and waits until it is `terminated`.
///
/// `InvalidInstanceID.NotFound` is never taken as "already gone" at once: right after a launch
/// it means "not visible yet", so the call is tried again for a while; if AWS still does not know
/// the id, the instances launched with `client_token` (a builder's is its build id) are looked
/// up by that token, and any still alive is terminated. With no token, the answer stands.
pub async fn terminate_and_wait(
    cloud: &dyn Cloud,
    id: &str,
    client_token: &str,
    timeout: Duration,
) -> Result<()> {
    match until_visible(|| cloud.terminate_instance(id)).await {
        Ok(()) => wait_for_state(cloud, id, InstanceState::Terminated, timeout, |_| {}).await,
        Err(e) if is_not_found(&e) && !client_token.is_empty() => {
            let query = InstanceQuery::live().launched_with(client_token);
            for instance in cloud.find_instances(&query).await? {
                cloud.terminate_instance(&instance.id).await?;
                wait_for_state(
                    cloud,
                    &instance.id,
                    InstanceState::Terminated,
                    timeout,
                    |_| {},
                )
                .await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
