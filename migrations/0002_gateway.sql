-- Gateway payments (seed 003): confirmed in phases around the one foreign
-- call, so a payment can wait in `confirming` (confirm sent, outcome not yet
-- recorded) or `cancelling`. The gateway's payment key and when the current
-- phase began are kept for the completer, which looks stuck payments up.

ALTER TABLE payments DROP CONSTRAINT payments_method_check;
ALTER TABLE payments ADD CONSTRAINT payments_method_check CHECK (method IN ('wallet', 'gateway'));

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('wait', 'confirming', 'done', 'failed', 'cancelling', 'cancelled'));

ALTER TABLE payments ADD COLUMN gateway_payment_key text
    CHECK (char_length(gateway_payment_key) BETWEEN 1 AND 200);
ALTER TABLE payments ADD COLUMN gateway_started_at_ms bigint;
ALTER TABLE payments ADD CONSTRAINT payments_gateway_attempt_check CHECK (
    (gateway_payment_key IS NULL) = (gateway_started_at_ms IS NULL)
    AND (method = 'gateway' OR gateway_payment_key IS NULL)
    AND (status NOT IN ('confirming', 'cancelling') OR gateway_payment_key IS NOT NULL)
);

-- The completer's scan: in-flight gateway phases, oldest first.
CREATE INDEX payments_in_flight_at_gateway ON payments (gateway_started_at_ms)
    WHERE status IN ('confirming', 'cancelling');
