//! The answers' XML: `<ActionResponse xmlns=...><ActionResult>...
//! </ActionResult><ResponseMetadata><RequestId>...` as SNS writes them,
//! built by one small writer that escapes every value.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::{with_request_id, xml_escape};

/// SNS's XML namespace.
const NAMESPACE: &str = "http://sns.amazonaws.com/doc/2010-03-31/";

/// An answer being written: the action's result element's content.
#[derive(Debug)]
pub struct Answer {
    action: &'static str,
    body: String,
}

impl Answer {
    /// An empty answer to `action`.
    pub fn new(action: &'static str) -> Answer {
        Answer {
            action,
            body: String::new(),
        }
    }

    /// `<name>value</name>`, the value escaped.
    pub fn field(&mut self, name: &str, value: &str) -> &mut Answer {
        self.body.push('<');
        self.body.push_str(name);
        self.body.push('>');
        self.body.push_str(&xml_escape(value));
        self.close(name)
    }

    /// Opens the element `name`.
    pub fn open(&mut self, name: &str) -> &mut Answer {
        self.body.push('<');
        self.body.push_str(name);
        self.body.push('>');
        self
    }

    /// Closes the element `name`.
    pub fn close(&mut self, name: &str) -> &mut Answer {
        self.body.push_str("</");
        self.body.push_str(name);
        self.body.push('>');
        self
    }

    /// A string map as the Query protocol writes it: `<name><entry><key>K
    /// </key><value>V</value></entry>...</name>`.
    pub fn map<'a>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> &mut Answer {
        self.open(name);
        for (key, value) in entries {
            self.open("entry")
                .field("key", key)
                .field("value", value)
                .close("entry");
        }
        self.close(name)
    }

    /// The whole document, for request `request_id`; an answer with
    /// nothing in it has no result element.
    pub fn render(&self, request_id: &str) -> String {
        let action = self.action;
        let result = if self.body.is_empty() {
            String::new()
        } else {
            format!("<{action}Result>{}</{action}Result>", self.body)
        };
        format!(
            "<{action}Response xmlns=\"{NAMESPACE}\">{result}<ResponseMetadata><RequestId>{}\
             </RequestId></ResponseMetadata></{action}Response>",
            xml_escape(request_id)
        )
    }

    /// The answer as an HTTP response.
    pub fn into_response(self, request_id: &str) -> Response {
        with_request_id(
            (
                [(header::CONTENT_TYPE, "text/xml")],
                self.render(request_id),
            )
                .into_response(),
            request_id,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_wrapped() {
        let mut answer = Answer::new("GetTopicAttributes");
        answer.map(
            "Attributes",
            [("DisplayName", "a<b&c"), ("Owner", "000000000000")],
        );
        assert_eq!(
            answer.render("r-1"),
            "<GetTopicAttributesResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
             <GetTopicAttributesResult><Attributes><entry><key>DisplayName</key>\
             <value>a&lt;b&amp;c</value></entry><entry><key>Owner</key><value>000000000000\
             </value></entry></Attributes></GetTopicAttributesResult><ResponseMetadata>\
             <RequestId>r-1</RequestId></ResponseMetadata></GetTopicAttributesResponse>"
        );
        assert_eq!(
            Answer::new("DeleteTopic").render("r-2"),
            "<DeleteTopicResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
             <ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></DeleteTopicResponse>"
        );
    }
}
