//! Group commit: many keyed requests per transaction (issue 12, items 4–5).
//!
//! This module owns the *queue*: who runs a batch, who waits, and how each
//! waiting request gets its answer. [`run`] owns running one batch.
//!
//! **Natural batching, leader and followers.** A keyed request whose command
//! batches pushes itself onto its user's bounded queue (one of
//! `Config::batch_shards`: a wallet's requests meet in one queue, other
//! users' batches run beside it). If no batch is running it
//! becomes the *leader*: it takes up to `Config::batch_max` queued requests
//! (whatever arrived while the previous batch ran; no timer ever waits for
//! more), runs them as one batch, answers each, and hands the lead to the
//! oldest request still queued. Every other request is a *follower*: it waits
//! for its answer, or to be made leader. A leader runs one batch and is done,
//! so no request's latency grows with the load behind it (the leader of
//! "until the queue is empty" would serve others forever under steady load).
//!
//! **Overlapping commits** (`Config::batch_overlap`). A leader whose batch
//! has run its statements hands the lead on as it sends `COMMIT`, not when
//! the commit returns, so the next batch runs its statements while the
//! disk flushes the previous one; up to `batch_overlap` batches of a queue
//! wait for their commit at once. The statements of a queue's batches still
//! run one batch at a time, so batches stay as large as without overlap. A
//! user's requests wait for the user's committing batch (they are never in
//! two uncommitted batches at once): a later batch would only wait for that
//! batch's locks, or, without row locks, read its wallet stale, conflict and
//! run again (a hot wallet on the optimistic strategy fell tenfold). Records
//! users share (a product's stock) are the stores' to isolate, as between
//! shards.
//!
//! **Runtime-agnostic.** The core has no async runtime: the queue is a
//! `std::sync::Mutex` never held across an `.await`, and a follower waits on
//! a [`Slot`] with a waker, so tokio, the turmoil simulation and shuttle all
//! drive it.
//!
//! **Cancellation.** A follower whose future is dropped before its batch
//! began is skipped (nothing of it ran); after, its request still runs and
//! its answer is stored under its key, and only the reply is lost. A leader
//! whose future is dropped mid-batch (which `tally-http` prevents by running
//! requests in their own task) answers every other request of its batch 503
//! (`StoreError::Ambiguous`: the commit may or may not have happened; each
//! key was written in that very commit, so a retry replays or runs once)
//! and hands the lead on, so the queue never stalls.

mod run;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::*;

/// The hard upper bound of `Config::batch_max`.
pub const BATCH_MAX_LIMIT: usize = 256;

/// Requests queued at most; beyond it a request runs alone (back-pressure
/// by the locks, as without batching) rather than wait behind a full queue.
const QUEUE_MAX: usize = 4 * BATCH_MAX_LIMIT;

/// How a batch ended for one request.
// One per request, moved once: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Reply {
    /// Its locked phase committed (or, with an error, did not run or did not
    /// commit); the request continues as after `run`'s commit.
    Ran(Result<Step, Error>),
    /// A business refusal, stored under its key in the batch's commit.
    Refused(Error),
    /// It cannot run in a batch (a conflict, a query the overlay does not
    /// merge, a batch that failed as a whole): it runs alone.
    Alone,
}

/// What `execute` does with a batched request.
pub(super) enum Batched {
    /// Answered and its key closed: return this as it is.
    Closed(Result<Executed, Error>),
    /// Continue like `run`'s result (errors close the key as usual).
    Ran(Result<Executed, Error>),
}

/// One queued request, owning what the leader needs to run it.
struct Entry {
    user: UserId,
    command: Command,
    scope: IdemScope,
    lease: LeaseToken,
    fingerprint: Fingerprint,
    render: &'static Render,
    slot: Arc<Slot>,
}

impl Entry {
    fn held(&self) -> Held<'static> {
        Held { scope: self.scope.clone(), lease: self.lease, fingerprint: self.fingerprint, render: self.render }
    }
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Entry>,
    /// A leader is running a batch's statements (or has been chosen and
    /// will). Without one, every waiting request waits for a commit: too
    /// many are in flight, or its user's.
    leading: bool,
    /// Batches whose statements are done and whose commit is in flight.
    committing: usize,
    /// The users of those batches, with how many of their requests each.
    committing_users: BTreeMap<UserId, usize>,
}

