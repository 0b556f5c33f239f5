-- Inventory (seeds 002, 003, 004): products with stock, events with
-- showtimes, seats and a waiting queue, and orders that reserve products and
-- seats together. Times are milliseconds since the Unix epoch (UTC); money is
-- bigint minor units.
--
-- As in 0001, the constraints are the last line of defence behind the use
-- cases: stock never negative and never above what was stocked, a seat names
-- the order that holds it exactly when it is not available, never more active
-- tokens than the event's limit, at most one charged payment per order.
-- Forward references inside one transaction (a seat held for an order the
-- same transaction inserts afterwards) are checked at commit (DEFERRABLE).

CREATE TABLE products (
    id            uuid PRIMARY KEY,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    price         bigint NOT NULL CHECK (price > 0),
    -- Available now, and ever put in stock (initial stock plus restocks).
    stock         bigint NOT NULL CHECK (stock >= 0),
    stocked       bigint NOT NULL CHECK (stocked <= 1000000000),
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    version       bigint NOT NULL CHECK (version >= 0),
    CHECK (stocked >= stock)
);

CREATE TABLE events (
    id            uuid PRIMARY KEY,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    active_limit  integer NOT NULL CHECK (active_limit BETWEEN 1 AND 10000),
    token_ttl_ms  bigint NOT NULL CHECK (token_ttl_ms > 0),
    -- The place the next joiner gets, and the first place not yet promoted.
    next_seq      bigint NOT NULL CHECK (next_seq >= 1),
    head_seq      bigint NOT NULL CHECK (head_seq >= 1),
    active_count  integer NOT NULL CHECK (active_count >= 0),
    created_at_ms bigint NOT NULL,
    version       bigint NOT NULL CHECK (version >= 0),
    -- SPEC.md invariant 8, as far as one row can say it.
    CHECK (active_count <= active_limit),
    CHECK (head_seq <= next_seq)
);

CREATE TABLE showtimes (
    id           uuid PRIMARY KEY,
    event_id     uuid NOT NULL REFERENCES events (id),
    starts_at_ms bigint NOT NULL,
    -- The target of seats' (showtime, event) reference.
    UNIQUE (id, event_id)
);
CREATE INDEX showtimes_by_event ON showtimes (event_id, starts_at_ms, id);

CREATE TABLE orders (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id),
    status        text NOT NULL CHECK (status IN ('pending_payment', 'paid', 'cancelled', 'expired')),
    total         bigint NOT NULL CHECK (total > 0),
    -- The payment that paid it, or whose gateway charge is in flight for it.
    payment_id    uuid REFERENCES payments (id),
    -- The event its seats belong to, and the queue token they were booked with.
    event_id      uuid REFERENCES events (id),
    token_id      uuid,
    expires_at_ms bigint NOT NULL,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    version       bigint NOT NULL CHECK (version >= 0),
    CHECK (status <> 'paid' OR payment_id IS NOT NULL),
    CHECK (status <> 'expired' OR payment_id IS NULL),
    CHECK (token_id IS NULL OR event_id IS NOT NULL)
);
-- The expiry sweeper's scan: unpaid orders, oldest deadline first.
CREATE INDEX orders_unpaid_by_expiry ON orders (expires_at_ms, id)
    WHERE status = 'pending_payment' AND payment_id IS NULL;
CREATE INDEX orders_by_user ON orders (user_id);

-- An order's lines and seats never change after it is created; `position`
-- keeps them in the order they were written.
CREATE TABLE order_lines (
    order_id   uuid NOT NULL REFERENCES orders (id),
    position   integer NOT NULL CHECK (position >= 0),
    product_id uuid NOT NULL REFERENCES products (id),
    quantity   bigint NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL CHECK (unit_price > 0),
    PRIMARY KEY (order_id, position),
    UNIQUE (order_id, product_id)
);

CREATE TABLE seats (
    id          uuid PRIMARY KEY,
    showtime_id uuid NOT NULL,
    event_id    uuid NOT NULL,
    -- Byte order, like the core's strings: labels list the same everywhere.
    label       text COLLATE "C" NOT NULL CHECK (char_length(label) BETWEEN 1 AND 200),
    price       bigint NOT NULL CHECK (price > 0),
    status      text NOT NULL CHECK (status IN ('available', 'held', 'sold')),
    -- The order that holds or bought it (SPEC.md invariant 6).
    order_id    uuid REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    version     bigint NOT NULL CHECK (version >= 0),
    FOREIGN KEY (showtime_id, event_id) REFERENCES showtimes (id, event_id),
    UNIQUE (showtime_id, label),
    CHECK ((status = 'available') = (order_id IS NULL))
);

CREATE TABLE order_seats (
    order_id uuid NOT NULL REFERENCES orders (id),
    position integer NOT NULL CHECK (position >= 0),
    seat_id  uuid NOT NULL REFERENCES seats (id),
    price    bigint NOT NULL CHECK (price > 0),
    PRIMARY KEY (order_id, position),
    UNIQUE (order_id, seat_id)
);

CREATE TABLE queue_tokens (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id),
    user_id         uuid NOT NULL REFERENCES users (id),
    seq             bigint NOT NULL CHECK (seq >= 1),
    status          text NOT NULL CHECK (status IN ('waiting', 'active', 'expired', 'used')),
    joined_at_ms    bigint NOT NULL,
    activated_at_ms bigint,
    expires_at_ms   bigint,
    used_at_ms      bigint,
    version         bigint NOT NULL CHECK (version >= 0),
    -- One place in line per token.
    UNIQUE (event_id, seq),
    CHECK ((activated_at_ms IS NULL) = (expires_at_ms IS NULL)),
    CHECK (status <> 'waiting' OR activated_at_ms IS NULL),
    CHECK (status = 'waiting' OR activated_at_ms IS NOT NULL),
    CHECK ((status = 'used') = (used_at_ms IS NOT NULL))
);
-- Refresh loads an event's active and oldest waiting tokens.
CREATE INDEX queue_tokens_by_status ON queue_tokens (event_id, status, seq);
-- Joining looks up the user's newest token for the event.
CREATE INDEX queue_tokens_by_user ON queue_tokens (event_id, user_id, seq);

ALTER TABLE orders ADD CONSTRAINT orders_token_id_fkey FOREIGN KEY (token_id) REFERENCES queue_tokens (id);

ALTER TABLE payments ADD COLUMN order_id uuid REFERENCES orders (id);
-- At most one payment per order is charged or being charged (SPEC.md
-- invariant 7). Checked at commit: a second payment's confirm writes the
-- payment before it reads the order and refuses, and that refusal — not this
-- constraint — is what the client must see.
ALTER TABLE payments ADD CONSTRAINT payments_one_charge_per_order
    EXCLUDE USING btree (order_id WITH =)
    WHERE (order_id IS NOT NULL AND status IN ('confirming', 'done', 'cancelling'))
    DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX payments_by_order ON payments (order_id) WHERE order_id IS NOT NULL;

-- The catalogue's administrator keys its requests (restock) in a scope of its
-- own, user id 0, which is no row of `users`: the foreign key would refuse
-- every keyed admin request. The scope stays unique by the primary key.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_user_id_fkey;

-- When a gateway phase's call was first sent (the give-up deadline counts
-- from it); `gateway_started_at_ms` is moved by every completer claim. Rows
-- from before this column read it as their start.
ALTER TABLE payments ADD COLUMN gateway_sent_at_ms bigint;
