-- The Idempotency-Key of the request that began a gateway payment's current
-- phase (its confirm, or its cancel). A request answered 503 while the
-- gateway's answer was unclear may find the phase settled by the completer
-- when it is retried: under this key, its retry is answered with the settled
-- payment instead of being refused as a second confirm or cancel.
ALTER TABLE payments ADD COLUMN gateway_requested_by text
    CHECK (char_length(gateway_requested_by) BETWEEN 1 AND 255),
    ADD CHECK (gateway_payment_key IS NOT NULL OR gateway_requested_by IS NULL);
