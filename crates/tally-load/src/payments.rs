//! The `hot` and `spread` clients' step: a top-up, then a payment, paid
//! either in two requests (create, then confirm) or, with `--one-step`, in
//! one (`POST /v1/payments {…, "confirm": true}`, created and confirmed in
//! one transaction).
//!
//! This module owns the rule of what an answer moved: the wallet check adds
//! up the net change of every acknowledged movement, and the report counts
//! the movements (acknowledged top-ups and confirmed payments), so both must
//! read the same answers the same way.

use http::StatusCode;
use tally_client::dto::{CreatePaymentRequest, PaymentBody};

use super::{Client, Observed, record, timed};

/// How a client pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// `POST /v1/payments`, then `POST /v1/payments/{id}/confirm`.
    TwoStep,
    /// `POST /v1/payments {…, "confirm": true}`.
    OneStep,
}

/// What the answer that settles a payment did to the payer's wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The payment is done: the wallet paid `amount`, less the payback the
    /// merchant's policy credited back.
    Moved { net_debit: i64 },
    /// Refused or not answered: nothing moved.
    Nothing,
}

/// The effect of `status` and `body` (present on a 2xx), the answer that
/// settles a payment of `amount`: the confirm's (two-step) or the create's
/// (one-step).
///
/// One-step: a 201 is `done` (money moved) and a 409 is a refusal with
/// nothing created; a 201 in any other state would mean the server ignored
/// `confirm`, which is an error, not a movement. Two-step: a 200 confirm is
/// a movement.
pub(crate) fn settled(
    flow: Flow,
    amount: i64,
    status: StatusCode,
    body: Option<&PaymentBody>,
) -> Result<Settled, String> {
    let moved = match (flow, body) {
        (Flow::TwoStep, Some(_)) => status == StatusCode::OK,
        (Flow::OneStep, Some(body)) if status == StatusCode::CREATED => match body.status.as_str() {
            "done" => true,
            other => return Err(format!("one-step payment answered 201 in state {other:?}: {body:?}")),
        },
        _ => false,
    };
    match body {
        // The payback is the server's policy (`--payback-bps`), which the
        // load cannot know beforehand, so it reads what the server answered.
        Some(body) if moved => Ok(Settled::Moved { net_debit: amount - body.payback_amount }),
        _ => Ok(Settled::Nothing),
    }
}

/// Client `c`'s `n`-th step on `wallet`: even steps top up, odd steps pay.
pub(crate) async fn step(
    client: &Client,
    flow: Flow,
    key: &str,
    wallet: usize,
    c: u64,
    n: u64,
    local: &mut Observed,
) -> Result<(), String> {
    let amount = i64::try_from(1 + (c * 7 + n * 13) % 100).expect("small");
    let api = client.as_key(key);
    if n.is_multiple_of(2) {
        let reply = timed(api.top_up(&format!("t-{c}-{n}"), amount)).await?;
        record(local, &reply);
        if reply.status == StatusCode::CREATED {
            *local.expected_delta.entry(wallet).or_default() += amount;
            local.movements += 1;
        }
        return Ok(());
    }
    let payment = CreatePaymentRequest::of_amount(amount, "wallet");
    let settling = match flow {
        Flow::OneStep => {
            let paid = timed(api.create_payment(&format!("p-{c}-{n}"), &payment.confirmed())).await?;
            record(local, &paid);
            paid
        }
        Flow::TwoStep => {
            let created = timed(api.create_payment(&format!("p-{c}-{n}"), &payment)).await?;
            record(local, &created);
            let Some(id) = created.body.map(|body| body.id) else { return Ok(()) };
            let confirmed = timed(api.confirm_payment(&format!("c-{c}-{n}"), &id, None)).await?;
            record(local, &confirmed);
            confirmed
        }
    };
    if let Settled::Moved { net_debit } = settled(flow, amount, settling.status, settling.body.as_ref())? {
        *local.expected_delta.entry(wallet).or_default() -= net_debit;
        local.movements += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(status: &str, payback: i64) -> PaymentBody {
        PaymentBody {
            id: "x".into(),
            status: status.into(),
            amount: 40,
            payback_amount: payback,
            method: "wallet".into(),
            order_id: None,
        }
    }

    #[test]
    fn a_one_step_201_done_moves_the_amount_less_its_payback() {
        let done = payment("done", 4);
        assert_eq!(settled(Flow::OneStep, 40, StatusCode::CREATED, Some(&done)), Ok(Settled::Moved { net_debit: 36 }));
    }

    #[test]
    fn a_one_step_refusal_moves_nothing() {
        assert_eq!(settled(Flow::OneStep, 40, StatusCode::CONFLICT, None), Ok(Settled::Nothing));
        assert_eq!(settled(Flow::OneStep, 40, StatusCode::SERVICE_UNAVAILABLE, None), Ok(Settled::Nothing));
    }

    #[test]
    fn a_one_step_201_that_is_not_done_is_an_error_not_a_movement() {
        let waiting = payment("wait", 0);
        assert!(settled(Flow::OneStep, 40, StatusCode::CREATED, Some(&waiting)).is_err());
    }

    #[test]
    fn two_step_moves_on_a_200_confirm_only() {
        let done = payment("done", 0);
        assert_eq!(settled(Flow::TwoStep, 40, StatusCode::OK, Some(&done)), Ok(Settled::Moved { net_debit: 40 }));
        // The 201 of a create is not a movement in the two-step flow.
        assert_eq!(settled(Flow::TwoStep, 40, StatusCode::CREATED, Some(&done)), Ok(Settled::Nothing));
        assert_eq!(settled(Flow::TwoStep, 40, StatusCode::CONFLICT, None), Ok(Settled::Nothing));
    }
}
