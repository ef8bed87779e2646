// resync() and delivered marks (SPEC §4: a stale change never overwrites a newer one).
#pragma once

namespace switchboard {

// Held by resync() until its transaction ends: a row it queued may yet be changed by a
// transaction that commits (and is delivered) before resync's own commit, with a higher id.
void HoldResyncLock();

// Whether a resync() is running in this database. The worker then marks every delivered key,
// so that the older image resync queued is not sent after it.
bool ResyncRunning();

} // namespace switchboard
