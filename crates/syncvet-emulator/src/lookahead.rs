//! The next page of a listing, rendered while the current one is on the
//! wire. A client reads a batch page by page, each request waiting for the
//! token of the page before, so rendering a page only when it is asked for
//! puts the whole rendering time on that chain (on two shared cores, most
//! of an ETL run's wall time). A server with a cursor prepares the next
//! page ahead; so does this one. Nothing a client sees changes but when
//! the page is ready: the page is the one it would render on request, and
//! its token is still issued when it is served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::page::RenderedPage;
use crate::state::Settings;

/// Pages rendered ahead at most (the oldest goes when one more starts): a
/// client that stops reading leaves one behind.
const PAGES_AHEAD_MAX: usize = 64;

/// Which page: the listing (its token scope), its first record, its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PageKey {
    pub scope: u64,
    pub offset: u64,
    pub size: u64,
}

struct Ahead {
    /// The switches it was rendered with: a page rendered before an admin
    /// patch is not served after it.
    settings: Arc<Settings>,
    page: JoinHandle<RenderedPage>,
}

#[derive(Default)]
pub(crate) struct Lookahead {
    pending: Mutex<HashMap<PageKey, Ahead>>,
}

impl Lookahead {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<PageKey, Ahead>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The page rendered ahead for `key` with `settings`, if there is one.
    pub(crate) async fn take(
        &self,
        key: PageKey,
        settings: &Arc<Settings>,
    ) -> Option<RenderedPage> {
        let ahead = self.pending().remove(&key)?;
        if !Arc::ptr_eq(&ahead.settings, settings) {
            ahead.page.abort();
            return None;
        }
        ahead.page.await.ok()
    }

    /// Starts rendering the page `key` on the blocking pool.
    pub(crate) fn start(
        &self,
        key: PageKey,
        settings: Arc<Settings>,
        render: impl FnOnce() -> RenderedPage + Send + 'static,
    ) {
        let mut pending = self.pending();
        if pending.len() >= PAGES_AHEAD_MAX
            && let Some(oldest) = pending.keys().next().copied()
            && let Some(dropped) = pending.remove(&oldest)
        {
            dropped.page.abort();
        }
        let page = tokio::task::spawn_blocking(render);
        if let Some(replaced) = pending.insert(key, Ahead { settings, page }) {
            replaced.page.abort();
        }
    }

    /// Pages rendered ahead and not yet served.
    pub(crate) fn len(&self) -> usize {
        self.pending().len()
    }
}

impl std::fmt::Debug for Lookahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookahead")
            .field("pages", &self.len())
            .finish()
    }
}
