// Shared connector pieces: option validation, the Connector defaults, and the small helpers
// every connector uses (URLs, error snippets, webhook signatures). The kind table is in
// registry.cpp.
#include "connectors/connector.h"
#include "http/redact.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "connectors/crypto.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// Options each kind accepts, in the order error messages list them: the common ones, then
// the kind's own.
std::vector<std::string>
KnownOptions(const Connector &connector)
{
	std::vector<std::string> known = {"batch_size", "max_concurrency", "rate_limit", "timeout_ms", "headers"};
	for (auto &extra : connector.ExtraOptions())
		known.push_back(std::move(extra));
	return known;
}

std::string
JoinNames(const std::vector<std::string> &names)
{
	std::string out;
	for (const auto &name : names) {
		if (!out.empty())
			out += ", ";
		out += name;
	}
	return out;
}

// Integral JSON number (jsonb may hand us 100.0) within [low, high].
bool
IntegerInRange(const Json &value, long low, long high)
{
	long v;
	if (value.is_number_integer()) {
		if (value.is_number_unsigned()) {
			if (value.get<unsigned long long>() > static_cast<unsigned long long>(LONG_MAX))
				return false;
		}
		v = value.get<long>();
	} else if (value.is_number_float()) {
		double d = value.get<double>();
		if (!(d >= static_cast<double>(low) && d <= static_cast<double>(high)) ||
		    d != static_cast<double>(static_cast<long>(d)))
			return false;
		v = static_cast<long>(d);
	} else {
		return false;
	}
	return v >= low && v <= high;
}

[[noreturn]] void
RangeError(const std::string &name, long low, long high, const Json &got)
{
	throw std::invalid_argument("option \"" + name + "\" must be an integer between " + std::to_string(low) + " and " +
	                            std::to_string(high) + ", got " + got.dump());
}

// RFC 7230 token characters: what a header name may contain.
bool
IsTokenChar(char c)
{
	if (std::isalnum(static_cast<unsigned char>(c)))
		return true;
	return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

void
ValidateHeaders(const std::string &kind, const Connector &connector, const Json &headers)
{
	if (!headers.is_object())
		throw std::invalid_argument("option \"headers\" must be an object of header name to string value, got " +
		                            Snippet(headers.dump(), 60));
	// Headers the connector sets itself; letting options override them would either break
	// the wire contract or let a secret slip into the endpoint row (and into preview()).
	auto reserved = connector.ReservedHeaders();
	for (const auto &item : headers.items()) {
		const std::string &name = item.key();
		if (name.empty() || !std::all_of(name.begin(), name.end(), IsTokenChar))
			throw std::invalid_argument("option \"headers\": \"" + Snippet(name, 60) + "\" is not a valid header name");
		if (std::find(reserved.begin(), reserved.end(), Lower(name)) != reserved.end())
			throw std::invalid_argument("option \"headers\" may not set \"" + name + "\": the " + kind +
			                            " connector sets it itself");
		if (!item.value().is_string())
			throw std::invalid_argument("option \"headers\": value of \"" + name + "\" must be a string, got " +
			                            Snippet(item.value().dump(), 60));
		const auto &value = item.value().get_ref<const std::string &>();
		// CR/LF would let a value start a new header line (header injection).
		if (std::any_of(value.begin(), value.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; }))
			throw std::invalid_argument("option \"headers\": value of \"" + name +
			                            "\" may not contain line breaks or NUL");
	}
}

bool
ParseUnsigned(const std::string &text, long max, long *out)
{
	if (!IsDigits(text) || text.size() > 18)
		return false;
	long v = std::stol(text);
	if (v > max)
		return false;
	*out = v;
	return true;
}

} // namespace

std::string
Lower(std::string text)
{
	for (char &c : text)
		c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
	return text;
}

