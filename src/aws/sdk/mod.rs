//! The AWS SDK implementation of [`Cloud`](super::Cloud): the only module that imports
//! `aws-sdk-*` or `aws-config`.
//!
//! It owns how kiln talks to AWS (credential chain, region, endpoint, retries, TLS) and the mapping
//! of SDK errors to [`Error::Aws`] with operation, resource and region. It must not decide anything
//! about builds: the pipeline does that.
//!
//! The operations live by service area: [`images`] (images, snapshots, tags), [`instances`],
//! [`templates`] (launch templates), [`commands`] (Systems Manager), [`autoscaling`],
//! [`targets`] (load balancer target health) and [`iam`] (instance profiles); the
//! `impl Cloud for Sdk` below only delegates to them.

pub mod autoscaling;
pub mod commands;
pub mod common;
pub mod iam;
pub mod images;
pub mod instances;
pub mod targets;
pub mod templates;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use crate::aws::model::{
    AutoScalingGroup, CopyImageRequest, CreateImageRequest, Image, ImageQuery, ImageReference,
    Instance, InstanceProfile, InstanceQuery, Invocation, LaunchRequest, LaunchTemplate,
    NewTemplateVersion, PingStatus, Refresh, RefreshRequest, ShellCommand, Tags, TargetHealth,
    TemplateRef, TemplateVersion,
};
use crate::aws::{missing, Cloud};
use crate::error::{AwsError, Error, Result};

/// SDK-level attempts per call when nothing else is configured (`AWS_RETRY_MODE`,
/// `AWS_MAX_ATTEMPTS`, or the profile's `retry_mode` / `max_attempts` win over it). Throttling
/// and 5xx are retried with jittered exponential backoff from [`RETRY_INITIAL_BACKOFF`]; wait
/// loops add their own time-bounded patience on top.
pub const RETRY_MAX_ATTEMPTS: u32 = 8;
pub const RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// One HTTP attempt may take this long before it is retried (a dropped connection is noticed here
/// at the latest).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to talk to AWS; `None` means "the standard chain decides".
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// Static credentials instead of the chain's (tests against an emulator use these).
    pub static_credentials: Option<StaticCredentials>,
}

/// An access key pair.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Clients for one region.
#[derive(Clone, Debug)]
pub struct Sdk {
    pub region: String,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    /// IAM is global; kiln only reads instance profiles.
    pub iam: aws_sdk_iam::Client,
    /// Where requests go, for messages: the endpoint URL when one is set (`--endpoint-url`,
    /// `AWS_ENDPOINT_URL`, the profile's `endpoint_url`), else AWS's in the region.
    endpoint: String,
    /// Only secret values (`from: secretsmanager:`).
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    config: aws_config::SdkConfig,
}

impl Sdk {
    /// Loads the standard configuration chain (environment, profile, SSO, IMDS), with the CLI's
    /// overrides laid over it. `AWS_ENDPOINT_URL` is honoured by the chain itself.
    pub async fn connect(options: &ConnectOptions) -> Result<Sdk> {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if !retries_configured(options.profile.as_deref()).await? {
            loader = loader.retry_config(
                RetryConfig::standard()
                    .with_max_attempts(RETRY_MAX_ATTEMPTS)
                    .with_initial_backoff(RETRY_INITIAL_BACKOFF),
            );
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(keys) = &options.static_credentials {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                &keys.access_key_id,
                &keys.secret_access_key,
                None,
                None,
                "kiln-static",
            ));
        }
        let config = loader.load().await;
        let Some(region) = config.region().map(|r| r.to_string()) else {
            return Err(Error::Usage(
                "no AWS region: pass --region, set AWS_REGION, or set a region in the profile"
                    .into(),
            ));
        };
        Ok(Sdk::from_config(config, region))
    }

    fn from_config(config: aws_config::SdkConfig, region: String) -> Sdk {
        let endpoint = match config.endpoint_url() {
            Some(url) => format!("the endpoint {url}"),
            None => format!("AWS's endpoint in {region}"),
        };
        Sdk {
            endpoint,
            region,
            ec2: aws_sdk_ec2::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            secretsmanager: aws_sdk_secretsmanager::Client::new(&config),
            config,
        }
    }

    /// The same credentials and settings, in another region (image copies, SSM parameters).
    /// The same clients when `region` is this one.
    pub fn in_region(&self, region: &str) -> Sdk {
        if region == self.region {
            return self.clone();
        }
        let config = self
            .config
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build();
        Sdk::from_config(config, region.to_owned())
    }

    /// Maps an SDK failure to kiln's error with the operation, resource and this client's region.
    pub fn fail<E>(
        &self,
        operation: &'static str,
        resource: impl Into<String>,
        err: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        aws_error(operation, resource, &self.region, &self.endpoint, err)
    }

    /// A field kiln needs from a response: present, or an error naming the operation, the field,
    /// the resource and this client's region.
    pub fn required<T>(
        &self,
        value: Option<T>,
        operation: &'static str,
        field: &str,
        resource: &str,
    ) -> Result<T> {
        value.ok_or_else(|| missing(operation, field, resource, &self.region))
    }

    /// An AWS failure kiln noticed itself (a request it could not build, a refusal reported
    /// inside a successful response), in this client's region.
    pub fn error(
        &self,
        operation: &'static str,
        resource: impl Into<String>,
        code: Option<String>,
        message: &str,
    ) -> Error {
        Error::Aws(AwsError {
            operation,
            resource: resource.into(),
            region: self.region.clone(),
            code,
            message: message.to_owned(),
            http_status: None,
        })
    }
}