impl Queue {
    /// Whether `entry` may run in the next batch: its user has no batch
    /// committing.
    fn ready(&self, entry: &Entry) -> bool {
        !self.committing_users.contains_key(&entry.user)
    }

    /// A batch of `users`' requests sent its commit: the lead is free, and
    /// those users' next requests wait for the commit.
    fn commit_started(&mut self, users: &[UserId]) {
        self.leading = false;
        self.committing += 1;
        for user in users {
            *self.committing_users.entry(*user).or_default() += 1;
        }
    }

    /// That batch's commit returned (or its leader was dropped).
    fn commit_ended(&mut self, users: &[UserId]) {
        assert!(self.committing > 0, "a commit ends only once it started");
        self.committing -= 1;
        for user in users {
            let count = self.committing_users.get_mut(user).expect("counted at the commit's start");
            *count -= 1;
            if *count == 0 {
                self.committing_users.remove(user);
            }
        }
    }
}

/// The hard upper bound of `Config::batch_shards`.
pub const BATCH_SHARDS_LIMIT: usize = 64;

/// The hard upper bound of `Config::batch_overlap`.
pub const BATCH_OVERLAP_LIMIT: usize = 8;

/// The group-commit queues of one `Tally`, one per shard of users
/// (`Config::batch_shards`): a request joins its user's. A hot wallet's
/// requests all meet in one queue and share commits; different users'
/// requests run in up to that many batches at once. Fewer shards make larger
/// batches (fewer statements and commits per request), more shards keep more
/// transactions in flight (one batch runs its statements one after another on
/// one connection: sqlx does not pipeline).
pub(super) struct Batchers {
    shards: Box<[Batcher]>,
    /// Requests that ran in a batch with at least one other: what a proof
    /// of the batcher (the simulation) reports as its coverage.
    shared: std::sync::atomic::AtomicU64,
}

