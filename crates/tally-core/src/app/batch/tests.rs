//! The queue's own rules, step by step, without a store: who leads, who
//! waits for a commit, and what the next batch takes. (Shuttle explores the
//! same queue with real requests; these pin each rule to one schedule.)

use super::*;
use crate::idempotency::IdemKey;

fn render(_: &Result<Outcome, Error>) -> Option<StoredResponse> {
    None
}

static RENDER: &Render = &render;

/// A queued top-up of `user`'s.
fn entry(user: u128, key: &str) -> (Entry, Arc<Slot>) {
    let slot = Arc::new(Slot::default());
    let entry = Entry {
        user: UserId(user),
        command: Command::TopUp { amount: crate::money::Amount::new(1).expect("a valid amount") },
        scope: IdemScope { user: UserId(user), key: IdemKey::new(key).expect("a valid key") },
        lease: LeaseToken(1),
        fingerprint: Fingerprint([0; 32]),
        render: RENDER,
        slot: Arc::clone(&slot),
    };
    (entry, slot)
}

fn leads(slot: &Slot) -> bool {
    locked(&slot.state).lead
}

fn users(batch: &[Entry]) -> Vec<u128> {
    batch.iter().map(|entry| entry.user.0).collect()
}

/// A leader that has taken `batch`, as `Tally::lead` makes one.
fn leading<'a>(batcher: &'a Batcher, me: &Arc<Slot>, batch: &[Entry]) -> Leading<'a> {
    Leading {
        batcher,
        me: Arc::clone(me),
        batch: Vec::new(),
        users: batch.iter().map(|entry| entry.user).collect(),
        committing: false,
        done: true,
    }
}

/// With an overlap of 1, the next batch starts as the previous one's commit
/// starts, without that batch's users; a second committing batch holds
/// the queue until one of the two commits returns; a user's request waits
/// for its user's commit, and then leads.
#[test]
fn a_batch_starts_during_a_commit_without_the_committing_users() {
    let batcher = Batcher { queue: Mutex::default(), overlap: 1 };
    let (a1, a1_slot) = entry(1, "a1");
    assert_eq!(batcher.push(a1), Some(true), "an idle queue: the first request leads");
    let first = batcher.take(8, &a1_slot);
    assert_eq!(users(&first), [1]);
    let (a2, a2_slot) = entry(1, "a2");
    let (b1, b1_slot) = entry(2, "b1");
    assert_eq!(batcher.push(a2), Some(false), "a batch is running its statements");
    assert_eq!(batcher.push(b1), Some(false));

    let mut first_leader = leading(&batcher, &a1_slot, &first);
    first_leader.commit_started();
    assert!(!leads(&a2_slot), "user 1 has a batch committing");
    assert!(leads(&b1_slot), "user 2's request leads the next batch during the commit");
    let second = batcher.take(8, &b1_slot);
    assert_eq!(users(&second), [2], "user 1's request stays queued");

    let mut second_leader = leading(&batcher, &b1_slot, &second);
    second_leader.commit_started();
    let (c1, c1_slot) = entry(3, "c1");
    assert_eq!(batcher.push(c1), Some(false), "two commits in flight: above the overlap");
    assert!(!leads(&c1_slot));

    drop(first_leader);
    assert!(leads(&a2_slot), "user 1's commit returned: its request leads, oldest first");
    assert_eq!(users(&batcher.take(8, &a2_slot)), [1, 3]);
    drop(second_leader);
}

/// With no overlap the next batch starts only once the commit returned, as
/// before overlapping existed.
#[test]
fn without_overlap_the_next_batch_waits_for_the_commit() {
    let batcher = Batcher { queue: Mutex::default(), overlap: 0 };
    let (a1, a1_slot) = entry(1, "a1");
    assert_eq!(batcher.push(a1), Some(true));
    let first = batcher.take(8, &a1_slot);
    let (b1, b1_slot) = entry(2, "b1");
    assert_eq!(batcher.push(b1), Some(false));
    let mut leader = leading(&batcher, &a1_slot, &first);
    leader.commit_started();
    assert!(!leads(&b1_slot), "the commit is in flight");
    let (c1, _) = entry(3, "c1");
    assert_eq!(batcher.push(c1), Some(false), "nobody leads while the commit is in flight");
    drop(leader);
    assert!(leads(&b1_slot), "the commit returned: the oldest queued request leads");
    assert_eq!(users(&batcher.take(8, &b1_slot)), [2, 3]);
}

/// A leader takes its own request even when older ready requests fill the
/// batch; the rest stay queued in order.
#[test]
fn a_leader_always_runs_its_own_request() {
    let batcher = Batcher { queue: Mutex::default(), overlap: 1 };
    let slots: Vec<Arc<Slot>> = (1..=4)
        .map(|user| {
            let (queued, slot) = entry(user, "k");
            batcher.push(queued);
            slot
        })
        .collect();
    let batch = batcher.take(2, &slots[3]);
    assert_eq!(users(&batch), [1, 4], "the oldest other request, and the leader's own");
    assert_eq!(users(&batcher.take(8, &slots[1])), [2, 3]);
}
