// Connector contract: how a batch of translated changes becomes HTTP calls for one
// kind of remote system, and how the answers become per-change outcomes.
//
// Everything that differs between kinds sits behind the Connector interface below, one file
// per kind (hubspot.cpp, salesforce.cpp, webhook.cpp, openai.cpp); registry.cpp maps kind names
// to them. The dispatcher, the pull and the validation ask the interface, never a kind name
// (CONTRIBUTING.md, "Adding a connector").
//
// Plain C++ (no postgres.h): the worker, preview() and the unit tests share it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/http_types.h"
#include "http/retry_after.h" // RetryAfterMs, which every connector reads answers with

namespace switchboard {

using Json = nlohmann::json;
// One row of switchboard.endpoints, with its secret resolved.
struct Endpoint {
	std::string name;
	std::string kind; // a registered kind: hubspot | salesforce | webhook | openai | woocommerce
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
	int64_t id = 0; // queue id
	Op op = Op::Update;
	std::string key;              // value of match_local
	Json fields = Json::object(); // remote_field -> typed JSON value; SQL NULL is null
	std::string remote_id;        // remote record id when known (needed for deletes)
	std::string event_id;         // stable across retries: idempotency key / webhook id
	int64_t occurred_at_ms = 0;   // commit-side capture time, unix ms
	// Notify steps (SPEC §7): the event's type exactly ("{route}.{step}"); fields is its data.
	// Empty for pushed changes (kinds that send events name them remote_object.op).
	std::string event_type;
};

// Credentials a call is signed with. Kinds with UsesToken() need a token fetched first.
struct Auth {
	std::string bearer;       // the secret, or the token's access_token for kinds with UsesToken()
	std::string instance_url; // the token's instance_url (where calls go), when it names one
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
	std::string remote_id;    // on Delivered, when the remote returned one
	std::string error;        // remote's message on Retry / Dead
	long retry_after_ms = -1; // honour Retry-After when >= 0
};

struct CallResult {
	std::vector<ChangeResult> results; // parallel to Call::changes
	long http_status = 0;
	bool endpoint_failure = false; // transport error, 5xx, 429: counts toward the circuit breaker
	bool refresh_auth = false;     // the token expired (AnswerClass::token_expired): fetch one, resend once
	bool disable_route = false;    // the receiver says the subscription is gone (webhook 410)
	bool stop_endpoint = false;    // daily quota / insufficient_quota: do not hammer
	// The remote refused the whole request for something some of its changes carry (a
	// HubSpot 400 VALIDATION_ERROR for a duplicate or an empty id): the dispatcher sends the
	// changes again in halves until the culprits are alone. The results (Dead) stand only
	// for a call of a single change.
	bool split = false;
	long retry_after_ms = -1;
	std::string error; // call-level error text (also copied into results)
};

// An access token fetched before calls can be sent (Salesforce OAuth client credentials).
struct AuthToken {
	std::string access_token;
	std::string instance_url; // where calls with this token go; empty: the endpoint's base_url
};
using SalesforceToken = AuthToken;

// What an answer (to a push call, a pull page) says about the endpoint itself rather than
// about the records it carried.
struct AnswerClass {
	bool endpoint_failure = false; // transport error, 5xx, 429, an org-wide limit: moves the breaker
	bool stop_endpoint = false;    // a quota no backoff brings back (daily limit): pause the endpoint
	bool token_expired = false;    // UsesToken() kinds: fetch a new token once and send again
};

// Status 0, 5xx and 429: the endpoint (not the request) is in trouble, whatever the kind.
bool IsOutageStatus(long status);

// A limit the remote applies to some requests on top of options.rate_limit (HubSpot: search
// requests, 5 per second per account). count 0: none.
struct RequestLimit {
	int count = 0;
	long window_ms = 0;
	std::string description; // "the HubSpot search limit (4/s)", quoted when it holds requests back
};

// Pulling (SPEC §6): two passes per pull, records changed since the cursor, then records
// deleted remotely (only for routes with on_delete = 'delete').
enum class PullPhase { Changes, Deletions };

// Where a pull stands. Stored by the worker in the same transaction as the page it covers.
struct PullCursor {
	// The kind's own position: HubSpot epoch ms as a decimal string ("0" at first), Salesforce
	// an ISO-8601 UTC datetime literal for SOQL ("1970-01-01T00:00:00.000Z" at first).
	std::string since;
	// Paging inside one query: HubSpot's paging.next.after, Salesforce's nextRecordsUrl
	// (a path starting with /services/data/). Empty: start the query from the beginning.
	std::string after;
};

struct RemoteRecord {
	std::string remote_id;        // HubSpot object id, Salesforce Id
	std::string key;              // the value of route.match_remote; empty when the record has none
	Json fields = Json::object(); // remote field -> value exactly as the remote sent it
	int64_t modified_ms = 0;      // lastmodifieddate / hs_lastmodifieddate / SystemModstamp
	bool deleted = false;         // from the Deletions phase
};

struct PullPage {
	std::vector<RemoteRecord> records; // in the remote's order (ascending modification time)
	PullCursor next;                   // store this once the page is applied
	bool more = false;                 // another page can be fetched right away
};

// What an enrich step (SPEC §7) sends: its input (the prompt as a JSON string, the messages
// or the body as JSON) and its options (model, system, temperature, max_tokens, json_schema,
// timeout_ms, max_attempts; already validated).
struct EnrichInput {
	std::string step; // the step's name (openai: the json_schema's name)
	Json input;
	Json options = Json::object();
};

// One enrich answer. Delivered: output is the JSON object that becomes steps.<name>.
struct EnrichResult {
	Outcome outcome = Outcome::Retry; // Delivered, Retry or Dead
	Json output;                      // the JSON object on Delivered
	std::string error;
	long http_status = 0;
	bool endpoint_failure = false; // transport error, 5xx, 429: counts toward the circuit breaker
	bool stop_endpoint = false;    // insufficient_quota: not retried, the endpoint should pause
	long retry_after_ms = -1;
	// Token usage the answer reported (openai usage.prompt_tokens, completion_tokens).
	bool has_usage = false;
	int64_t prompt_tokens = 0;
	int64_t completion_tokens = 0;
	std::string model; // the model that answered, when the answer says
};

// One kind of remote system. Implementations are stateless (one instance serves every
// endpoint of the kind); methods throw only where documented.
class Connector {
public:
	virtual ~Connector() = default;