/// The error code kiln gives a failure to load credentials (the SDK's credentials provider
/// failed before any request was sent); never transient.
pub const CREDENTIALS_ERROR: &str = "CredentialsNotLoaded";

/// The credentials provider's own message when `cause` (or anything it was caused by) is a
/// failure to load credentials: none in the chain, an expired SSO session, a failing
/// `credential_process`.
fn credentials_failure(cause: Option<&(dyn std::error::Error + 'static)>) -> Option<String> {
    let mut current = cause;
    while let Some(e) = current {
        if let Some(failure) =
            e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            let mut text = failure.to_string();
            let mut cause = std::error::Error::source(failure);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            return Some(text);
        }
        current = e.source();
    }
    None
}

/// Whether the user configured the SDK's retries: `AWS_RETRY_MODE` or `AWS_MAX_ATTEMPTS` in the
/// environment, or `retry_mode` / `max_attempts` in the selected profile. Then the standard
/// chain's settings apply; otherwise kiln's defaults do. A value the SDK would reject (it
/// panics on them) is a usage error here.
async fn retries_configured(profile: Option<&str>) -> Result<bool> {
    let profiles = aws_config::profile::load(
        &aws_types::os_shim_internal::Fs::real(),
        &aws_types::os_shim_internal::Env::real(),
        &Default::default(),
        profile.map(|p| std::borrow::Cow::Owned(p.to_owned())),
    )
    .await
    .ok();
    let selected = profiles
        .as_ref()
        .and_then(|p| p.get_profile(p.selected_profile()));
    let mut configured = false;
    for (variable, key) in [
        ("AWS_RETRY_MODE", "retry_mode"),
        ("AWS_MAX_ATTEMPTS", "max_attempts"),
    ] {
        let value = match std::env::var(variable) {
            Ok(value) => Some((value, variable.to_owned())),
            Err(_) => selected
                .and_then(|p| p.get(key))
                .map(|value| (value.to_owned(), format!("`{key}` in the profile"))),
        };
        if let Some((value, source)) = value {
            check_retry_setting(key, &value, &source)?;
            configured = true;
        }
    }
    Ok(configured)
}

/// Refuses a retry setting the SDK cannot use.
fn check_retry_setting(key: &str, value: &str, source: &str) -> Result<()> {
    let valid = match key {
        "retry_mode" => value.parse::<aws_config::retry::RetryMode>().is_ok(),
        _ => value.trim().parse::<u32>().is_ok_and(|n| n >= 1),
    };
    if valid {
        return Ok(());
    }
    let expected = match key {
        "retry_mode" => "`standard` or `adaptive`",
        _ => "a whole number of attempts, at least 1",
    };
    Err(Error::Usage(format!(
        "{source} is `{value}`: expected {expected} (or unset it to use kiln's default, standard mode with {RETRY_MAX_ATTEMPTS} attempts)"
    )))
}

/// The SDK's raw HTTP response.
type HttpResponse = aws_sdk_ec2::config::http::HttpResponse;

