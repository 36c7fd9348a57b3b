//! STS `GetCallerIdentity` (Query protocol): who signed the request, as
//! the AWS CLI and SDK tooling ask to check their credentials.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::Caller;
use crate::error::{with_request_id, xml_escape};

/// The answer to `GetCallerIdentity` for `caller` in account `account`.
pub fn get_caller_identity(caller: &Caller, account: &str, request_id: &str) -> Response {
    let (arn, user_id) = match (&caller.access_key_id, caller.principal.username()) {
        (Some(key), Some(user)) if caller.mapped_user => {
            (format!("arn:aws:iam::{account}:user/{user}"), key.clone())
        }
        (Some(key), _) => (format!("arn:aws:iam::{account}:root"), key.clone()),
        (None, _) => (
            format!("arn:aws:sts::{account}:assumed-role/anonymous/tidewire"),
            "anonymous".to_owned(),
        ),
    };
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
         </GetCallerIdentityResult><ResponseMetadata><RequestId>{}</RequestId>\
         </ResponseMetadata></GetCallerIdentityResponse>",
        xml_escape(&arn),
        xml_escape(&user_id),
        account,
        request_id
    );
    with_request_id(
        ([(header::CONTENT_TYPE, "text/xml")], body).into_response(),
        request_id,
    )
}