bool
IsDigits(const std::string &text)
{
	return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

const char *
OpName(Op op)
{
	switch (op) {
	case Op::Insert:
		return "insert";
	case Op::Update:
		return "update";
	case Op::Delete:
		return "delete";
	}
	return "update";
}

void
ValidateOptions(const std::string &kind, const Json &options)
{
	size_t bulk_limit = BulkLimit(kind); // also rejects an unknown kind
	const Connector &connector = *FindConnector(kind);
	if (options.is_null())
		return;
	if (!options.is_object())
		throw std::invalid_argument("options must be a JSON object, got " + Snippet(options.dump(), 60));
	auto known = KnownOptions(connector);
	for (const auto &item : options.items()) {
		const std::string &name = item.key();
		const Json &value = item.value();
		// rate_limit_group (accepted by every kind) is checked below but not listed among the
		// known options of error texts, which predate it.
		if (name != "rate_limit_group" && std::find(known.begin(), known.end(), name) == known.end())
			throw std::invalid_argument("unknown option \"" + Snippet(name, 60) + "\" for kind " + kind +
			                            " (known: " + JoinNames(known) + ")");
		if (name == "batch_size") {
			if (bulk_limit == 1) {
				if (!IntegerInRange(value, 1, 1))
					throw std::invalid_argument("option \"batch_size\" must be 1 for kind " + kind +
					                            " (one request per change), got " + value.dump());
			} else if (!IntegerInRange(value, 1, static_cast<long>(bulk_limit))) {
				RangeError(name, 1, static_cast<long>(bulk_limit), value);
			}
		} else if (name == "max_concurrency") {
			if (!IntegerInRange(value, 1, 64))
				RangeError(name, 1, 64, value);
		} else if (name == "timeout_ms") {
			if (!IntegerInRange(value, 100, 600000))
				RangeError(name, 100, 600000, value);
		} else if (name == "rate_limit") {
			int count;
			long window_ms;
			if (!value.is_string() || !ParseRateLimit(value.get<std::string>(), &count, &window_ms))
				throw std::invalid_argument("option \"rate_limit\" must be a string like \"100/10s\" (count/duration, "
				                            "units ms, s, m, h), got " +
				                            Snippet(value.dump(), 60));
		} else if (name == "rate_limit_group") {
			// Shared memory keeps 32 groups of up to 512 slots (worker/shared_limits.h).
			if (!value.is_string() || value.get<std::string>().empty() || value.get<std::string>().size() > 63)
				throw std::invalid_argument("option \"rate_limit_group\" must be a name of 1 to 63 characters, got " +
				                            Snippet(value.dump(), 60));
			auto limit = options.find("rate_limit");
			int count = 0;
			long window_ms = 0;
			if (limit != options.end() && limit->is_string() &&
			    ParseRateLimit(limit->get<std::string>(), &count, &window_ms) && count > 512)
				throw std::invalid_argument("option \"rate_limit_group\" takes a rate_limit of at most 512 requests "
				                            "per window");
		} else if (name == "headers") {
			ValidateHeaders(kind, connector, value);
		} else {
			connector.ValidateOption(name, value); // one of the kind's ExtraOptions
		}
	}
}

bool
ParseRateLimit(const std::string &text, int *count, long *window_ms)
{
	auto slash = text.find('/');
	if (slash == std::string::npos)
		return false;
	long parsed_count;
	if (!ParseUnsigned(text.substr(0, slash), INT_MAX, &parsed_count) || parsed_count < 1)
		return false;
	std::string duration = text.substr(slash + 1);
	size_t digits = 0;
	while (digits < duration.size() && duration[digits] >= '0' && duration[digits] <= '9')
		++digits;
	std::string number = duration.substr(0, digits);
	std::string unit = duration.substr(digits);
	long amount = 1; // "5/s" reads as "5/1s"
	// Bounded so that amount * unit fits a long on any platform: a week of hours at most.
	if (!number.empty() && !ParseUnsigned(number, 100000000L, &amount))
		return false;
	long unit_ms;
	if (unit == "ms")
		unit_ms = 1;
	else if (unit == "s")
		unit_ms = 1000;
	else if (unit == "m")
		unit_ms = 60000;
	else if (unit == "h")
		unit_ms = 3600000;
	else
		return false;
	if (amount < 1 || amount > LONG_MAX / unit_ms)
		return false;
	*count = static_cast<int>(parsed_count);
	*window_ms = amount * unit_ms;
	return true;
}

std::vector<size_t>
SkippedChanges(const std::vector<Change> &changes, const std::vector<Call> &calls)
{
	std::vector<bool> covered(changes.size(), false);
	for (const auto &call : calls)
		for (size_t index : call.changes)
			if (index < covered.size())
				covered[index] = true;
	std::vector<size_t> skipped;
	for (size_t i = 0; i < covered.size(); ++i)
		if (!covered[i])
			skipped.push_back(i);
	return skipped;
}

std::string
UrlEncode(const std::string &text)
{
	static const char kHex[] = "0123456789ABCDEF";
	std::string out;
	out.reserve(text.size());
	for (char c : text) {
		unsigned char u = static_cast<unsigned char>(c);
		if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
			out += c;
		} else {
			out += '%';
			out += kHex[u >> 4];
			out += kHex[u & 15];
		}
	}
	return out;
}

std::string
JoinUrl(const std::string &base_url, const std::string &path)
{
	std::string base = base_url;
	while (!base.empty() && base.back() == '/')
		base.pop_back();
	return base + path;
}

std::string
Snippet(const std::string &text, size_t max_bytes)
{
	// Every excerpt in an error text may quote a remote: mask credentials and URL paths too.
	return RedactedExcerpt(text, max_bytes);
}

