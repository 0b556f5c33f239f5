-- Fencing tokens (issue 15): for each lock key granted by a lock manager
-- with leases (the redis strategy), the largest token a transaction has
-- claimed. A transaction claims its grant's tokens as it begins and is
-- refused if a later grant already claimed a larger one; the claimed row
-- stays locked until it ends, so the next holder's claim waits for it.
CREATE TABLE lock_fences (
    key text PRIMARY KEY,
    token bigint NOT NULL CHECK (token >= 0)
);
