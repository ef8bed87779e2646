// switchboard.* settings (GUCs), defined in switchboard.cpp and documented in the README.
#pragma once

namespace switchboard {
extern bool setting_enabled;
extern int setting_naptime_ms;
extern int setting_http_timeout_ms;
extern int setting_route_sql_timeout_ms;
extern int setting_max_attempts;
extern int setting_history_retention_s;
extern int setting_dead_letter_retention_s; // 0: keep dead letters until retried or discarded
extern int setting_inbound_retention_s;     // applied inbound events are kept this long
extern char *setting_allowed_hosts;
extern char *setting_rate_limit_groups; // rate_limit_group names endpoints may use (superuser-set)
// The inbound webhook receiver (SPEC §9).
extern char *setting_listen_addresses;   // "host[:port][,host[:port]]"; empty: no receiver
extern int setting_listen_port;          // for entries without a port
extern char *setting_listen_certificate; // PEM files: HTTPS when both are set
extern char *setting_listen_key;
extern char *setting_inbound_database; // the one database whose routes receive
extern int setting_inbound_max_connections;
extern int setting_inbound_timeout_s;
extern int setting_inbound_max_bytes;
extern int setting_max_workers; // per-database workers of the whole cluster (the launcher not counted)

// pg_dump restores run with check_function_bodies off: like function bodies, switchboard's
// configuration is then not re-checked, and capture triggers come from the dump itself.
bool RestoringFromDump();
} // namespace switchboard
