-- Tally's first schema: users, wallets, payments, the double-entry ledger and
-- idempotency records. Times are milliseconds since the Unix epoch (UTC), the
-- core's `Timestamp`; money is bigint minor units.
--
-- The constraints are the last line of defence: the use cases never rely on
-- them, but a bug that gets past the use cases stops here.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- sha256 of the API key; the key itself is never stored.
    key_hash      bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at_ms bigint NOT NULL
);

CREATE TABLE wallets (
    user_id           uuid PRIMARY KEY REFERENCES users (id),
    balance           bigint NOT NULL CHECK (balance >= 0),
    max_balance       bigint CHECK (max_balance >= 0),
    per_payment_limit bigint CHECK (per_payment_limit >= 0),
    daily_limit       bigint CHECK (daily_limit >= 0),
    monthly_limit     bigint CHECK (monthly_limit >= 0),
    -- The spending windows: UTC day and month indices and what was paid in them.
    day               bigint NOT NULL,
    spent_day         bigint NOT NULL CHECK (spent_day >= 0),
    month             bigint NOT NULL,
    spent_month       bigint NOT NULL CHECK (spent_month >= 0),
    entry_count       bigint NOT NULL CHECK (entry_count >= 0),
    version           bigint NOT NULL CHECK (version >= 0),
    CHECK (max_balance IS NULL OR balance <= max_balance),
    CHECK (daily_limit IS NULL OR spent_day <= daily_limit),
    CHECK (monthly_limit IS NULL OR spent_month <= monthly_limit)
);

CREATE TABLE payments (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id),
    amount        bigint NOT NULL CHECK (amount > 0),
    payback       bigint NOT NULL CHECK (payback >= 0 AND payback <= amount),
    method        text NOT NULL CHECK (method IN ('wallet')),
    status        text NOT NULL CHECK (status IN ('wait', 'done', 'failed', 'cancelled')),
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    version       bigint NOT NULL CHECK (version >= 0)
);
CREATE INDEX payments_by_user ON payments (user_id);

-- Append-only: nothing updates or deletes a transfer.
CREATE TABLE transfers (
    id                   uuid PRIMARY KEY,
    kind                 text NOT NULL CHECK (kind IN ('top_up', 'payment', 'refund', 'payback', 'payback_reversal')),
    -- 'world', 'revenue', 'cashback_pool' or 'wallet' (the wallet is wallet_user_id).
    debit                text NOT NULL CHECK (debit IN ('world', 'revenue', 'cashback_pool', 'wallet')),
    credit               text NOT NULL CHECK (credit IN ('world', 'revenue', 'cashback_pool', 'wallet')),
    amount               bigint NOT NULL CHECK (amount > 0),
    payment_id           uuid REFERENCES payments (id),
    wallet_user_id       uuid REFERENCES wallets (user_id),
    wallet_balance_after bigint CHECK (wallet_balance_after >= 0),
    wallet_seq           bigint CHECK (wallet_seq >= 1),
    op_id                uuid NOT NULL,
    origin_user_id       uuid,
    origin_key           text,
    origin_expires_at_ms bigint,
    at_ms                bigint NOT NULL,
    CHECK (debit <> credit),
    CHECK ((wallet_user_id IS NULL) = (debit <> 'wallet' AND credit <> 'wallet')),
    CHECK ((wallet_user_id IS NULL) = (wallet_balance_after IS NULL) AND (wallet_user_id IS NULL) = (wallet_seq IS NULL)),
    CHECK ((origin_user_id IS NULL) = (origin_key IS NULL) AND (origin_key IS NULL) = (origin_expires_at_ms IS NULL))
);
-- A wallet's ledger is a gapless sequence, paged by position.
CREATE UNIQUE INDEX transfers_wallet_position ON transfers (wallet_user_id, wallet_seq) WHERE wallet_user_id IS NOT NULL;
-- One charge, one refund, one payback and one reversal per payment, at most:
-- a second charge of a payment cannot be written.
CREATE UNIQUE INDEX transfers_one_of_each_kind_per_payment ON transfers (payment_id, kind) WHERE payment_id IS NOT NULL;

CREATE TABLE idempotency_keys (
    user_id                uuid NOT NULL REFERENCES users (id),
    key                    text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint            bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    state                  text NOT NULL CHECK (state IN ('in_flight', 'completed')),
    lease                  uuid,
    lease_expires_at_ms    bigint,
    response_status        integer CHECK (response_status BETWEEN 100 AND 599),
    response_content_type  text,
    response_body          bytea,
    op_id                  uuid,
    created_at_ms          bigint NOT NULL,
    expires_at_ms          bigint NOT NULL,
    version                bigint NOT NULL CHECK (version >= 0),
    PRIMARY KEY (user_id, key),
    CHECK (
        (state = 'in_flight' AND lease IS NOT NULL AND lease_expires_at_ms IS NOT NULL AND response_status IS NULL)
        OR (state = 'completed' AND lease IS NULL AND response_status IS NOT NULL
            AND response_content_type IS NOT NULL AND response_body IS NOT NULL)
    )
);
-- The reaper deletes expired keys in batches, oldest first.
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at_ms);