	// ---- what the kind accepts (validation at write time) ---------------------------------

	// Largest batch one call may carry (hubspot 100, salesforce 200, one-event kinds 1).
	virtual size_t BulkLimit() const = 0;
	// Options beyond the common ones (batch_size, max_concurrency, rate_limit, timeout_ms,
	// headers), in the order error messages list them.
	virtual std::vector<std::string> ExtraOptions() const { return {}; }
	// Throws std::invalid_argument when value does not suit option name (one of ExtraOptions()).
	virtual void ValidateOption(const std::string &name, const Json &value) const;
	// Header names (lower case) the connector sets itself: options.headers may not set them.
	virtual std::vector<std::string> ReservedHeaders() const { return {"content-type", "authorization"}; }
	// Why no route may use this kind, completing "endpoint \"x\" ..." ("" when routes may).
	virtual std::string NotARouteTarget() const { return std::string(); }
	// Routes of this kind need match_remote: the hint naming what it holds ("" when not needed).
	virtual std::string MatchRemoteHint() const { return std::string(); }
	// preview() never reads a secret; a kind that computes something from it even in masked
	// output (a signature) gets this stand-in instead. "": the secret is not needed.
	virtual std::string PreviewSecret() const { return std::string(); }

	// ---- steps (SPEC §7): what the kind may do in a route's steps -----------------------

	// true: an enrich step may call this kind (BuildEnrichRequest, ParseEnrichResult).
	virtual bool Enriches() const { return false; }
	// true: a notify step may send its event through this kind (one signed event per call).
	virtual bool Notifies() const { return false; }
	// Options an enrich step of this kind accepts beyond timeout_ms and max_attempts.
	virtual std::vector<std::string> EnrichOptions() const { return {}; }
	// Throws std::invalid_argument when value does not suit option name (one of EnrichOptions()).
	virtual void ValidateEnrichOption(const std::string &name, const Json &value) const;
	// "" when an enrich step with these (valid) options can be sent to this endpoint; else why
	// not (openai: no model in the step nor in the endpoint's options).
	virtual std::string EnrichProblem(const Endpoint &, const Json &) const { return std::string(); }
	// true: the input may be text (a prompt); otherwise it must be json or jsonb.
	virtual bool EnrichTakesText() const { return false; }
	// The request of one enrich step. Throws std::invalid_argument when the input cannot make
	// one. The default throws (the kind does not enrich).
	virtual HttpRequest BuildEnrichRequest(const Endpoint &endpoint, const EnrichInput &input, const Auth &auth) const;
	virtual EnrichResult ParseEnrichResult(const HttpResponse &response) const;
	// An answer ParseEnrichResult made Delivered, checked against the step's options: one that
	// does not suit them becomes Dead, usage kept (openai: json_schema, which a compatible
	// server may ignore). The default accepts every answer.
	virtual void CheckEnrichAnswer(const EnrichInput &, EnrichResult *) const {}
	// The request of one notify step: an event of the given type and id (stable across
	// retries) carrying data; signed like the kind's push calls. The default throws.
	// ParseResult with a Call of one change reads its answer.
	virtual HttpRequest BuildNotifyRequest(const Endpoint &endpoint, const std::string &type, const std::string &id,
	                                       const Json &data, int64_t occurred_at_ms, const Auth &auth) const;

