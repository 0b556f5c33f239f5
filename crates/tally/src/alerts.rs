//! Alerts to an operator's webhook (`--alert-webhook`, a Slack-style
//! incoming webhook: seed 002's service posts to Slack), for the three
//! things nobody should learn about from a customer:
//!
//! - **a burst of 5xx answers** ([`SERVER_ERROR_BURST`] within
//!   [`SERVER_ERROR_WINDOW`]): the database is gone, load is being shed;
//! - **a gateway payment the completer could not settle**: still
//!   `confirming` after the completer looked it up;
//! - **a refund owed and not made**: `cancelling` or `refunding` after the
//!   completer re-sent the refund.
//!
//! Alerts are posted by one background task from a bounded queue, each with
//! a timeout, so a slow or dead webhook never slows a request. At most one
//! alert per kind per [`ALERT_INTERVAL`]; the next one says how many were
//! held back in between.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};
use tally_core::app::Completion;
use tally_core::payment::{Payment, PaymentStatus};
use tokio::sync::mpsc;

/// This many 5xx answers ...
pub const SERVER_ERROR_BURST: usize = 10;
/// ... within this long make a burst.
pub const SERVER_ERROR_WINDOW: Duration = Duration::from_secs(60);
/// At most one alert of a kind this often.
pub const ALERT_INTERVAL: Duration = Duration::from_secs(60);
/// How long one post to the webhook may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Alerts waiting to be posted; past it, an alert is dropped (and logged).
const QUEUE_MAX: usize = 32;
/// Payment ids named in one alert.
const IDS_MAX: usize = 10;

/// What an alert is about; each kind is rate-limited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    ServerErrors,
    PaymentStuck,
    RefundOwed,
}

impl AlertKind {
    const ALL: [AlertKind; 3] = [AlertKind::ServerErrors, AlertKind::PaymentStuck, AlertKind::RefundOwed];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ServerErrors => "server_errors",
            AlertKind::PaymentStuck => "payment_stuck",
            AlertKind::RefundOwed => "refund_owed",
        }
    }

    fn index(self) -> usize {
        AlertKind::ALL.iter().position(|&kind| kind == self).expect("every kind is in ALL")
    }
}

/// When each kind last went out, and how many were held back since.
#[derive(Debug, Default)]
struct Gate {
    last_sent: [Option<Instant>; 3],
    held_back: [u64; 3],
}

/// The alerting side of a running `tally serve`.
#[derive(Debug)]
pub struct Alerts {
    queue: mpsc::Sender<Value>,
    gate: Mutex<Gate>,
    /// When the recent 5xx answers were given, oldest first, at most
    /// [`SERVER_ERROR_BURST`] of them.
    server_errors: Mutex<VecDeque<Instant>>,
    interval: Duration,
}

impl Alerts {
    /// Starts the task that posts to `webhook`; alerts of one kind go out at
    /// most once per `interval`.
    pub fn start(webhook: String, interval: Duration) -> Result<Arc<Alerts>, String> {
        let client = reqwest::Client::builder().timeout(POST_TIMEOUT).build().map_err(|e| e.to_string())?;
        let (queue, mut alerts) = mpsc::channel::<Value>(QUEUE_MAX);
        tokio::spawn(async move {
            while let Some(alert) = alerts.recv().await {
                let posted = client.post(&webhook).json(&alert).send().await.and_then(|r| r.error_for_status());
                if let Err(error) = posted {
                    tracing::warn!(%error, kind = %alert["kind"], "posting an alert failed");
                }
            }
        });
        Ok(Arc::new(Alerts { queue, gate: Mutex::default(), server_errors: Mutex::default(), interval }))
    }

    /// Counts a 5xx answer; a burst raises [`AlertKind::ServerErrors`].
    pub fn server_error(&self, now: Instant) {
        let burst = {
            let mut recent = self.server_errors.lock().expect("server error window lock");
            while recent.front().is_some_and(|&at| now.duration_since(at) > SERVER_ERROR_WINDOW) {
                recent.pop_front();
            }
            if recent.len() == SERVER_ERROR_BURST {
                recent.pop_front();
            }
            recent.push_back(now);
            debug_assert!(recent.len() <= SERVER_ERROR_BURST);
            recent.len() == SERVER_ERROR_BURST
        };
        if burst {
            let text = format!(
                "{SERVER_ERROR_BURST} answers were 5xx within {} s: is the database reachable?",
                SERVER_ERROR_WINDOW.as_secs()
            );
            self.raise(AlertKind::ServerErrors, now, text, json!({ "count": SERVER_ERROR_BURST }));
        }
    }

    /// Reads one completer pass: what it tried and could not settle.
    pub fn completion(&self, completion: &Completion, now: Instant) {
        let (refunds, charges): (Vec<&Payment>, Vec<&Payment>) = completion
            .unsettled
            .iter()
            .partition(|p| matches!(p.status, PaymentStatus::Cancelling | PaymentStatus::Refunding));
        let error = completion.first_error.as_ref().map(ToString::to_string);
        if !charges.is_empty() {
            let text = format!("{} gateway payment(s) still confirming after the completer's lookup", charges.len());
            self.raise(AlertKind::PaymentStuck, now, text, details(&charges, error.as_deref()));
        }
        if !refunds.is_empty() {
            let text = format!("{} refund(s) owed and not yet made after the completer re-sent them", refunds.len());
            self.raise(AlertKind::RefundOwed, now, text, details(&refunds, error.as_deref()));
        }
    }

