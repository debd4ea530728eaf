//! A [`Membership`] on Redis: who is in a room on any node, and cluster-wide presence.
//!
//! # Layout
//!
//! | key | type | what |
//! |---|---|---|
//! | `{prefix}:members:{room}` | hash | session (32 hex digits) → `{online}\|{node}\|{user}` (`online` is `1` or `0`) |
//! | `{prefix}:presence:{room}` | hash | user → `{sessions}:{online sessions}` in the room |
//! | `{prefix}:member-expiry` | sorted set | `{session}{room}` scored by its expiry (ms since the Unix epoch) |
//!
//! # The rules, atomically
//!
//! One Lua script per batch of updates applies [`MemberTable`](ws_driver::MemberTable)'s rules (the same
//! conformance cases run on both, `tests/tests/redis_membership.rs`): it first removes
//! the entries whose expiry passed (at most 1000 per call; every node calls at least
//! once per refresh interval), then for each update writes the entry (online or away,
//! from any node: a session that moved is its new node's) or removes it (gone: only
//! when the node reporting it is the one that wrote it), keeps the user's counts, and
//! returns every change with the session's and the user's counts before and after. The
//! node that sent the batch announces what they change in presence, to every node.
//!
//! Entries live [`RedisMembership::DEFAULT_TTL`] (30 s) unless reported again; each
//! node reports all of its members every third of that. A node killed without a
//! handover leaves entries that expire within the time to live (plus a refresh
//! interval), then count as gone — unless their sessions resumed on another node
//! first, which writes them as that node's.
//!
//! # Outages
//!
//! Every call is bounded by [`RedisConfig::command_timeout`] (and the app's store
//! timeout). A report that fails is logged and not retried: the node's next full
//! report (within a refresh interval of Redis being back) writes its members again;
//! entries it meant to remove expire. A member list that cannot be read is an error
//! to the caller (`ServerHandle::room_presence`), never an empty list.

use std::sync::Arc;
use std::time::Duration;

use ws_driver::adapter::{BoxFuture, Runtime};
use ws_driver::{Count, MemberChange, MemberState, MemberUpdate, Membership, MembershipError, RoomMember};
use ws_session::{SessionId, UserId};

use crate::commands::Commands;
use crate::RedisConfig;

/// Removes expired entries, then applies the updates. ARGV: prefix, node, now (ms),
/// time to live (ms), then per update: room, session, user, state (`o` online, `a`
/// away, `g` gone). Returns per change: room, session, user, then the session's
/// members and online before, after, and the user's before, after (11 values).
const UPDATE: &str = r"
local prefix, node, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local expiry = prefix .. ':member-expiry'
local out = {}
local function parse(entry)
  local rest = string.sub(entry, 3)
  local bar = string.find(rest, '|', 1, true)
  return string.sub(entry, 1, 1) == '1', string.sub(rest, 1, bar - 1), string.sub(rest, bar + 1)
end
local function count(room, session, user, bm, bo, am, ao)
  if bm == am and bo == ao then return end
  local key = prefix .. ':presence:' .. room
  local cur = redis.call('HGET', key, user)
  local um, uo = 0, 0
  if cur then
    local colon = string.find(cur, ':', 1, true)
    um, uo = tonumber(string.sub(cur, 1, colon - 1)), tonumber(string.sub(cur, colon + 1))
  end
  local nm, no = math.max(um - bm, 0) + am, math.max(uo - bo, 0) + ao
  if nm == 0 then redis.call('HDEL', key, user) else redis.call('HSET', key, user, nm .. ':' .. no) end
  for _, v in ipairs({room, session, user, bm, bo, am, ao, um, uo, nm, no}) do table.insert(out, tostring(v)) end
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', expiry, member)
  local session, room = string.sub(member, 1, 32), string.sub(member, 33)
  local key = prefix .. ':members:' .. room
  local entry = redis.call('HGET', key, session)
  if entry then
    redis.call('HDEL', key, session)
    local online, _, user = parse(entry)
    count(room, session, user, 1, online and 1 or 0, 0, 0)
  end
end
for i = 5, #ARGV, 4 do
  local room, session, user, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = prefix .. ':members:' .. room
  local entry = redis.call('HGET', key, session)
  local bm, bo, olduser, oldnode = 0, 0, nil, nil
  if entry then
    local online
    online, oldnode, olduser = parse(entry)
    bm, bo = 1, online and 1 or 0
  end
  if not (state == 'g' and entry and oldnode ~= node) then
    local am, ao = 0, 0
    if state == 'o' then am, ao = 1, 1 elseif state == 'a' then am = 1 end
    if state == 'g' then
      redis.call('HDEL', key, session)
      redis.call('ZREM', expiry, session .. room)
    else
      redis.call('HSET', key, session, ao .. '|' .. node .. '|' .. user)
      redis.call('ZADD', expiry, now + ttl, session .. room)
    end
    if olduser and olduser ~= user then
      count(room, session, olduser, bm, bo, 0, 0)
      count(room, session, user, 0, 0, am, ao)
    else
      count(room, session, user, bm, bo, am, ao)
    end
  end
end
return out
";