	// ---- push ---------------------------------------------------------------------------

	// true: the remote addresses records only by its own id (WooCommerce has no upsert by a
	// key), so every change, not only deletes, comes with the remote id when one is known.
	virtual bool UpdatesNeedRemoteId() const { return false; }
	// Largest batch for this endpoint: options.batch_size may lower BulkLimit(), never raise it.
	virtual size_t MaxBatch(const Endpoint &endpoint) const;
	// Changes are given in queue order; per key at most one change is present.
	// Deletes for routes with on_delete = ignore, or without a known remote id where one
	// is needed, are not sent: they get no call and are reported by SkippedChanges.
	// Deterministic: with RebuildAtSend the dispatcher rebuilds a call from exactly its
	// changes and expects one call with the same body and ids back.
	virtual std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &route,
	                                     const std::vector<Change> &changes, const Auth &auth) const = 0;
	// Per-change outcomes of one answer; its call-level flags agree with ClassifyAnswer.
	virtual CallResult ParseResult(const Call &call, const std::vector<Change> &changes,
	                               const HttpResponse &response) const = 0;

	// ---- sending policy (delivery/dispatcher.cpp) ---------------------------------------

	// Concurrent requests per endpoint when options.max_concurrency is unset; 0: the
	// dispatcher's default (DispatchOptions::default_concurrency).
	virtual int DefaultConcurrency() const { return 0; }
	// true: every call is rebuilt right before it is sent (a signature with the send time,
	// the current token), from the same changes.
	virtual bool RebuildAtSend() const { return false; }
	// What an answer says about the endpoint. The default: IsOutageStatus is a failure.
	virtual AnswerClass ClassifyAnswer(const HttpResponse &response) const;
	// A remote limit this request is subject to beyond options.rate_limit (count 0: none).
	virtual RequestLimit ExtraLimitFor(const HttpRequest &) const { return RequestLimit(); }

	// ---- auth ---------------------------------------------------------------------------

	// true: calls carry a token (Auth::bearer, Auth::instance_url) fetched with
	// BuildTokenRequest and cached per endpoint; false: Auth::bearer is the endpoint's secret.
	virtual bool UsesToken() const { return false; }
	// Throws std::invalid_argument when the secret cannot make a token request.
	virtual HttpRequest BuildTokenRequest(const Endpoint &endpoint) const;
	// Throws std::runtime_error with the remote's message (masked) when no token came back,
	// or when it points calls somewhere allowed_hosts (config/host_policy.h) does not allow.
	virtual AuthToken ParseTokenResponse(const HttpResponse &response, const std::string &allowed_hosts) const;

	// ---- pull (connectors/pull.h calls these) -------------------------------------------