    fn raise(&self, kind: AlertKind, now: Instant, text: String, details: Value) {
        let held_back = {
            let mut gate = self.gate.lock().expect("alert gate lock");
            let slot = kind.index();
            if gate.last_sent[slot].is_some_and(|at| now.duration_since(at) < self.interval) {
                gate.held_back[slot] += 1;
                return;
            }
            gate.last_sent[slot] = Some(now);
            std::mem::take(&mut gate.held_back[slot])
        };
        let alert = json!({
            "text": format!("[tally] {text}"),
            "kind": kind.as_str(),
            "held_back": held_back,
            "details": details,
        });
        if self.queue.try_send(alert).is_err() {
            tracing::warn!(kind = kind.as_str(), "the alert queue is full; an alert was dropped");
        }
    }
}

fn details(payments: &[&Payment], error: Option<&str>) -> Value {
    let ids: Vec<String> = payments.iter().take(IDS_MAX).map(|p| p.id.to_string()).collect();
    json!({ "count": payments.len(), "payments": ids, "error": error })
}

/// Middleware: every 5xx answer counts towards a burst.
pub async fn watch_server_errors(State(alerts): State<Arc<Alerts>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_server_error() {
        alerts.server_error(Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::extract::State as Receiver;
    use axum::routing::post;
    use tally_core::ids::{PaymentId, UserId};
    use tally_core::money::Amount;
    use tally_core::payment::Method;
    use tally_core::time::Timestamp;

    use super::*;

    /// A local webhook: every JSON body posted to it, in order.
    async fn webhook() -> (String, mpsc::UnboundedReceiver<Value>) {
        let (sink, received) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/hook",
            post(|Receiver(sink): Receiver<mpsc::UnboundedSender<Value>>, body: axum::Json<Value>| async move {
                sink.send(body.0).expect("the test still listens");
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app.with_state(sink)).await });
        (url, received)
    }

    async fn next(received: &mut mpsc::UnboundedReceiver<Value>) -> Value {
        tokio::time::timeout(Duration::from_secs(5), received.recv()).await.expect("an alert").expect("open")
    }

    async fn assert_quiet(received: &mut mpsc::UnboundedReceiver<Value>) {
        let extra = tokio::time::timeout(Duration::from_millis(300), received.recv()).await;
        assert!(extra.is_err(), "no further alert: {extra:?}");
    }

    fn payment(n: u128, status: PaymentStatus) -> Payment {
        let amount = Amount::new(1_000).unwrap();
        let mut payment = Payment::new(PaymentId(n), UserId(1), amount, None, Method::Gateway, Timestamp(0)).unwrap();
        payment.status = status;
        payment
    }

    #[tokio::test]
    async fn a_burst_of_5xx_posts_one_alert_and_counts_what_it_held_back() {
        let (url, mut received) = webhook().await;
        let alerts = Alerts::start(url, ALERT_INTERVAL).unwrap();
        let start = Instant::now();
        for _ in 0..SERVER_ERROR_BURST - 1 {
            alerts.server_error(start);
        }
        assert_quiet(&mut received).await;
        alerts.server_error(start);
        let alert = next(&mut received).await;
        assert_eq!((alert["kind"].as_str(), alert["held_back"].as_u64()), (Some("server_errors"), Some(0)));
        assert!(alert["text"].as_str().unwrap().starts_with("[tally] "), "{alert}");
        // The burst goes on: held back within the interval ...
        for _ in 0..3 {
            alerts.server_error(start);
        }
        assert_quiet(&mut received).await;
        // ... and counted in the next alert once the interval passed.
        alerts.server_error(start + ALERT_INTERVAL);
        let later = next(&mut received).await;
        assert_eq!(later["held_back"], 3);
    }

    #[tokio::test]
    async fn spread_out_5xx_answers_are_not_a_burst() {
        let (url, mut received) = webhook().await;
        let alerts = Alerts::start(url, ALERT_INTERVAL).unwrap();
        let start = Instant::now();
        for i in 0..30 {
            alerts.server_error(start + SERVER_ERROR_WINDOW / 8 * i);
        }
        assert_quiet(&mut received).await;
    }

    #[tokio::test]
    async fn unsettled_payments_raise_a_stuck_charge_and_a_refund_owed() {
        let (url, mut received) = webhook().await;
        let alerts = Alerts::start(url, ALERT_INTERVAL).unwrap();
        let completion = Completion {
            resolved: 4,
            watching: 0,
            unsettled: vec![
                payment(1, PaymentStatus::Confirming),
                payment(2, PaymentStatus::Refunding),
                payment(3, PaymentStatus::Cancelling),
            ],
            first_error: None,
        };
        alerts.completion(&completion, Instant::now());
        let stuck = next(&mut received).await;
        assert_eq!(stuck["kind"], "payment_stuck");
        assert_eq!(stuck["details"]["payments"], json!([PaymentId(1).to_string()]));
        let owed = next(&mut received).await;
        assert_eq!(owed["kind"], "refund_owed");
        assert_eq!(owed["details"]["count"], 2);
        // A pass with nothing unsettled says nothing, nor do payments it
        // watches for a late charge that has not landed.
        alerts.completion(&Completion { resolved: 1, watching: 3, ..Completion::default() }, Instant::now());
        assert_quiet(&mut received).await;
    }
}
