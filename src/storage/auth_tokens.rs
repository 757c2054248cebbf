//! etcd's "simple" tokens: a login's apply assigns `<16 random letters>.<n>` to the user on
//! every member, in memory only (a restart forgets them, as etcd's do; clients log in again
//! on "invalid auth token"). A token expires after `--auth-token-ttl` without use; each use
//! starts the TTL again (etcd's `simpleTokenTTLKeeper`). Removing a user, changing its
//! password or disabling auth drops its tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// etcd's default `--auth-token-ttl`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// One member's tokens, and a lock-free copy of the enabled flag: the request path of every
/// KV call asks whether auth is on, and must not wait on the store's state lock for it.
#[derive(Debug)]
pub struct Tokens {
    inner: Mutex<Inner>,
    enabled: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    /// How long a token lives without use.
    ttl: Duration,
    /// token -> (user, expiry).
    tokens: HashMap<String, (String, Instant)>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            inner: Mutex::new(Inner {
                ttl: DEFAULT_TOKEN_TTL,
                tokens: HashMap::new(),
            }),
            enabled: AtomicBool::new(false),
        }
    }
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The table holds no invariant a panic could break half-way.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mirrors the auth store's enabled flag (set at open, apply and snapshot install).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
    }

    /// Whether auth is enabled, as last applied.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Sets `--auth-token-ttl`.
    pub fn set_ttl(&self, ttl: Duration) {
        self.lock().ttl = ttl;
    }

    /// Gives `token` to `user`; expired tokens are dropped meanwhile, so the table holds
    /// only live ones.
    pub fn assign(&self, token: &str, user: &str) {
        let mut g = self.lock();
        let now = Instant::now();
        g.tokens.retain(|_, (_, exp)| *exp > now);
        let exp = now + g.ttl;
        g.tokens.insert(token.to_string(), (user.to_string(), exp));
    }

    /// The user holding a live token, whose TTL starts again; `None` for an unknown or
    /// expired token.
    pub fn user(&self, token: &str) -> Option<String> {
        let mut g = self.lock();
        let now = Instant::now();
        let ttl = g.ttl;
        match g.tokens.get_mut(token) {
            Some((user, exp)) if *exp > now => {
                *exp = now + ttl;
                Some(user.clone())
            }
            Some(_) => {
                g.tokens.remove(token);
                None
            }
            None => None,
        }
    }

    /// Drops every token of `user`.
    pub fn invalidate_user(&self, user: &str) {
        self.lock().tokens.retain(|_, (u, _)| u != user);
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        self.lock().tokens.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_are_dropped_with_their_user() {
        let t = Tokens::default();
        t.assign("a.1", "u");
        t.assign("b.1", "v");
        assert_eq!(t.user("a.1").as_deref(), Some("u"));
        t.invalidate_user("u");
        assert_eq!(t.user("a.1"), None);
        assert_eq!(t.user("b.1").as_deref(), Some("v"));
        t.set_ttl(Duration::ZERO);
        t.assign("c.1", "v");
        assert_eq!(t.user("c.1"), None);
        t.clear();
        assert_eq!(t.user("b.1"), None);
    }
}