impl Batchers {
    pub(super) fn new(shards: usize, overlap: usize) -> Self {
        assert!((1..=BATCH_SHARDS_LIMIT).contains(&shards), "1 to {BATCH_SHARDS_LIMIT} batch queues");
        assert!(overlap <= BATCH_OVERLAP_LIMIT, "at most {BATCH_OVERLAP_LIMIT} overlapping commits");
        Batchers {
            shards: (0..shards).map(|_| Batcher { queue: Mutex::default(), overlap }).collect(),
            shared: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Batchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batchers").finish_non_exhaustive()
    }
}

impl Batchers {
    /// Requests run so far in a batch of two or more.
    pub(super) fn shared(&self) -> u64 {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `user`'s queue: the same one for all of a user's requests, so a
    /// wallet's requests are batched together.
    fn of(&self, user: UserId) -> &Batcher {
        let shards = self.shards.len() as u128;
        let shard = usize::try_from(user.0 % shards).expect("below the number of shards");
        &self.shards[shard]
    }
}

/// One group-commit queue.
pub(super) struct Batcher {
    queue: Mutex<Queue>,
    /// `Config::batch_overlap`.
    overlap: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these mutexes (no user code runs under
    // them), and every critical section leaves its state consistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a follower receives its reply, or the lead.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    reply: Option<Reply>,
    lead: bool,
    /// The request's future is gone: its reply has nobody to go to, and a
    /// queued entry is skipped.
    abandoned: bool,
    waker: Option<Waker>,
}

// Wakers are woken after every mutex is released: waking may run the woken
// task's executor code (a model checker may switch to it), which must not
// find the queue or the slot locked.
impl Slot {
    fn send(&self, reply: Reply) {
        let waker = {
            let mut state = locked(&self.state);
            if state.abandoned {
                return;
            }
            state.reply = Some(reply);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Makes the slot's owner the leader: `Err` if it is gone, else the
    /// waker to wake once the queue is unlocked.
    fn promote(&self) -> Result<Option<Waker>, ()> {
        let mut state = locked(&self.state);
        if state.abandoned {
            return Err(());
        }
        state.lead = true;
        Ok(state.waker.take())
    }

    fn abandoned(&self) -> bool {
        locked(&self.state).abandoned
    }

    fn take(&self) -> Option<Reply> {
        locked(&self.state).reply.take()
    }
}

#[allow(clippy::large_enum_variant)] // as `Reply`
enum Woken {
    Reply(Reply),
    Lead,
}

/// A follower's wait. Dropping it abandons the slot, and passes on a lead
/// it was given but never took up.
struct Wait<'a> {
    slot: Arc<Slot>,
    batcher: &'a Batcher,
    woken: bool,
}

impl Future for Wait<'_> {
    type Output = Woken;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woken> {
        let this = self.get_mut();
        let mut state = locked(&this.slot.state);
        if let Some(reply) = state.reply.take() {
            this.woken = true;
            return Poll::Ready(Woken::Reply(reply));
        }
        if state.lead {
            state.lead = false;
            this.woken = true;
            return Poll::Ready(Woken::Lead);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.woken {
            return;
        }
        let lead = {
            let mut state = locked(&self.slot.state);
            state.abandoned = true;
            std::mem::take(&mut state.lead)
        };
        if lead {
            self.batcher.hand_off();
        }
    }
}

/// Yields once to the runtime: a new leader lets the requests that are
/// ready right now join the queue before it takes its batch (natural
/// batching without a timer; under shuttle, a scheduling point).
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Passes the lead on when the leader's statements are done (as its commit
/// starts, or at the end if it never commits) and counts its commit out —
/// and if the leader's future is dropped first, abandons its own request
/// and answers the rest of its batch 503 (the commit may or may not have
/// happened).
struct Leading<'a> {
    batcher: &'a Batcher,
    me: Arc<Slot>,
    batch: Vec<Arc<Slot>>,
    /// The users of every request of the batch, this one's too.
    users: Vec<UserId>,
    /// The lead was handed on as the commit started.
    committing: bool,
    done: bool,
}

impl Leading<'_> {
    /// The batch is about to commit: the next batch may run its statements.
    fn commit_started(&mut self) {
        if !self.committing {
            self.committing = true;
            let users = &self.users;
            self.batcher.step(|queue| queue.commit_started(users));
        }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            locked(&self.me.state).abandoned = true;
            for slot in &self.batch {
                slot.send(Reply::Ran(Err(Error::Store(StoreError::Ambiguous))));
            }
        }
        if self.committing {
            let users = &self.users;
            self.batcher.step(|queue| queue.commit_ended(users));
        } else {
            self.batcher.step(|queue| queue.leading = false);
        }
    }
}

impl Batcher {
    /// Queues `entry`: `Some(true)` if it must lead (no batch is running),
    /// `None` if the queue is full (the request runs alone).
    fn push(&self, entry: Entry) -> Option<bool> {
        let mut queue = locked(&self.queue);
        if queue.waiting.len() >= QUEUE_MAX {
            return None;
        }
        let ready = queue.ready(&entry);
        queue.waiting.push_back(entry);
        let lead = ready && self.may_lead(&queue);
        if lead {
            queue.leading = true;
        }
        Some(lead)
    }

    /// Whether a new batch may start now: none is running its statements,
    /// and no more than the overlap are committing.
    fn may_lead(&self, queue: &Queue) -> bool {
        !queue.leading && queue.committing <= self.overlap
    }

    /// The next batch, led by `leader`'s request: it and up to `max - 1`
    /// other live queued requests whose users have no batch committing,
    /// oldest first; the others stay queued, in order.
    fn take(&self, max: usize, leader: &Arc<Slot>) -> Vec<Entry> {
        let mut queue = locked(&self.queue);
        queue.waiting.retain(|entry| !entry.slot.abandoned());
        let mut batch = Vec::new();
        let mut room = max.saturating_sub(1);
        let mut kept = VecDeque::with_capacity(queue.waiting.len());
        while let Some(entry) = queue.waiting.pop_front() {
            if Arc::ptr_eq(&entry.slot, leader) {
                batch.push(entry);
            } else if room > 0 && queue.ready(&entry) {
                room -= 1;
                batch.push(entry);
            } else {
                kept.push_back(entry);
            }
        }
        queue.waiting = kept;
        assert!(batch.iter().any(|entry| Arc::ptr_eq(&entry.slot, leader)), "a leader runs its own request");
        batch
    }

