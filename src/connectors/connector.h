// Connector contract: how a batch of translated changes becomes HTTP calls for one
// kind of remote system, and how the answers become per-change outcomes.
//
// Plain C++ (no postgres.h): the worker, preview() and the unit tests share it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace switchboard {

using Json = nlohmann::json;
using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
	std::string method;
	std::string url;
	Headers headers;
	std::string body;
};

struct HttpResponse {
	long status = 0;             // 0: no HTTP answer (connect error, timeout, dropped)
	std::string transport_error; // libcurl's text when status == 0
	Headers headers;             // names lower-cased
	std::string body;
	double elapsed_ms = 0;
};

// One row of switchboard.endpoints, with its secret resolved.
struct Endpoint {
	std::string name;
	std::string kind; // hubspot | salesforce | webhook | openai
	std::string base_url;
	std::string secret; // empty when none
	Json options = Json::object();
};

// The parts of switchboard.routes a connector needs.
struct Route {
	std::string name;
	std::string remote_object;
	std::string match_remote;
	std::string on_delete = "ignore"; // ignore | delete
};

enum class Op { Insert, Update, Delete };
const char *OpName(Op op); // "insert" | "update" | "delete"

// A captured change after translation by the route's mappings.
struct Change {
	int64_t id = 0;          // queue id
	Op op = Op::Update;
	std::string key;         // value of match_local
	Json fields = Json::object(); // remote_field -> typed JSON value; SQL NULL is null
	std::string remote_id;   // remote record id when known (needed for deletes)
	std::string event_id;    // stable across retries: idempotency key / webhook id
	int64_t occurred_at_ms = 0; // commit-side capture time, unix ms
};

// Credentials a call is signed with. Salesforce needs a token fetched first.
struct Auth {
	std::string bearer;       // hubspot/openai: the secret; salesforce: access_token
	std::string instance_url; // salesforce only
	bool masked = false;      // preview: never put a secret or a signature in the output
	int64_t signed_at_ms = 0; // webhook-timestamp (send time); 0: the change's occurred_at_ms
};

// One HTTP request covering some of the input changes.
struct Call {
	HttpRequest request;
	std::vector<size_t> changes; // indexes into the input vector, in request order
};

enum class Outcome { Delivered, Retry, Dead, Skipped };

struct ChangeResult {
	Outcome outcome = Outcome::Retry;
	std::string remote_id;     // on Delivered, when the remote returned one
	std::string error;         // remote's message on Retry / Dead
	long retry_after_ms = -1;  // honour Retry-After when >= 0
};

struct CallResult {
	std::vector<ChangeResult> results; // parallel to Call::changes
	long http_status = 0;
	bool endpoint_failure = false; // transport error, 5xx, 429: counts toward the circuit breaker
	bool refresh_auth = false;     // salesforce INVALID_SESSION_ID: fetch a new token once, resend
	bool disable_route = false;    // webhook 410 Gone
	bool stop_endpoint = false;    // daily quota / insufficient_quota: do not hammer
	long retry_after_ms = -1;
	std::string error;             // call-level error text (also copied into results)
};

class Connector {
public:
	virtual ~Connector() = default;
	// Largest batch the remote accepts in one call (options.batch_size may lower it).
	virtual size_t MaxBatch(const Endpoint &endpoint) const = 0;
	// Changes are given in queue order; per key at most one change is present.
	// Deletes for routes with on_delete = ignore, or without a known remote id where one
	// is needed, are not sent: they get no call and are reported by SkippedChanges.
	virtual std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &route,
	                                     const std::vector<Change> &changes, const Auth &auth) const = 0;
	virtual CallResult ParseResult(const Call &call, const std::vector<Change> &changes,
	                               const HttpResponse &response) const = 0;
};

// Throws std::invalid_argument for an unknown kind.
std::unique_ptr<Connector> MakeConnector(const std::string &kind);

// Known endpoint kinds and option names, for validation at write time.
bool IsKnownKind(const std::string &kind);
// Throws std::invalid_argument naming the bad option and why.
void ValidateOptions(const std::string &kind, const Json &options);

