#pragma once

namespace switchboard {
// From _PG_init under shared_preload_libraries: the launcher worker and the utility hook
// that keeps workers out of the way of DROP/RENAME DATABASE.
void RegisterLauncher();
} // namespace switchboard
