//! Over a real listener: many identical requests at once, and shutdown.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::TestApp;

/// A response as read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`, so the
/// response ends where the stream ends). Deliberately minimal: these tests
/// need a real socket, not a full client.
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Wire {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Wire { status, headers, body: raw[split + 4..].to_vec() }
}

async fn listen(app: &TestApp) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        tally_http::serve(listener, router, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_identical_top_ups_at_once_have_exactly_one_effect() {
    let app = TestApp::spawn();
    let user = app.create_user("race").await;
    let (addr, stop, server) = listen(&app).await;
    let auth = format!("Bearer {}", user.key);
    let body = r#"{"amount":250}"#;
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let headers = [
                    ("Authorization", auth.as_str()),
                    ("Idempotency-Key", "one-key-for-all"),
                    ("Content-Type", "application/json"),
                ];
                send(addr, "POST", "/v1/wallet/top-ups", &headers, body).await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut in_use = 0;
    for request in requests {
        let response = request.await.unwrap();
        match response.status {
            201 => created.push(response),
            409 => {
                let problem: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
                assert_eq!(problem["code"], "idempotency_key_in_use");
                assert_eq!(response.header("content-type"), Some("application/problem+json"));
                in_use += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&response.body)),
        }
    }
    assert!(!created.is_empty(), "someone got the 201");
    assert_eq!(created.len() + in_use, 50);
    let fresh = created.iter().filter(|r| r.header("idempotent-replayed").is_none()).count();
    assert_eq!(fresh, 1, "exactly one request ran; the rest replayed it or were told to wait");
    for response in &created {
        assert_eq!(response.body, created[0].body, "every 201 is the same response");
    }
    // Whatever the interleaving, one later retry is a replay of it.
    let headers = [
        ("Authorization", auth.as_str()),
        ("Idempotency-Key", "one-key-for-all"),
        ("Content-Type", "application/json"),
    ];
    let last = send(addr, "POST", "/v1/wallet/top-ups", &headers, body).await;
    assert_eq!((last.status, last.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(last.body, created[0].body);

    assert_eq!(app.balance(&user).await, 250, "exactly one effect");
    let ledger = app.ledger(&user, "").await.assert_status(200);
    assert_eq!(ledger["entries"].as_array().unwrap().len(), 1);
    app.assert_invariants().await;

    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_over_tcp_and_stops_gracefully() {
    let app = TestApp::spawn();
    let (addr, stop, server) = listen(&app).await;
    let health = send(addr, "GET", "/healthz", &[], "").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, br#"{"status":"ok"}"#);
    let big = " ".repeat(100 * 1024);
    let too_big = send(
        addr,
        "POST",
        "/v1/wallet/top-ups",
        &[("Content-Type", "application/json"), ("Idempotency-Key", "k")],
        &big,
    )
    .await;
    // A declared length over the limit is refused before anything else,
    // by the body-limit layer, and still as a problem.
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.header("content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&too_big.body).unwrap();
    assert_eq!(problem["code"], "payload_too_large");
    stop.send(()).unwrap();
    server.await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
}
