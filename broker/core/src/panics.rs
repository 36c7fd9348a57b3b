//! Keeping a panic to the one task it happened in: [`contain`] runs a
//! connection's or a socket's future; a panic in it ends only that future
//! (everything it held is dropped, so its connection slot and session are
//! released), is logged, and is counted in the caller's metric.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;

/// Runs `future`; a panic in it is logged as ending one `what` and
/// counted in `panics`, and does not reach the caller.
pub async fn contain(what: &'static str, panics: &Counter, future: impl Future<Output = ()>) {
    if let Err(payload) = AssertUnwindSafe(future).catch_unwind().await {
        panics.inc();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        tracing::error!(what, panic = %message, "a panic ended one {what}; the broker goes on (a bug: please report it)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_counted_and_goes_no_further() {
        let panics = Counter::default();
        contain("test task", &panics, async { panic!("boom") }).await;
        contain("test task", &panics, async {}).await;
        assert_eq!(panics.get(), 1);
    }
}