	virtual bool CanPull() const { return false; }
	// The cursor of a route never pulled yet.
	virtual PullCursor InitialPullCursor() const { return PullCursor(); }
	// The request for one page, as BuildPullRequest in connectors/pull.h documents. The
	// default throws std::invalid_argument "<kind> endpoints cannot be pulled".
	virtual HttpRequest BuildPullRequest(const Endpoint &endpoint, const Route &route,
	                                     const std::vector<std::string> &fields, PullPhase phase,
	                                     const PullCursor &cursor, const Auth &auth) const;
	// true: a pull answer is a JSON array of records (WooCommerce), handed to ParsePullPage
	// as {"items": array}; other kinds' array answers are refused as not an object.
	virtual bool PullAnswerIsList() const { return false; }
	// A 2xx answer whose body parsed as a JSON object (ParsePullResponse checked status and
	// shape); throws std::runtime_error when the body is not what the remote documents.
	// Inbound read-back (BuildReadBackRequest above): kinds whose webhooks name only ids.
	virtual bool CanReadBack() const { return false; }
	// Default: throws std::invalid_argument "<kind> endpoints cannot read records back".
	virtual HttpRequest BuildReadBackRequest(const Endpoint &endpoint, const Route &route,
	                                         const std::vector<std::string> &fields,
	                                         const std::vector<std::string> &ids, const Auth &auth) const;
	// A 2xx answer whose body parsed as a JSON object.
	virtual std::vector<RemoteRecord> ParseReadBack(const Endpoint &endpoint, const Route &route,
	                                                const HttpResponse &response, const Json &body) const;
	// A non-2xx answer to a page of a query (cursor.after set) that says the query itself is
	// gone (Salesforce INVALID_QUERY_LOCATOR): the pull starts the query again from its since.
	virtual bool PullQueryExpired(const HttpResponse &) const { return false; }
	// Where the query starts again then: by default the query from its since.
	virtual PullCursor RestartPullQuery(const PullCursor &cursor) const { return PullCursor{cursor.since, ""}; }
	virtual PullPage ParsePullPage(const Endpoint &endpoint, const Route &route, PullPhase phase,
	                               const PullCursor &cursor, const HttpResponse &response, const Json &body) const;
};

// ---- Inbound read-back (SPEC §9): events that name only ids ----------------------------------
// A HubSpot webhook says "object 123 changed"; the records are read back in batches and applied
// like a pull page. Kinds whose events carry the record itself (WooCommerce) need none of this.

// The request reading back records by remote id (at most kReadBackLimit ids). fields: the
// remote fields the route's mappings pull. Throws std::invalid_argument for kinds that cannot.
HttpRequest BuildReadBackRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                                 const std::vector<std::string> &ids, const Auth &auth);
// The records of an answer to it (ids the remote no longer has are simply absent). Throws
// std::runtime_error with the remote's message for a failed answer or a malformed body.
std::vector<RemoteRecord> ParseReadBackResponse(const Endpoint &endpoint, const Route &route,
                                                const HttpResponse &response);
constexpr size_t kReadBackLimit = 100;

// ---- The registry (registry.cpp): kind name -> factory -----------------------------------

using ConnectorFactory = std::function<std::unique_ptr<Connector>()>;

// Throws std::invalid_argument for an unknown kind.
std::unique_ptr<Connector> MakeConnector(const std::string &kind);
// The registry's shared instance of a kind; nullptr for an unknown kind.
const Connector *FindConnector(const std::string &kind);
// Registered kinds, in registration order (built-ins first).
std::vector<std::string> ConnectorKinds();

// Known endpoint kinds and option names, for validation at write time.
bool IsKnownKind(const std::string &kind);
// Throws std::invalid_argument naming the bad option and why.
void ValidateOptions(const std::string &kind, const Json &options);

// Adds a kind at run time (unit tests: a new kind needs no change outside its own file and
// the registry); throws std::invalid_argument when the name is taken. Not thread-safe:
// register before anything looks kinds up concurrently.
void RegisterConnectorKind(const std::string &kind, ConnectorFactory factory);
void UnregisterConnectorKind(const std::string &kind);

// RAII registration for tests.
class ScopedConnectorKind {
public:
	ScopedConnectorKind(std::string kind, ConnectorFactory factory) : kind_(std::move(kind))
	{
		RegisterConnectorKind(kind_, std::move(factory));
	}
	~ScopedConnectorKind() { UnregisterConnectorKind(kind_); }
	ScopedConnectorKind(const ScopedConnectorKind &) = delete;
	ScopedConnectorKind &operator=(const ScopedConnectorKind &) = delete;

private:
	std::string kind_;
};

// Salesforce OAuth 2.0 client-credentials flow (the salesforce connector's token methods).
HttpRequest BuildSalesforceTokenRequest(const Endpoint &endpoint); // secret is JSON {client_id, client_secret}
// Throws std::runtime_error with the remote's message (masked), or when the instance_url it
// names is not acceptable: it must pass allowed_hosts (config/host_policy.h, "" = any host
// but link-local/metadata) and be https unless it is loopback.
SalesforceToken ParseSalesforceToken(const HttpResponse &response, const std::string &allowed_hosts = std::string());

// ---- Additions (connector implementation) ----------------------------------------------

