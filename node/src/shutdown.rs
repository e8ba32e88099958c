//! Turning SIGTERM and Ctrl-C into a cancellation every part of a node listens to.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or Ctrl-C (SIGINT). The SIGTERM handler is in
/// place when this returns: a node told to stop right after it started (a busy host, a
/// quick rolling restart) leaves and drains instead of dying of the default action.
pub fn cancel_on_signal(token: CancellationToken) {
    let signal = listen();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown signal received");
        token.cancel();
    });
}

/// Installs the handlers now; the future ends on the first signal.
#[cfg(unix)]
fn listen() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn listen() -> impl std::future::Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// On a single-threaded runtime the spawned waiter has not run when the signal comes:
    /// only a handler installed by `cancel_on_signal` itself keeps the process alive.
    #[tokio::test(flavor = "current_thread")]
    async fn a_sigterm_right_after_start_cancels_the_node_instead_of_killing_it() {
        let token = CancellationToken::new();
        cancel_on_signal(token.clone());
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), token.cancelled())
            .await
            .expect("the signal cancels the token");
    }
}