CallResult
UniformResult(const Call &call, Outcome outcome, const std::string &error, long retry_after_ms)
{
	CallResult result;
	result.error = error;
	result.retry_after_ms = retry_after_ms;
	ChangeResult one;
	one.outcome = outcome;
	one.error = error;
	one.retry_after_ms = retry_after_ms;
	result.results.assign(call.changes.size(), one);
	return result;
}

void
MarkAnswer(const AnswerClass &answer, CallResult *result)
{
	result->endpoint_failure = answer.endpoint_failure;
	result->stop_endpoint = answer.stop_endpoint;
	result->refresh_auth = answer.token_expired;
}

size_t
BatchSizeOption(const Endpoint &endpoint, size_t limit)
{
	if (!endpoint.options.is_object())
		return limit;
	auto it = endpoint.options.find("batch_size");
	if (it == endpoint.options.end() || !it->is_number())
		return limit;
	double wanted = it->get<double>();
	if (!(wanted >= 1))
		return limit;
	return wanted < static_cast<double>(limit) ? static_cast<size_t>(wanted) : limit;
}

void
AppendOptionHeaders(const Endpoint &endpoint, Headers *headers)
{
	if (!endpoint.options.is_object())
		return;
	auto it = endpoint.options.find("headers");
	if (it == endpoint.options.end() || !it->is_object())
		return;
	for (const auto &item : it->items())
		if (item.value().is_string())
			headers->emplace_back(item.key(), item.value().get<std::string>());
}

std::string
IsoTimestampUtc(int64_t unix_ms)
{
	// Floor division so that times before 1970 still get a 0..999 millisecond part.
	int64_t seconds = unix_ms / 1000;
	int64_t millis = unix_ms % 1000;
	if (millis < 0) {
		millis += 1000;
		seconds -= 1;
	}
	std::time_t t = static_cast<std::time_t>(seconds);
	std::tm tm_utc{};
	if (gmtime_r(&t, &tm_utc) == nullptr)
		return "1970-01-01T00:00:00.000Z"; // out of range for the platform's time_t
	char buffer[80];                       // room for any int fields, which keeps -Wformat-truncation quiet
	std::snprintf(buffer, sizeof(buffer), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm_utc.tm_year + 1900,
	              tm_utc.tm_mon + 1, tm_utc.tm_mday, tm_utc.tm_hour, tm_utc.tm_min, tm_utc.tm_sec,
	              static_cast<int>(millis));
	return buffer;
}

std::string
StandardWebhookSignature(const std::string &secret, const std::string &id, const std::string &timestamp,
                         const std::string &body)
{
	const std::string prefix = "whsec_";
	std::string encoded = secret.compare(0, prefix.size(), prefix) == 0 ? secret.substr(prefix.size()) : secret;
	std::string key;
	if (encoded.empty() || !Base64Decode(encoded, &key) || key.empty())
		throw std::invalid_argument("webhook secret must be whsec_<base64>");
	return "v1," + Base64Encode(HmacSha256(key, id + "." + timestamp + "." + body));
}

// ---- Connector defaults -------------------------------------------------------------------

bool
IsOutageStatus(long status)
{
	return status == 0 || status >= 500 || status == 429;
}

void
Connector::ValidateOption(const std::string &name, const Json &) const
{
	// Reached only for a name in ExtraOptions() that the kind forgot to check.
	throw std::logic_error("option \"" + name + "\" is listed but not validated by its connector");
}

void
Connector::ValidateEnrichOption(const std::string &name, const Json &) const
{
	// Reached only for a name in EnrichOptions() that the kind forgot to check.
	throw std::logic_error("step option \"" + name + "\" is listed but not validated by its connector");
}

HttpRequest
Connector::BuildEnrichRequest(const Endpoint &endpoint, const EnrichInput &, const Auth &) const
{
	throw std::invalid_argument(endpoint.kind + " endpoints cannot enrich");
}

HttpRequest
Connector::BuildNotifyRequest(const Endpoint &endpoint, const std::string &, const std::string &, const Json &, int64_t,
                              const Auth &) const
{
	throw std::invalid_argument(endpoint.kind + " endpoints cannot notify");
}

void
ClassifyFailedEnrich(const HttpResponse &response, const std::string &described, long retry_after_ms,
                     EnrichResult *result)
{
	const long status = response.status;
	result->http_status = status;
	if (status == 0) {
		// Counted against the endpoint, so a dead server opens its circuit breaker instead of
		// being called for every run.
		result->outcome = Outcome::Retry;
		result->error = "transport error: " + Snippet(response.transport_error);
		result->endpoint_failure = true;
		return;
	}
	result->error = described;
	if (status == 429 || status >= 500) {
		result->outcome = Outcome::Retry;
		result->endpoint_failure = true;
		result->retry_after_ms = retry_after_ms;
	} else if (status == 408) {
		result->outcome = Outcome::Retry;
		result->retry_after_ms = retry_after_ms;
	} else {
		// 3xx (never followed) and other 4xx: the request itself is wrong (a bad model name, a
		// bad key, too long a prompt) and would fail the same way again.
		result->outcome = Outcome::Dead;
		if (status == 401 || status == 403)
			result->error = "authentication failed: " + result->error;
	}
}

