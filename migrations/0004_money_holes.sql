-- Issue 10's money holes, in the schema: payment keys bound to one payment,
-- paybacks held before the gateway charge, refunds owed durably, the
-- merchant's payback policy, the balance cap, and seats per queue token.
-- Every new column is filled for existing rows so that the invariant checker
-- holds on a migrated database exactly as the core would have written it.

-- 10^15 minor units: the core's Money::BALANCE_LIMIT, the cap on every
-- balance whether or not the wallet has a maximum of its own (hole 8: the
-- atomic strategy let a balance without a maximum pass it).

-- Paybacks of gateway charges in flight (`confirming`), held under the
-- wallet's ceiling before the charge is sent so that crediting them after it
-- can never be refused. A payment left confirming by the code before this
-- migration held nothing; its hold is what the new code releases when the
-- charge resolves, so it is taken here.
ALTER TABLE wallets ADD COLUMN payback_held bigint NOT NULL DEFAULT 0 CHECK (payback_held >= 0);
UPDATE wallets w SET payback_held = held.total
FROM (
    SELECT user_id, sum(payback)::bigint AS total FROM payments
    WHERE status = 'confirming' GROUP BY user_id
) held
WHERE held.user_id = w.user_id;
-- A wallet whose balance and held paybacks do not fit its ceiling stops this
-- migration: only the holes this closes could have made one (a balance past
-- the cap, or a payback the old code would have refused after the charge),
-- and which money is wrong there is for a person to settle, not a default.
ALTER TABLE wallets ADD CONSTRAINT wallets_balance_cap CHECK (balance <= 1000000000000000);
ALTER TABLE wallets ADD CONSTRAINT wallets_ceiling_with_held_paybacks
    CHECK (balance + payback_held <= LEAST(COALESCE(max_balance, 1000000000000000), 1000000000000000));

-- `refunding`: a charge of ours for another amount, failed, its refund owed
-- at the gateway until the gateway confirms it went back. In flight like
-- `confirming` and `cancelling`, so it has its payment key and the completer
-- finds it. It charges no order: the one-charge-per-order exclusion keeps
-- its ('confirming', 'done', 'cancelling').
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('wait', 'confirming', 'done', 'failed', 'cancelling', 'cancelled', 'refunding'));
ALTER TABLE payments DROP CONSTRAINT payments_gateway_attempt_check;
ALTER TABLE payments ADD CONSTRAINT payments_gateway_attempt_check CHECK (
    (gateway_payment_key IS NULL) = (gateway_started_at_ms IS NULL)
    AND (method = 'gateway' OR gateway_payment_key IS NULL)
    AND (status NOT IN ('confirming', 'cancelling', 'refunding') OR gateway_payment_key IS NOT NULL)
);
DROP INDEX payments_in_flight_at_gateway;
CREATE INDEX payments_in_flight_at_gateway ON payments (gateway_started_at_ms)
    WHERE status IN ('confirming', 'cancelling', 'refunding');

-- A gateway payment key belongs to one payment, forever (hole 1: one card
-- charge paid two payments). Immediate, not deferred: the second claim fails
-- at its statement, which the store reports as a conflict, and the use case
-- decides again and sees the claim. A database where two payments already
-- share a key stops this migration: which of them owns the charge is for a
-- person to settle.
CREATE UNIQUE INDEX payments_gateway_payment_key_unique ON payments (gateway_payment_key)
    WHERE gateway_payment_key IS NOT NULL;

-- The merchant's payback on a product, in basis points. Products made before
-- this had none (the customer chose the payback on the payment then).
ALTER TABLE products ADD COLUMN payback_bps integer NOT NULL DEFAULT 0 CHECK (payback_bps BETWEEN 0 AND 10000);

-- The payback an order's payment credits, fixed when the order was made.
-- Orders made before this carried none.
ALTER TABLE orders ADD COLUMN payback bigint NOT NULL DEFAULT 0;
ALTER TABLE orders ADD CONSTRAINT orders_payback_check CHECK (payback >= 0 AND payback <= total);

-- Seats one queue token may hold across its live orders (SPEC.md's default
-- of 4 for existing events too: a token that hoarded more before this keeps
-- its orders and books nothing more until it holds fewer).
ALTER TABLE events ADD COLUMN max_seats_per_token integer NOT NULL DEFAULT 4
    CHECK (max_seats_per_token BETWEEN 1 AND 1000);

-- What each token's live (unpaid or paid) orders hold, counted from them.
ALTER TABLE queue_tokens ADD COLUMN seats_held integer NOT NULL DEFAULT 0 CHECK (seats_held >= 0);
UPDATE queue_tokens t SET seats_held = held.seats
FROM (
    SELECT o.token_id, count(*)::integer AS seats FROM orders o JOIN order_seats s ON s.order_id = o.id
    WHERE o.token_id IS NOT NULL AND o.status IN ('pending_payment', 'paid') GROUP BY o.token_id
) held
WHERE held.token_id = t.id;
