//! `[aws]`: the account id every ARN carries, and the access keys SigV4
//! requests are signed with, each optionally mapped to a tidewire user
//! whose permissions then apply (without one: full access).

use std::collections::HashMap;

use serde::Deserialize;
use tidewire_core::ConfigError;

/// The account id when none is configured.
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";

/// `[aws]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Twelve digits (default `000000000000`).
    pub account_id: Option<String>,
    /// The region in ARNs tidewire writes outside a request, such as the
    /// `TopicArn` of the SNS messages it delivers (default `us-east-1`).
    /// Requests are answered in the region they were signed for.
    pub region: Option<String>,
    /// `[[aws.credentials]]`.
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
}

/// `[[aws.credentials]]`: an access key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// The access key id the SDK sends.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// The `[[users]]` entry whose permissions apply; none: full access.
    pub user: Option<String>,
}

/// One access key, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The secret.
    pub secret: String,
    /// Whose permissions apply.
    pub user: Option<String>,
}

/// `[aws]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// The account id.
    pub account_id: String,
    /// The region of ARNs written outside a request.
    pub region: String,
    /// Access keys by id.
    pub credentials: HashMap<String, Credential>,
}

impl AwsConfig {
    /// Validates the section; `is_user` says whether a `[[users]]` entry
    /// of a name exists.
    pub fn validate(&self, is_user: impl Fn(&str) -> bool) -> Result<AwsSettings, ConfigError> {
        let account_id = self
            .account_id
            .clone()
            .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned());
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::new(
                "aws.account_id",
                "must be 12 digits, e.g. \"000000000000\"",
            ));
        }
        let region = self
            .region
            .clone()
            .unwrap_or_else(|| crate::DEFAULT_REGION.to_owned());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::new(
                "aws.region",
                "a region name: lower-case letters, digits and '-', e.g. \"eu-west-1\"",
            ));
        }
        let mut credentials = HashMap::with_capacity(self.credentials.len());
        for (i, c) in self.credentials.iter().enumerate() {
            let key = |field: &str| format!("aws.credentials[{i}].{field}");
            if c.access_key_id.is_empty() || c.access_key_id.contains(['/', ' ']) {
                return Err(ConfigError::new(
                    key("access_key_id"),
                    "must be non-empty, without '/' or spaces",
                ));
            }
            if c.secret_access_key.is_empty() {
                return Err(ConfigError::new(
                    key("secret_access_key"),
                    "must not be empty",
                ));
            }
            if let Some(user) = &c.user
                && !is_user(user)
            {
                return Err(ConfigError::new(
                    key("user"),
                    format!("no user named {user:?} in [[users]]"),
                ));
            }
            let credential = Credential {
                secret: c.secret_access_key.clone(),
                user: c.user.clone(),
            };
            if credentials
                .insert(c.access_key_id.clone(), credential)
                .is_some()
            {
                return Err(ConfigError::new(
                    key("access_key_id"),
                    format!("duplicate access key {:?}", c.access_key_id),
                ));
            }
        }
        Ok(AwsSettings {
            account_id,
            region,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let parse = |text: &str| toml::from_str::<AwsConfig>(text).expect("parse");
        for (text, key) in [
            ("account_id = \"12\"", "aws.account_id"),
            (
                "[[credentials]]\naccess_key_id = \"\"\nsecret_access_key = \"s\"",
                "aws.credentials[0].access_key_id",
            ),
            (
                "[[credentials]]\naccess_key_id = \"A\"\nsecret_access_key = \"s\"\nuser = \"nobody\"",
                "aws.credentials[0].user",
            ),
        ] {
            let err = parse(text).validate(|_| false).expect_err(text);
            assert_eq!(err.key, key, "{text}");
        }
        let ok = parse("[[credentials]]\naccess_key_id = \"A\"\nsecret_access_key = \"s\"")
            .validate(|_| false)
            .expect("valid");
        assert_eq!(ok.account_id, DEFAULT_ACCOUNT_ID);
    }
}