// Indexes of the input changes that no call covers (deletes that are not sent): the worker
// marks them Skipped.
std::vector<size_t> SkippedChanges(const std::vector<Change> &changes, const std::vector<Call> &calls);

// Connector::BulkLimit of a kind; throws std::invalid_argument for an unknown kind.
size_t BulkLimit(const std::string &kind);

// "100/10s" -> count 100, window 10000 ms. Units: ms, s, m, h; "5/s" means "5/1s".
// Returns false (outputs untouched) when the text is not of that form.
bool ParseRateLimit(const std::string &text, int *count, long *window_ms);

// ASCII lower case, and "only decimal digits (and at least one)": shared by the connectors.
std::string Lower(std::string text);
bool IsDigits(const std::string &text);

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

// Copies an AnswerClass into a CallResult's call-level flags (refresh_auth = token_expired).
void MarkAnswer(const AnswerClass &answer, CallResult *result);

// MaxBatch for a kind whose bulk limit is limit: options.batch_size may lower it, never raise it.
size_t BatchSizeOption(const Endpoint &endpoint, size_t limit);

// Appends options.headers (already validated) to a request's headers.
void AppendOptionHeaders(const Endpoint &endpoint, Headers *headers);

// Unix ms -> "2026-11-24T10:00:00.123Z".
std::string IsoTimestampUtc(int64_t unix_ms);

// Standard Webhooks signature "v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>" with the
// key from a "whsec_<base64>" secret; throws std::invalid_argument for a malformed secret.
std::string StandardWebhookSignature(const std::string &secret, const std::string &id, const std::string &timestamp,
                                     const std::string &body);

// OpenAI chat completions for enrichment steps. model empty: options.model; both empty
// throws std::invalid_argument. masked: "Bearer ****" instead of the secret.
HttpRequest BuildChatRequest(const Endpoint &endpoint, const std::string &model, const Json &messages,
                             bool masked = false);

// An enrich step's chat request: the step's model (else the endpoint's options.model), its
// system prompt, temperature and max_tokens, and response_format json_object, or json_schema
// (strict, named after the step) when the step's options give one. The input is the prompt
// (a JSON string, or any other JSON value sent as its text) or the messages (a JSON array).
HttpRequest BuildChatRequestForStep(const Endpoint &endpoint, const EnrichInput &input, bool masked = false);

// The answer to a chat request: the JSON object in choices[0].message.content (content that
// is not a JSON object is a permanent failure of the step), usage, and what to do on errors:
// insufficient_quota permanent, other 429s and 5xx retried after retry-after or
// x-ratelimit-reset-requests.
using ChatResult = EnrichResult;
ChatResult ParseChatResult(const HttpResponse &response);
// A Delivered chat answer checked against the step's options.json_schema (either the schema or
// {"name", "schema"}): a mismatch makes it Dead, "model answer does not match json_schema:
// <path>: <reason>", usage kept. Other results and options without json_schema: unchanged.
void CheckChatAnswer(const Json &options, ChatResult *result);

// Enrich steps of many runs go through Dispatcher::Deliver like pushed changes (concurrency,
// rate limit, circuit breaker per endpoint): each Change carries fields {"step", "input",
// "options"}; an enrich kind's BuildCalls and ParseResult are these two (ParseEnrichResult,
// then CheckEnrichAnswer with the change's step options). On Delivered the change's remote_id
// is the JSON text {"output", "prompt_tokens", "completion_tokens", "has_usage"}; on any other
// outcome of an answered call (HTTP 200, or usage reported) the same without "output", since
// the tokens were spent all the same.
std::vector<Call> EnrichCalls(const Connector &connector, const Endpoint &endpoint, const std::vector<Change> &changes,
                              const Auth &auth);
// An enrich answer that is not a success, for every enrich kind alike: no HTTP status (the
// connection failed), 5xx and 429 are transient and count against the endpoint (retry_after_ms
// is the wait the answer asks for, -1: none), 408 is transient, any other status permanent
// (401/403 say "authentication failed"). described: the answer in words, for the error text.
void ClassifyFailedEnrich(const HttpResponse &response, const std::string &described, long retry_after_ms,
                          EnrichResult *result);
CallResult EnrichCallResult(const Connector &connector, const Call &call, const std::vector<Change> &changes,
                            const HttpResponse &response);

// OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s") in ms; -1 when not of that form.
long ParseOpenAIDuration(const std::string &text);

} // namespace switchboard