EnrichResult
Connector::ParseEnrichResult(const HttpResponse &) const
{
	throw std::logic_error("this kind does not enrich");
}

namespace {

// An enrich step's change: fields {"step", "input", "options"} (EnrichCalls in connector.h).
EnrichInput
EnrichInputOf(const Change &change)
{
	const Json &fields = change.fields;
	EnrichInput in;
	in.step = fields.is_object() ? fields.value("step", std::string()) : std::string();
	in.input = fields.is_object() && fields.contains("input") ? fields["input"] : Json();
	in.options = fields.is_object() && fields.contains("options") && fields["options"].is_object() ? fields["options"]
	                                                                                               : Json::object();
	return in;
}

} // namespace

std::vector<Call>
EnrichCalls(const Connector &connector, const Endpoint &endpoint, const std::vector<Change> &changes, const Auth &auth)
{
	std::vector<Call> calls;
	for (size_t i = 0; i < changes.size(); ++i) {
		Call call;
		call.changes.push_back(i);
		call.request = connector.BuildEnrichRequest(endpoint, EnrichInputOf(changes[i]), auth);
		calls.push_back(std::move(call));
	}
	return calls;
}

CallResult
EnrichCallResult(const Connector &connector, const Call &call, const std::vector<Change> &changes,
                 const HttpResponse &response)
{
	EnrichResult r = connector.ParseEnrichResult(response);
	// One change per call (EnrichCalls): its step's options judge the answer.
	if (r.outcome == Outcome::Delivered && !call.changes.empty() && call.changes[0] < changes.size())
		connector.CheckEnrichAnswer(EnrichInputOf(changes[call.changes[0]]), &r);
	CallResult result = UniformResult(call, r.outcome, r.error, r.retry_after_ms);
	result.http_status = r.http_status;
	result.endpoint_failure = r.endpoint_failure;
	// insufficient_quota fails each step at once (permanent); pausing the whole endpoint as
	// well would hold every other run until a restart, for a top-up nobody announces.
	result.stop_endpoint = false;
	result.retry_after_ms = r.retry_after_ms;
	result.error = r.error;
	// Usage travels in remote_id; on a failed answer too (not an object, not matching
	// json_schema): the tokens were spent.
	if (r.outcome == Outcome::Delivered || r.has_usage || r.http_status == 200) {
		Json carried = {{"has_usage", r.has_usage},
		                {"prompt_tokens", r.prompt_tokens},
		                {"completion_tokens", r.completion_tokens}};
		if (r.outcome == Outcome::Delivered)
			carried["output"] = r.output;
		for (auto &one : result.results)
			one.remote_id = carried.dump();
	}
	return result;
}

size_t
Connector::MaxBatch(const Endpoint &endpoint) const
{
	return BatchSizeOption(endpoint, BulkLimit());
}

AnswerClass
Connector::ClassifyAnswer(const HttpResponse &response) const
{
	AnswerClass answer;
	answer.endpoint_failure = IsOutageStatus(response.status);
	return answer;
}

HttpRequest
Connector::BuildTokenRequest(const Endpoint &endpoint) const
{
	throw std::logic_error(endpoint.kind + " endpoints use no token");
}

AuthToken
Connector::ParseTokenResponse(const HttpResponse &, const std::string &) const
{
	throw std::logic_error("this kind uses no token");
}

HttpRequest
Connector::BuildPullRequest(const Endpoint &endpoint, const Route &, const std::vector<std::string> &, PullPhase,
                            const PullCursor &, const Auth &) const
{
	throw std::invalid_argument(endpoint.kind + " endpoints cannot be pulled");
}

PullPage
Connector::ParsePullPage(const Endpoint &endpoint, const Route &, PullPhase, const PullCursor &, const HttpResponse &,
                         const Json &) const
{
	throw std::invalid_argument(endpoint.kind + " endpoints cannot be pulled");
}

HttpRequest
Connector::BuildReadBackRequest(const Endpoint &endpoint, const Route &, const std::vector<std::string> &,
                                const std::vector<std::string> &, const Auth &) const
{
	throw std::invalid_argument(endpoint.kind + " endpoints cannot read records back");
}

std::vector<RemoteRecord>
Connector::ParseReadBack(const Endpoint &endpoint, const Route &, const HttpResponse &, const Json &) const
{
	throw std::invalid_argument(endpoint.kind + " endpoints cannot read records back");
}

} // namespace switchboard
