//! The conformance suite's real-account backend (`KILN_TEST_AWS=1`).
//!
//! Uses the standard credential chain and region (`AWS_PROFILE`, `AWS_REGION`...). It needs:
//! - `KILN_TEST_INSTANCE_PROFILE`: an instance profile whose role has
//!   `AmazonSSMManagedInstanceCore` (the SSM test waits for the agent);
//! - a default VPC whose subnets reach the SSM endpoints (a public subnet, NAT, or VPC endpoints).
//!
//! It creates a launch template `kiln-conformance-<pid>` from the newest Amazon Linux 2023 image
//! and deletes it when the backend is dropped; instances are tagged `kiln:role=builder` with the
//! run's build id, so whatever a failed test leaves is found by `kiln gc --older-than 0s`.

use std::sync::Arc;

use kiln::aws::sdk::{ConnectOptions, Sdk};

use crate::conformance::{newest_al2023, Backend};

/// Deletes the run's launch template when dropped.
struct TemplateGuard {
    sdk: Sdk,
    name: String,
}

impl Drop for TemplateGuard {
    fn drop(&mut self) {
        let sdk = self.sdk.clone();
        let name = self.name.clone();
        // Drop cannot await: delete from a thread with its own runtime.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let answer = sdk
                .ec2
                .delete_launch_template()
                .launch_template_name(&name)
                .send();
            runtime.block_on(answer).is_ok()
        })
        .join();
        if !matches!(deleted, Ok(true)) {
            eprintln!(
                "could not delete launch template {}: remove it by hand",
                self.name
            );
        }
    }
}

pub async fn backend() -> Backend {
    let sdk = Sdk::connect(&ConnectOptions::default())
        .await
        .expect("AWS credentials and region (KILN_TEST_AWS=1)");
    let profile = std::env::var("KILN_TEST_INSTANCE_PROFILE").expect(
        "KILN_TEST_INSTANCE_PROFILE: an instance profile with AmazonSSMManagedInstanceCore",
    );
    let source = newest_al2023(&sdk).await;
    let name = format!("kiln-conformance-{}", std::process::id());
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id(&source.0)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .build();
    sdk.ec2
        .create_launch_template()
        .launch_template_name(&name)
        .launch_template_data(data)
        .send()
        .await
        .expect("CreateLaunchTemplate");
    let guard = TemplateGuard {
        sdk: sdk.clone(),
        name: name.clone(),
    };
    Backend::new(
        Arc::new(sdk),
        source,
        name,
        Some(profile),
        Some(Box::new(guard)),
    )
}