/// The members of a room whose entries have not expired. ARGV: prefix, room, now (ms).
/// Returns session, online (`1`/`0`), user for each.
const MEMBERS: &str = r"
local prefix, room, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local expiry = prefix .. ':member-expiry'
local entries = redis.call('HGETALL', prefix .. ':members:' .. room)
local out = {}
for i = 1, #entries, 2 do
  local session, entry = entries[i], entries[i + 1]
  local expires = tonumber(redis.call('ZSCORE', expiry, session .. room))
  if expires and expires > now then
    local rest = string.sub(entry, 3)
    local bar = string.find(rest, '|', 1, true)
    table.insert(out, session)
    table.insert(out, string.sub(entry, 1, 1))
    table.insert(out, string.sub(rest, bar + 1))
  end
end
return out
";

/// Room membership on Redis (see the [module documentation](self)). Cheap to clone;
/// give a clone to every [`App`](ws_driver::App) of the process with
/// [`App::membership`](ws_driver::App::membership).
#[derive(Clone)]
pub struct RedisMembership {
    shared: Arc<Shared>,
}

struct Shared {
    commands: Commands,
    ttl: Duration,
    update: redis::Script,
    members: redis::Script,
}

impl Shared {
    /// Runs a script invocation; its answer as strings (the scripts return only those).
    async fn run(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<Vec<String>, MembershipError> {
        let mut connection = self.commands.connection().await.map_err(MembershipError)?;
        self.commands
            .timed(invocation.invoke_async(&mut connection))
            .await
            .map_err(MembershipError)
    }
}

impl RedisMembership {
    /// How long an entry lives unless its node reports it again: 30 s.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// Room membership in the Redis of `config`, under its prefix, entries living
    /// [`DEFAULT_TTL`](Self::DEFAULT_TTL). Connects when first used.
    pub fn start<R: Runtime>(config: RedisConfig, runtime: R) -> Self {
        Self::with_ttl(config, Self::DEFAULT_TTL, runtime)
    }

    /// The same with entries living `ttl` (nodes report every third of it): how long
    /// the members of a node that died without a handover stay listed.
    pub fn with_ttl<R: Runtime>(config: RedisConfig, ttl: Duration, runtime: R) -> Self {
        Self {
            shared: Arc::new(Shared {
                commands: Commands::new(config, runtime),
                ttl,
                update: redis::Script::new(UPDATE),
                members: redis::Script::new(MEMBERS),
            }),
        }
    }
}

impl Membership for RedisMembership {
    fn update(
        &self,
        node: u64,
        now_ms: u64,
        updates: Vec<MemberUpdate>,
    ) -> BoxFuture<Result<Vec<MemberChange>, MembershipError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut invocation = shared.update.prepare_invoke();
            invocation
                .arg(&shared.commands.config.prefix)
                .arg(node.to_string())
                .arg(now_ms)
                .arg(u64::try_from(shared.ttl.as_millis()).unwrap_or(u64::MAX));
            for update in &updates {
                let state = match update.state {
                    MemberState::Online => "o",
                    MemberState::Away => "a",
                    _ => "g",
                };
                invocation
                    .arg(&*update.room)
                    .arg(update.session.to_string())
                    .arg(update.user.as_str())
                    .arg(state);
            }
            shared.run(&invocation).await?.chunks(11).map(change).collect()
        })
    }

    fn members(&self, room: &str, now_ms: u64) -> BoxFuture<Result<Vec<RoomMember>, MembershipError>> {
        let (shared, room) = (self.shared.clone(), room.to_owned());
        Box::pin(async move {
            let mut invocation = shared.members.prepare_invoke();
            invocation
                .arg(&shared.commands.config.prefix)
                .arg(&room)
                .arg(now_ms);
            shared
                .run(&invocation)
                .await?
                .chunks(3)
                .map(|m| match m {
                    [session, online, user] => Ok(RoomMember {
                        session: session_id(session)?,
                        user: UserId::new(user.as_str()),
                        online: online == "1",
                    }),
                    _ => Err(MembershipError("a member list cut short".into())),
                })
                .collect()
        })
    }

    fn refresh_interval(&self) -> Duration {
        self.shared.ttl / 3
    }
}

/// One change as the script returns it.
fn change(values: &[String]) -> Result<MemberChange, MembershipError> {
    let text = |i: usize| -> Result<&str, MembershipError> {
        values
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| MembershipError("a change cut short by the membership script".into()))
    };
    let number = |i: usize| -> Result<usize, MembershipError> {
        text(i)?
            .parse()
            .map_err(|_| MembershipError("an unreadable count from the membership script".into()))
    };
    let count = |i: usize| -> Result<Count, MembershipError> {
        Ok(Count {
            members: number(i)?,
            online: number(i + 1)?,
        })
    };
    Ok(MemberChange {
        room: Arc::from(text(0)?),
        session: session_id(text(1)?)?,
        user: UserId::new(text(2)?),
        session_before: count(3)?,
        session_after: count(5)?,
        user_before: count(7)?,
        user_after: count(9)?,
    })
}

fn session_id(text: &str) -> Result<SessionId, MembershipError> {
    SessionId::parse(text).ok_or_else(|| MembershipError(format!("not a session id: {text:?}")))
}