/// How much of the first line of an answer that is not AWS's goes into the message.
const BODY_LINE_CHARS: usize = 120;

/// See [`Sdk::fail`]. `endpoint` names where the request went, for failures that are not AWS
/// errors: no connection, or an answer without an AWS error code in it (a web page, a proxy's
/// 404, a load balancer's 502, garbage), which gets one sentence with the HTTP status and the
/// first line of the body instead of the SDK's dump of the response.
pub fn aws_error<E>(
    operation: &'static str,
    resource: impl Into<String>,
    region: &str,
    endpoint: &str,
    err: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut error = AwsError {
        operation,
        resource: resource.into(),
        region: region.to_owned(),
        code: err.code().map(str::to_owned),
        message: String::new(),
        http_status: None,
    };
    if let Some(detail) = credentials_failure(std::error::Error::source(&err)) {
        error.code = Some(CREDENTIALS_ERROR.to_owned());
        error.message = format!("no usable AWS credentials: {detail}");
        return Error::Aws(error);
    }
    error.message = match (&err, err.message(), err.raw_response()) {
        _ if error.code.is_some() => err.message().unwrap_or("(no message)").to_owned(),
        (_, _, Some(raw)) => {
            let status = raw.status().as_u16();
            error.http_status = Some(status);
            unexpected_answer(endpoint, status, raw.body().bytes().unwrap_or_default())
        }
        (_, Some(m), None) => m.to_owned(),
        (SdkError::DispatchFailure(_), None, None) => format!(
            "could not reach {endpoint}: {}",
            innermost_cause(&err).unwrap_or_else(|| "the connection failed".into())
        ),
        (SdkError::TimeoutError(_), None, None) => {
            format!("no answer from {endpoint} in time")
        }
        (_, None, None) => match innermost_cause(&err) {
            Some(cause) => format!("the request to {endpoint} failed: {cause}"),
            None => format!("the request to {endpoint} failed"),
        },
    };
    Error::Aws(error)
}

/// One sentence for an HTTP answer that is not an AWS one: who answered, the status, the first
/// line of the body.
fn unexpected_answer(endpoint: &str, status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let shown = line.map(|line| {
        let printable: String = line
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        let cut: String = printable.chars().take(BODY_LINE_CHARS).collect();
        if cut.len() < printable.len() {
            format!("{cut}…")
        } else {
            cut
        }
    });
    match shown {
        Some(line) => format!(
            "{endpoint} answered HTTP {status}, which is not an AWS answer; its body begins `{line}`"
        ),
        None => format!("{endpoint} answered HTTP {status} with an empty body, which is not an AWS answer"),
    }
}

/// The message of the last error in `err`'s chain of causes (`Connection refused (os error
/// 111)`), which says what happened without the SDK's wrapping.
fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = err.source()?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

#[async_trait::async_trait]
impl Cloud for Sdk {
    fn region(&self) -> &str {
        &self.region
    }

    fn in_region(&self, region: &str) -> Arc<dyn Cloud> {
        Arc::new(Sdk::in_region(self, region))
    }

    async fn images(&self, ids: &[String]) -> Result<Vec<Image>> {
        images::images(self, ids).await
    }

    async fn find_images(&self, query: &ImageQuery) -> Result<Vec<Image>> {
        images::find_images(self, query).await
    }

    async fn create_image(&self, request: &CreateImageRequest) -> Result<String> {
        images::create_image(self, request).await
    }

    async fn copy_image(&self, request: &CopyImageRequest) -> Result<String> {
        images::copy_image(self, request).await
    }

    async fn deregister_image(&self, image_id: &str) -> Result<()> {
        images::deregister_image(self, image_id).await
    }

    async fn require_imdsv2(&self, image_id: &str) -> Result<()> {
        images::require_imdsv2(self, image_id).await
    }

    async fn deprecate_image(&self, image_id: &str, at: SystemTime) -> Result<()> {
        images::deprecate_image(self, image_id, at).await
    }

    async fn protect_image(&self, image_id: &str) -> Result<()> {
        images::protect_image(self, image_id).await
    }

    async fn unprotect_image(&self, image_id: &str) -> Result<()> {
        images::unprotect_image(self, image_id).await
    }

    async fn image_references(&self, image_ids: &[String]) -> Result<Option<Vec<ImageReference>>> {
        images::image_references(self, image_ids).await
    }

