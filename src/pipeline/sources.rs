//! The values of secret variables declared with a `from:` source: the environment, an SSM
//! parameter or a Secrets Manager secret.
//!
//! Owns reading them, once a build has connected and before its plan is rendered for the
//! builder, and the message when one cannot be read (the variable, where its `from:` is, the
//! operation, resource and region, and the fix). Only a build calls it: the commands that send
//! no steps never read a source. It must not print, log or keep a value anywhere but in the
//! map it returns (the recipe loader renders the plan with it, and the plan redacts it).

use std::collections::BTreeMap;

use crate::aws::{Cloud, Meaning};
use crate::error::{Error, Result};
use crate::plan::{SecretSource, VarSource};

/// The value of every source that applies (not overridden by `--var`, a var file or
/// `KILN_VAR_<name>`), by variable name; `env` reads the process environment. The first source
/// that cannot be read fails the whole read: nothing has been created yet.
pub async fn read(
    cloud: &dyn Cloud,
    sources: &[VarSource],
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for declared in sources.iter().filter(|source| !source.overridden) {
        let value = read_one(cloud, declared, env).await?;
        values.insert(declared.var.clone(), value);
    }
    Ok(values)
}

async fn read_one(
    cloud: &dyn Cloud,
    declared: &VarSource,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<String> {
    let VarSource {
        var,
        source,
        declared_at,
        ..
    } = declared;
    let unreadable = |why: String, fix: String| {
        Error::Refused(format!(
            "could not read secret variable `{var}` (`from: {source}`, {declared_at}): {why}\n  fix: {fix}"
        ))
    };
    let region = cloud.region();
    let other_ways = format!(
        "or give the value with --var-file FILE, {}{var} or --var {var}=VALUE",
        crate::recipe::ENV_PREFIX
    );
    match source {
        SecretSource::Env(name) => env(name).ok_or_else(|| {
            Error::Usage(format!(
                "could not read secret variable `{var}` (`from: {source}`, {declared_at}): the environment variable {name} is not set\n  \
                 fix: export {name} before running kiln, {other_ways}"
            ))
        }),
        SecretSource::Ssm(name) => cloud.parameter_value(name).await.map_err(|e| {
            let fix = match e.meaning() {
                Some(Meaning::NotFound) => format!(
                    "create the parameter in {region} (aws ssm put-parameter --region {region} --type SecureString --name {name} --value …), \
                     fix the name in `from:`, or pass --region for the region that holds it, {other_ways}"
                ),
                _ => access_fix(&e, "ssm:GetParameter on the parameter", &other_ways),
            };
            unreadable(e.to_string(), fix)
        }),
        SecretSource::SecretsManager { id, key } => {
            let text = cloud.secret_value(id).await.map_err(|e| {
                let fix = match e.meaning() {
                    Some(Meaning::NotFound) => format!(
                        "create the secret in {region} (aws secretsmanager create-secret --region {region} --name {id} --secret-string …), \
                         fix the id in `from:`, or pass --region for the region that holds it, {other_ways}"
                    ),
                    _ => access_fix(&e, "secretsmanager:GetSecretValue on the secret", &other_ways),
                };
                unreadable(e.to_string(), fix)
            })?;
            let Some(key) = key else {
                return Ok(text);
            };
            json_key(&text, key).map_err(|why| {
                unreadable(
                    format!("secret {id} in {region}: {why}"),
                    format!("store the secret as a JSON object with a string at `{key}`, or read the whole secret with `from: secretsmanager:{id}`"),
                )
            })
        }
    }
}

/// The fix for a read refused for lack of permission, or any other failure.
fn access_fix(error: &Error, permission: &str, other_ways: &str) -> String {
    match error.meaning() {
        Some(Meaning::Denied) => format!(
            "allow the caller {permission} (`kiln iam-policy RECIPE` prints it), and kms:Decrypt on the key if it is a customer managed KMS key, {other_ways}"
        ),
        _ => format!("see the error above, then build again, {other_ways}"),
    }
}

/// The string at `key` of the JSON object `text`; the reason it is not there otherwise (naming
/// the keys, never the values).
fn json_key(text: &str, key: &str) -> std::result::Result<String, String> {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return Err(format!(
            "its SecretString is not a JSON object, and `#{key}` reads one key of a JSON object"
        ));
    };
    match object.get(key) {
        Some(serde_json::Value::String(value)) => Ok(value.clone()),
        Some(other) if !other.is_object() && !other.is_array() && !other.is_null() => {
            Ok(other.to_string())
        }
        Some(_) => Err(format!("the value at `{key}` is not a string")),
        None => {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            Err(format!(
                "the JSON object has no key `{key}` (its keys: {})",
                keys.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::Fake;

    fn source(var: &str, from: &str) -> VarSource {
        VarSource {
            var: var.into(),
            source: SecretSource::parse(from).unwrap(),
            declared_at: "app.yaml:7:11".into(),
            overridden: false,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[tokio::test]
    async fn reads_env_parameters_and_secrets_and_skips_overridden_sources() {
        let fake = Fake::seeded("us-east-1");
        fake.put_parameter("/app/key", "parameter-value-1", "d")
            .await
            .unwrap();
        fake.add_secret("app/db", r#"{"password":"db-password-1","port":5432}"#);
        fake.add_secret("app/token", "token-value-1");
        let mut overridden = source("skipped", "ssm:/does/not/exist");
        overridden.overridden = true;
        let sources = [
            source("from_env", "env:APP_TOKEN"),
            source("from_ssm", "ssm:/app/key"),
            source("password", "secretsmanager:app/db#password"),
            source("port", "secretsmanager:app/db#port"),
            source("token", "secretsmanager:app/token"),
            overridden,
        ];
        let env = |name: &str| (name == "APP_TOKEN").then(|| "env-value-1".to_owned());
        let values = read(&fake, &sources, &env).await.unwrap();
        let expected: BTreeMap<String, String> = [
            ("from_env", "env-value-1"),
            ("from_ssm", "parameter-value-1"),
            ("password", "db-password-1"),
            ("port", "5432"),
            ("token", "token-value-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(values, expected);
        assert_eq!(fake.count("GetParameter"), 1);
        assert_eq!(fake.count("GetSecretValue"), 3);
    }

    #[tokio::test]
    async fn an_unreadable_source_names_the_variable_the_operation_the_region_and_the_fix() {
        let fake = Fake::seeded("us-east-1");
        let missing = read(&fake, &[source("api_key", "ssm:/app/missing")], &no_env)
            .await
            .unwrap_err();
        let text = missing.to_string();
        for part in [
            "could not read secret variable `api_key` (`from: ssm:/app/missing`, app.yaml:7:11)",
            "GetParameter failed for parameter /app/missing in us-east-1: ParameterNotFound",
            "fix: create the parameter in us-east-1",
        ] {
            assert!(text.contains(part), "{part}\n{text}");
        }
        let env = read(&fake, &[source("api_key", "env:APP_KEY")], &no_env)
            .await
            .unwrap_err();
        assert_eq!(env.exit_code(), crate::error::exit::USAGE);
        assert!(
            env.to_string()
                .contains("the environment variable APP_KEY is not set\n  fix: export APP_KEY"),
            "{env}"
        );
        let secret = read(&fake, &[source("db", "secretsmanager:app/none")], &no_env)
            .await
            .unwrap_err();
        assert!(
            secret.to_string().contains(
                "GetSecretValue failed for secret app/none in us-east-1: ResourceNotFoundException"
            ),
            "{secret}"
        );
        fake.add_secret(
            "app/db",
            r#"{"user":"admin-user-name","password":"p4ssw0rd-value"}"#,
        );
        let key = read(
            &fake,
            &[source("db", "secretsmanager:app/db#pass")],
            &no_env,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            key.contains("the JSON object has no key `pass` (its keys: password, user)"),
            "{key}"
        );
        assert!(
            !key.contains("p4ssw0rd-value") && !key.contains("admin-user-name"),
            "{key}"
        );
        fake.add_secret("app/plain", "not json at all");
        let plain = read(
            &fake,
            &[source("db", "secretsmanager:app/plain#k")],
            &no_env,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(plain.contains("is not a JSON object"), "{plain}");
        assert!(!plain.contains("not json at all"), "{plain}");
    }
}
