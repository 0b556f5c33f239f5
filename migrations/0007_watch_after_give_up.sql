-- A gateway confirm given up on (the gateway still did not know it past the
-- give-up deadline) fails its payment, but the gateway may carry it out
-- later: a confirm held in its queue, a clock that stepped. Until this
-- instant the completer keeps looking the payment's key up, and a charge of
-- ours that landed is refunded (failed -> refunding -> failed).
ALTER TABLE payments ADD COLUMN gateway_watch_until_ms bigint,
    ADD CHECK (gateway_watch_until_ms IS NULL OR (status = 'failed' AND gateway_payment_key IS NOT NULL));

-- The completer's scan: in-flight gateway phases and watched payments,
-- oldest claim first.
DROP INDEX payments_in_flight_at_gateway;
CREATE INDEX payments_awaiting_gateway ON payments (gateway_started_at_ms)
    WHERE status IN ('confirming', 'cancelling', 'refunding') OR gateway_watch_until_ms IS NOT NULL;