    /// A batch's statements or its commit ended (`change`), or a lead was
    /// never taken up: if a new batch may start now, the oldest live queued
    /// request leads it.
    fn step(&self, change: impl FnOnce(&mut Queue)) {
        let waker = {
            let mut queue = locked(&self.queue);
            change(&mut queue);
            if self.may_lead(&queue) {
                // The oldest live request that may run now; the gone are dropped.
                queue.waiting.retain(|entry| !entry.slot.abandoned());
                let mut promoted = None;
                for entry in queue.waiting.iter().filter(|entry| queue.ready(entry)) {
                    if let Ok(waker) = entry.slot.promote() {
                        promoted = Some(waker);
                        break;
                    }
                }
                queue.leading = promoted.is_some();
                promoted.flatten()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// A lead given to a request that is gone: the next one takes it.
    fn hand_off(&self) {
        self.step(|queue| queue.leading = false);
    }
}

/// Whether `command` may run in a batch. The others always need a query
/// the overlay does not merge (queue tokens, seats of a showtime, a gateway
/// payment key) or insert what it does not buffer (showtimes).
fn batchable(command: &Command) -> bool {
    match command {
        Command::TopUp { .. }
        | Command::CreatePayment { .. }
        | Command::CancelPayment { .. }
        | Command::CreateOrderPayment { .. }
        | Command::CreateProduct { .. }
        | Command::Restock { .. }
        | Command::CancelOrder { .. } => true,
        Command::ConfirmPayment { payment_key, .. } => payment_key.is_none(),
        Command::CreateOrder { seats, token, .. } => seats.is_empty() && token.is_none(),
        Command::CreateEvent { .. } | Command::JoinQueue { .. } | Command::QueueStatus { .. } => false,
    }
}

impl<S: Store, L: LockManager, C: Clock, G: Gateway> Tally<S, L, C, G> {
    /// Whether a keyed `command` goes to a group commit: batching is on and
    /// the command batches.
    pub(super) fn batches(&self, command: &Command) -> bool {
        self.config.batch_max > 1 && batchable(command)
    }

    /// Runs a keyed request in a group commit, if batching is on and the
    /// command batches; `None`: run it alone.
    pub(super) async fn execute_batched(
        &self,
        user: UserId,
        command: &Command,
        held: &Held<'static>,
    ) -> Option<Batched> {
        if !self.batches(command) {
            return None;
        }
        let slot = Arc::new(Slot::default());
        let entry = Entry {
            user,
            command: command.clone(),
            scope: held.scope.clone(),
            lease: held.lease,
            fingerprint: held.fingerprint,
            render: held.render,
            slot: Arc::clone(&slot),
        };
        let batcher = self.batchers.of(user);
        let lead = batcher.push(entry)?;
        let reply = if lead {
            self.lead(batcher, &slot).await
        } else {
            match (Wait { slot: Arc::clone(&slot), batcher, woken: false }).await {
                Woken::Reply(reply) => reply,
                Woken::Lead => self.lead(batcher, &slot).await,
            }
        };
        match reply {
            Reply::Alone => None,
            Reply::Refused(error) => Some(Batched::Closed(Err(error))),
            Reply::Ran(Ok(step)) => Some(Batched::Ran(self.finish(step, Some(held)).await)),
            Reply::Ran(Err(error)) => Some(Batched::Ran(Err(error))),
        }
    }

    /// Leads one batch of `batcher`'s queue, which includes `me`; returns
    /// `me`'s reply.
    async fn lead(&self, batcher: &Batcher, me: &Arc<Slot>) -> Reply {
        let mut leading = Leading {
            batcher,
            me: Arc::clone(me),
            batch: Vec::new(),
            users: Vec::new(),
            committing: false,
            done: false,
        };
        YieldOnce(false).await;
        let batch = batcher.take(self.config.batch_max, me);
        if batch.len() > 1 {
            self.batchers.shared.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        leading.batch = batch.iter().filter(|e| !Arc::ptr_eq(&e.slot, me)).map(|e| Arc::clone(&e.slot)).collect();
        leading.users = batch.iter().map(|e| e.user).collect();
        self.run_batch(&batch, &mut || leading.commit_started()).await;
        leading.done = true;
        drop(leading);
        // `run_batch` answered every request of the batch, this one too.
        me.take().unwrap_or(Reply::Ran(Err(Error::Store(StoreError::Ambiguous))))
    }
}
