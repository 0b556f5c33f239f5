//! The client's own rules, over a scripted transport: what is retried, with
//! which bytes, how often, and how replies decode.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;

/// Answers from a script, and keeps every request it was sent.
#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Result<RawResponse, TransportError>>>,
    sent: Mutex<Vec<RawRequest>>,
}

impl Transport for Script {
    async fn send(&self, request: RawRequest) -> Result<RawResponse, TransportError> {
        self.sent.lock().unwrap().push(request);
        self.replies.lock().unwrap().pop_front().expect("the script has a reply for every send")
    }
}

fn reply(status: u16, content_type: &str, body: &str) -> Result<RawResponse, TransportError> {
    Ok(http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.as_bytes().to_vec())
        .unwrap())
}

fn problem(status: u16, code: &str) -> Result<RawResponse, TransportError> {
    let body =
        format!(r#"{{"type":"urn:tally:problem:{code}","title":"t","status":{status},"detail":"d","code":"{code}"}}"#);
    reply(status, PROBLEM_CONTENT_TYPE, &body)
}

const TOP_UP: &str = r#"{"entry_id":"e","amount":5,"balance":5}"#;

fn client(replies: Vec<Result<RawResponse, TransportError>>) -> Client<std::sync::Arc<Script>> {
    let script = std::sync::Arc::new(Script { replies: Mutex::new(replies.into()), ..Script::default() });
    Client::new(script).with_key("tly_user")
}

fn sent(client: &Client<std::sync::Arc<Script>>) -> Vec<RawRequest> {
    client.transport().sent.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_keyed_request_is_resent_with_the_same_key_and_bytes_after_a_503_or_no_reply() {
    let client = client(vec![
        problem(503, "unavailable"),
        Err(TransportError::TimedOut),
        reply(201, "application/json", TOP_UP),
    ]);
    let answer = client.top_up("k-1", 5).await.unwrap();
    assert_eq!((answer.status, answer.attempts, answer.body.balance), (StatusCode::CREATED, 3, 5));
    let sent = sent(&client);
    assert_eq!(sent.len(), 3);
    for request in &sent {
        assert_eq!(request.uri(), "/v1/wallet/top-ups");
        assert_eq!(request.headers()[headers::IDEMPOTENCY_KEY], "k-1");
        assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer tly_user");
        assert_eq!(request.body(), br#"{"amount":5}"#);
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_in_flight_is_waited_out_but_a_refusal_is_final() {
    let client = client(vec![problem(409, "idempotency_key_in_use"), problem(409, "insufficient_balance")]);
    let error = client.top_up("k-2", 5).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::InsufficientBalance));
    assert_eq!(error.status(), Some(StatusCode::CONFLICT));
    assert_eq!(sent(&client).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_unkeyed_post_is_never_resent() {
    let client = client(vec![problem(503, "unavailable")]);
    let request = serde_json::from_str(r#"{"name":"kim"}"#).unwrap();
    let error = client.create_user(&request).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable));
    assert_eq!(sent(&client).len(), 1, "a second create would make a second user");
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_the_bounded_attempts() {
    let client = client((0..3).map(|_| problem(503, "unavailable")).collect())
        .with_retry(Retry { attempts: 3, ..Retry::default() });
    let error = client.wallet().await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable));
    assert_eq!(sent(&client).len(), 3);
}

#[test]
fn backoff_doubles_honours_retry_after_and_is_capped() {
    let retry = Retry { attempts: 9, backoff: Duration::from_millis(50), backoff_max: Duration::from_secs(1) };
    let waits: Vec<u128> = (1..=6).map(|n| retry.wait(n, None).as_millis()).collect();
    assert_eq!(waits, [50, 100, 200, 400, 800, 1000]);
    assert_eq!(retry.wait(1, Some(3)), Duration::from_secs(1), "Retry-After is capped too");
    assert_eq!(retry.wait(40, None), Duration::from_secs(1), "no overflow");
}

#[tokio::test]
async fn a_reply_that_is_neither_body_nor_problem_is_unexpected() {
    let client = client(vec![reply(502, "text/html", "<h1>bad gateway</h1>")]).with_retry(Retry::NEVER);
    let error = client.wallet().await.unwrap_err();
    assert_eq!(error, Error::Unexpected { status: StatusCode::BAD_GATEWAY, detail: "<h1>bad gateway</h1>".into() });
}