    async fn share_image(
        &self,
        image_id: &str,
        snapshot_ids: &[String],
        accounts: &[String],
    ) -> Result<()> {
        images::share_image(self, image_id, snapshot_ids, accounts).await
    }

    async fn snapshots_of_image(&self, image_id: &str) -> Result<Vec<String>> {
        images::snapshots_of_image(self, image_id).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()> {
        images::delete_snapshot(self, snapshot_id).await
    }

    async fn create_tags(&self, resource_ids: &[String], tags: &Tags) -> Result<()> {
        images::create_tags(self, resource_ids, tags).await
    }

    async fn delete_tags(&self, resource_ids: &[String], keys: &[String]) -> Result<()> {
        images::delete_tags(self, resource_ids, keys).await
    }

    async fn launch_instance(&self, request: &LaunchRequest) -> Result<String> {
        instances::launch_instance(self, request).await
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>> {
        instances::instance(self, instance_id).await
    }

    async fn find_instances(&self, query: &InstanceQuery) -> Result<Vec<Instance>> {
        instances::find_instances(self, query).await
    }

    async fn stop_instance(&self, instance_id: &str) -> Result<()> {
        instances::stop_instance(self, instance_id).await
    }

    async fn terminate_instance(&self, instance_id: &str) -> Result<()> {
        instances::terminate_instance(self, instance_id).await
    }

    async fn launch_template(&self, template: &TemplateRef) -> Result<LaunchTemplate> {
        templates::launch_template(self, template).await
    }

    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>> {
        templates::launch_templates(self).await
    }

    async fn default_template_version(&self, template: &TemplateRef) -> Result<TemplateVersion> {
        templates::default_template_version(self, template).await
    }

    async fn template_versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>> {
        templates::template_versions(self, template_id).await
    }

    async fn create_template_version(&self, request: &NewTemplateVersion) -> Result<i64> {
        templates::create_template_version(self, request).await
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<()> {
        templates::set_default_version(self, template_id, version).await
    }

    async fn delete_template_version(&self, template_id: &str, version: i64) -> Result<()> {
        templates::delete_template_version(self, template_id, version).await
    }

    async fn agent_status(&self, instance_id: &str) -> Result<Option<PingStatus>> {
        commands::agent_status(self, instance_id).await
    }

    async fn send_command(&self, command: &ShellCommand) -> Result<String> {
        commands::send_command(self, command).await
    }

    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>> {
        commands::invocation(self, command_id, instance_id).await
    }

    async fn cancel_command(&self, command_id: &str, instance_id: &str) -> Result<()> {
        commands::cancel_command(self, command_id, instance_id).await
    }

    async fn put_parameter(&self, name: &str, value: &str, description: &str) -> Result<i64> {
        commands::put_parameter(self, name, value, description).await
    }

    async fn parameter_value(&self, name: &str) -> Result<String> {
        commands::parameter_value(self, name).await
    }

    async fn secret_value(&self, id: &str) -> Result<String> {
        commands::secret_value(self, id).await
    }

    async fn start_refresh(&self, request: &RefreshRequest) -> Result<String> {
        autoscaling::start_refresh(self, request).await
    }

    async fn refresh(&self, group: &str, refresh_id: &str) -> Result<Option<Refresh>> {
        autoscaling::refresh(self, group, refresh_id).await
    }

    async fn active_refresh(&self, group: &str) -> Result<Option<Refresh>> {
        autoscaling::active_refresh(self, group).await
    }

    async fn rollback_refresh(&self, group: &str) -> Result<()> {
        autoscaling::rollback_refresh(self, group).await
    }

    async fn auto_scaling_group(&self, name: &str) -> Result<Option<AutoScalingGroup>> {
        autoscaling::group(self, name).await
    }

    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>> {
        autoscaling::groups(self).await
    }

    async fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: &str,
    ) -> Result<()> {
        autoscaling::set_launch_template(self, group, template_id, version).await
    }

    async fn set_group_max_size(&self, group: &str, max_size: i32) -> Result<()> {
        autoscaling::set_max_size(self, group, max_size).await
    }

    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>> {
        targets::target_health(self, target_group_arn).await
    }

    async fn instance_profile(&self, reference: &str) -> Result<Option<InstanceProfile>> {
        iam::instance_profile(self, reference).await
    }
}