// Salesforce OAuth 2.0 client-credentials flow.
struct SalesforceToken {
	std::string access_token;
	std::string instance_url;
};
HttpRequest BuildSalesforceTokenRequest(const Endpoint &endpoint); // secret is JSON {client_id, client_secret}
// Throws std::runtime_error with the remote's message (masked), or when the instance_url it
// names is not acceptable: it must pass allowed_hosts (config/host_policy.h, "" = any host
// but link-local/metadata) and be https unless it is loopback.
SalesforceToken ParseSalesforceToken(const HttpResponse &response, const std::string &allowed_hosts = std::string());

// ---- Additions (connector implementation) ----------------------------------------------

// Indexes of the input changes that no call covers (deletes that are not sent): the worker
// marks them Skipped.
std::vector<size_t> SkippedChanges(const std::vector<Change> &changes, const std::vector<Call> &calls);

// Largest batch one call of this kind may carry (hubspot 100, salesforce 200, others 1);
// throws std::invalid_argument for an unknown kind.
size_t BulkLimit(const std::string &kind);

// "100/10s" -> count 100, window 10000 ms. Units: ms, s, m, h; "5/s" means "5/1s".
// Returns false (outputs untouched) when the text is not of that form.
bool ParseRateLimit(const std::string &text, int *count, long *window_ms);

// Retry-After of a response, in ms from now (delivery/retry_policy.h parses it); -1 if none.
long RetryAfterMs(const HttpResponse &response);

// ASCII lower case, and "only decimal digits (and at least one)": shared by the connectors.
std::string Lower(std::string text);
bool IsDigits(const std::string &text);

// Case-insensitive header lookup; empty when absent.
std::string HeaderValue(const Headers &headers, const std::string &name);

// Percent-encodes everything but RFC 3986 unreserved characters (path segments, form values).
std::string UrlEncode(const std::string &text);
// base_url without trailing slashes, then path (which starts with '/').
std::string JoinUrl(const std::string &base_url, const std::string &path);

// At most max_bytes of text for an error message: credentials and URL paths masked
// (http/redact.h), control characters flattened, never cut inside a UTF-8 sequence, "..."
// appended when shortened.
std::string Snippet(const std::string &text, size_t max_bytes = 200);

// A CallResult whose every change gets the same outcome and error.
CallResult UniformResult(const Call &call, Outcome outcome, const std::string &error, long retry_after_ms = -1);

// MaxBatch for a kind whose bulk limit is limit: options.batch_size may lower it, never raise it.
size_t BatchSizeOption(const Endpoint &endpoint, size_t limit);

// Appends options.headers (already validated) to a request's headers.
void AppendOptionHeaders(const Endpoint &endpoint, Headers *headers);

// Unix ms -> "2026-11-24T10:00:00.123Z".
std::string IsoTimestampUtc(int64_t unix_ms);

// Standard Webhooks signature "v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>" with the
// key from a "whsec_<base64>" secret; throws std::invalid_argument for a malformed secret.
std::string StandardWebhookSignature(const std::string &secret, const std::string &id,
                                     const std::string &timestamp, const std::string &body);

// One factory per kind (MakeConnector dispatches to these).
std::unique_ptr<Connector> MakeHubSpotConnector();
std::unique_ptr<Connector> MakeSalesforceConnector();
std::unique_ptr<Connector> MakeWebhookConnector();
std::unique_ptr<Connector> MakeOpenAIConnector();

// OpenAI chat completions for enrichment steps. model empty: options.model; both empty
// throws std::invalid_argument. masked: "Bearer ****" instead of the secret.
HttpRequest BuildChatRequest(const Endpoint &endpoint, const std::string &model, const Json &messages,
                             bool masked = false);

struct ChatResult {
	Outcome outcome = Outcome::Retry; // Delivered, Retry or Dead
	Json content;                     // the parsed JSON object on Delivered
	std::string error;
	long http_status = 0;
	bool endpoint_failure = false;
	bool stop_endpoint = false; // insufficient_quota: not retried, the endpoint should pause
	long retry_after_ms = -1;
};
ChatResult ParseChatResult(const HttpResponse &response);

} // namespace switchboard
