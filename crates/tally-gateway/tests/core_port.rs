//! The client as the core's `Gateway` port, against the fake over real HTTP:
//! what the core decides on carries the order id the gateway charged for.

mod common;

use common::{SECRET, start};
use tally_core::gateway::{CancelResult, Confirmed, Gateway, LookedUp};
use tally_core::money::Amount;
use tally_gateway::GatewayClient;
use tally_gateway::fake::FakeGateway;

fn amount(units: i64) -> Amount {
    Amount::new(units).unwrap()
}

/// Hole 1 at the port: a key already charged for one order, confirmed again
/// for another, is neither charged again nor reported as the second order's.
#[tokio::test]
async fn a_reused_payment_key_reports_the_order_it_was_first_charged_for() {
    let fake = start(FakeGateway::new(SECRET)).await;
    let gateway: GatewayClient = fake.client();

    let first = Gateway::confirm(&gateway, "pk_shared", "payment-1", amount(1_000), "confirm-1").await;
    assert_eq!(first, Confirmed::Approved { amount: 1_000, order_id: "payment-1".into() });

    for (order, units) in [("payment-2", 1_000), ("payment-3", 1_001)] {
        let again = Gateway::confirm(&gateway, "pk_shared", order, amount(units), "confirm-2").await;
        assert!(matches!(again, Confirmed::Unknown { .. }), "{again:?}");
        // The lookup that follows an unclear confirm names the first order,
        // whatever order asked.
        assert_eq!(
            Gateway::lookup(&gateway, "pk_shared").await,
            LookedUp::Done { amount: 1_000, order_id: "payment-1".into() }
        );
    }
    let stats = fake.gateway.payment_stats("pk_shared");
    assert_eq!((stats.confirm_requests, stats.confirm_effects, stats.cancel_requests), (3, 1, 0));

    // A cancelled charge still names its order.
    assert_eq!(Gateway::cancel(&gateway, "pk_shared", "cancel-1").await, CancelResult::Cancelled);
    assert_eq!(Gateway::lookup(&gateway, "pk_shared").await, LookedUp::Cancelled { order_id: "payment-1".into() });
    assert_eq!(Gateway::lookup(&gateway, "pk_unknown").await, LookedUp::NotFound);
    fake.stop().await;
}
