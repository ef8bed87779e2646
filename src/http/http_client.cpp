#include "http/http_client.h"

#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>

#include "config/host_policy.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

constexpr long kDefaultTimeoutMs = 30 * 1000;
// Keepalive probes let a connection idling in the cache notice a silently dead peer
// (NAT or load balancer timeouts) instead of failing the next request sent on it.
constexpr long kKeepIdleSeconds = 60;
constexpr long kKeepIntervalSeconds = 30;

struct EasyDeleter {
	void operator()(CURL *easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
	void operator()(CURLM *multi) const { curl_multi_cleanup(multi); }
};
struct SlistDeleter {
	void operator()(curl_slist *list) const { curl_slist_free_all(list); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;
struct UrlDeleter {
	void operator()(CURLU *url) const { curl_url_cleanup(url); }
};
using UrlPtr = std::unique_ptr<CURLU, UrlDeleter>;

// Everything one transfer needs until it completes. Owned by the client; libcurl holds a
// raw pointer to it (CURLOPT_PRIVATE and the callbacks' user data), so it must not move:
// it lives behind a unique_ptr.
struct Transfer {
	uint64_t id = 0;
	uint64_t tag = 0;
	size_t max_response_bytes = 0;
	EasyPtr easy;
	SlistPtr header_list;
	SlistPtr resolve_list;
	// The parsed URL libcurl sends to (CURLOPT_CURLU): the host checked is the host used.
	UrlPtr url;
	// Host policy as it was when the transfer was submitted; the open-socket callback
	// checks every resolved address against it and notes here why one was refused.
	std::string allowed_hosts;
	std::string refused;
	// CURLOPT_POSTFIELDS does not copy: the body must outlive the transfer.
	std::string request_body;
	HttpResponse response;
	bool too_large = false;
	bool callback_failed = false;
	char error[CURL_ERROR_SIZE] = {0};
};

std::string
ToLower(std::string s)
{
	for (char &c : s)
		c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
	return s;
}

std::string
TrimSpaces(const char *begin, const char *end)
{
	while (begin < end && (*begin == ' ' || *begin == '\t'))
		begin++;
	while (end > begin && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		end--;
	return std::string(begin, end);
}

std::string
TooLargeText(size_t max_bytes)
{
	return "response larger than " + std::to_string(max_bytes) + " bytes";
}

// libcurl write callback. Must not throw: an exception unwinding through C frames is
// undefined behaviour. Returning fewer bytes than given aborts the transfer.
size_t
OnBody(char *data, size_t size, size_t count, void *user) noexcept
{
	auto *transfer = static_cast<Transfer *>(user);
	size_t n = size * count;
	if (n > transfer->max_response_bytes - transfer->response.body.size()) {
		transfer->too_large = true;
		return 0;
	}
	try {
		transfer->response.body.append(data, n);
	} catch (...) {
		transfer->callback_failed = true;
		return 0;
	}
	return n;
}

// libcurl header callback: called once per header line, status lines included.
size_t
OnHeader(char *data, size_t size, size_t count, void *user) noexcept
{
	auto *transfer = static_cast<Transfer *>(user);
	size_t n = size * count;
	const char *end = data + n;
	try {
		Headers &headers = transfer->response.headers;
		if (n >= 5 && std::memcmp(data, "HTTP/", 5) == 0) {
			// A new status line: an interim answer (100 Continue) came before; only the
			// headers of the final answer matter.
			headers.clear();
		} else if (n > 0 && (data[0] == ' ' || data[0] == '\t')) {
			// Obsolete line folding: continues the previous header's value.
			std::string more = TrimSpaces(data, end);
			if (!headers.empty() && !more.empty())
				headers.back().second += " " + more;
		} else {
			const char *colon = static_cast<const char *>(std::memchr(data, ':', n));
			if (colon != nullptr && colon > data)
				headers.emplace_back(ToLower(TrimSpaces(data, colon)), TrimSpaces(colon + 1, end));
		}
	} catch (...) {
		transfer->callback_failed = true;
		return 0;
	}
	return n;
}

// libcurl open-socket callback: the one place that sees the exact address about to be
// connected to, after resolution (CURLOPT_RESOLVE, DNS, every address Happy Eyeballs
// tries), and before the socket exists. Checking here rather than in CURLOPT_PREREQFUNCTION
// (called once connected) means a refused address gets not even a SYN, and a name whose DNS
// answer changes between a check and the connect (rebinding) cannot slip through. Returning
// CURL_SOCKET_BAD makes libcurl try the host's next address or fail the transfer.
// A cached connection is reused without a new open; the URL's host is still checked at every
// Submit, and its address passed this check when the connection was opened.
// Through a proxy (http_proxy in the server's environment) this sees the proxy's address:
// the URL check in CheckUrl then still refuses hosts and address literals by the policy.
curl_socket_t
OnOpenSocket(void *user, curlsocktype, struct curl_sockaddr *address) noexcept
{
	auto *transfer = static_cast<Transfer *>(user);
	try {
		char text[INET6_ADDRSTRLEN] = {0};
		const void *raw = nullptr;
		if (address->family == AF_INET && address->addrlen >= sizeof(sockaddr_in))
			raw = &reinterpret_cast<const sockaddr_in *>(&address->addr)->sin_addr;
		else if (address->family == AF_INET6 && address->addrlen >= sizeof(sockaddr_in6))
			raw = &reinterpret_cast<const sockaddr_in6 *>(&address->addr)->sin6_addr;
		IpAddress ip;
		std::string problem;
		if (raw == nullptr || inet_ntop(address->family, raw, text, sizeof(text)) == nullptr ||
		    !ParseIpAddress(text, &ip))
			problem = "not an IPv4 or IPv6 address";
		else
			problem = AddressProblem(ip, transfer->allowed_hosts);
		if (!problem.empty()) {
			if (transfer->refused.empty())
				transfer->refused = problem;
			return CURL_SOCKET_BAD;
		}
	} catch (...) {
		transfer->callback_failed = true;
		return CURL_SOCKET_BAD;
	}
	int type = address->socktype;
#ifdef SOCK_CLOEXEC
	type |= SOCK_CLOEXEC;
#endif
	return socket(address->family, type, address->protocol);
}

bool
HasHeader(const Headers &headers, const char *lower_name)
{
	return std::any_of(headers.begin(), headers.end(),
	                   [&](const std::pair<std::string, std::string> &h) { return ToLower(h.first) == lower_name; });
}

bool
HasLineBreak(const std::string &s)
{
	return s.find_first_of("\r\n") != std::string::npos || s.find('\0') != std::string::npos;
}

// curl_slist_append returns the head of the list (unchanged after the first line), or
// null leaving the list as it was.
bool
AppendHeader(SlistPtr &list, const std::string &line)
{
	curl_slist *head = curl_slist_append(list.get(), line.c_str());
	if (head == nullptr)
		return false;
	if (!list)
		list.reset(head);
	return true;
}

// Trivially destructible, as every static must be in a Postgres backend (a backend exits
// through proc_exit, and destructors run then would touch memory already torn down).
std::once_flag global_init_once;
static_assert(std::is_trivially_destructible<std::once_flag>::value, "static with a destructor");
CURLcode global_init_result = CURLE_FAILED_INIT;

} // namespace

bool
HttpGlobalInit(std::string *error)
{
	std::call_once(global_init_once, [] { global_init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
	if (global_init_result != CURLE_OK) {
		if (error != nullptr)
			*error = std::string("curl_global_init failed: ") + curl_easy_strerror(global_init_result);
		return false;
	}
	return true;
}

struct HttpClient::State {
	HttpClientOptions options;
	MultiPtr multi;
	std::unordered_map<CURL *, std::unique_ptr<Transfer>> running;
	// Transfers that could not be started; handed out by the next Poll.
	std::vector<std::pair<uint64_t, HttpResponse>> failed_to_start;
	uint64_t next_id = 1;
	std::atomic<bool> woken{false};

	~State()
	{
		// Handles must leave the multi before either is cleaned up.
		for (auto &entry : running)
			curl_multi_remove_handle(multi.get(), entry.first);
		running.clear();
	}

	std::string Policy() const
	{
		return options.current_allowed_hosts ? options.current_allowed_hosts() : options.allowed_hosts;
	}
	// Sets every option of a transfer; returns an error text, empty on success.
	std::string Configure(Transfer &t, const HttpRequest &request, long timeout_ms);
	// Runs libcurl and moves finished transfers into `done`.
	void Drive(std::vector<std::pair<uint64_t, HttpResponse>> &done);
	HttpResponse Finish(Transfer &t, CURLcode result);
};

namespace {

// Parses the URL with libcurl's own parser (so the host judged is the host connected to)
// and applies the host policy by name, and to an address literal as an address.
std::string
CheckUrl(Transfer &t, const std::string &url)
{
	t.url.reset(curl_url());
	if (!t.url)
		return "out of memory parsing the URL";
	CURLUcode uc = curl_url_set(t.url.get(), CURLUPART_URL, url.c_str(),
	                            CURLU_NON_SUPPORT_SCHEME | CURLU_DISALLOW_USER);
	if (uc != CURLUE_OK)
		return std::string("invalid URL: ") + curl_url_strerror(uc);
	auto part = [&](CURLUPart which) {
		char *text = nullptr;
		std::string value;
		if (curl_url_get(t.url.get(), which, &text, 0) == CURLUE_OK && text != nullptr)
			value = text;
		curl_free(text);
		return value;
	};
	std::string scheme = ToLower(part(CURLUPART_SCHEME));
	if (scheme != "http" && scheme != "https")
		return "unsupported URL scheme \"" + scheme + "\": only http and https";
	std::string host = ToLower(part(CURLUPART_HOST));
	if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
		host = host.substr(1, host.size() - 2);
	if (host.empty())
		return "invalid URL: no host";
	if (!HostAllowed(host, t.allowed_hosts))
		return "refused: host \"" + host + "\" is not in switchboard.allowed_hosts";
	IpAddress literal;
	if (ParseIpAddress(host, &literal)) {
		// Also caught when connecting, but not through a proxy: judge the literal here.
		std::string problem = AddressProblem(literal, t.allowed_hosts);
		if (!problem.empty())
			return "refused: " + problem;
	}
	return std::string();
}

} // namespace

std::string
HttpClient::State::Configure(Transfer &t, const HttpRequest &request, long timeout_ms)
{
	CURL *easy = t.easy.get();
	CURLcode rc = CURLE_OK;
	// Stops at the first failing option; the rest would only add noise.
	auto set = [&](CURLoption option, auto value) {
		if (rc == CURLE_OK)
			rc = curl_easy_setopt(easy, option, value);
	};

	if (std::string refused = CheckUrl(t, request.url); !refused.empty())
		return refused;
	set(CURLOPT_ERRORBUFFER, t.error);
	set(CURLOPT_PRIVATE, static_cast<void *>(&t));
	set(CURLOPT_CURLU, t.url.get());
	set(CURLOPT_OPENSOCKETFUNCTION, &OnOpenSocket);
	set(CURLOPT_OPENSOCKETDATA, static_cast<void *>(&t));
	for (const auto &entry : options.resolve)
		if (!AppendHeader(t.resolve_list, entry))
			return "out of memory building the resolve list";
	if (t.resolve_list)
		set(CURLOPT_RESOLVE, t.resolve_list.get());
	// Postgres owns SIGALRM; without this libcurl would use it for resolver timeouts.
	set(CURLOPT_NOSIGNAL, 1L);
	// An endpoint URL is user data: never let it (or a redirect) reach file://, gopher://...
#if LIBCURL_VERSION_NUM >= 0x075500
	set(CURLOPT_PROTOCOLS_STR, "http,https");
	set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	set(CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	set(CURLOPT_REDIR_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	// Redirects are never followed: a 3xx is the answer (a failure for every connector).
	// Following one would send the request, its body and its credentials to a URL the
	// remote chose; the redirect protocols above only narrow what a mistake could reach.
	set(CURLOPT_FOLLOWLOCATION, 0L);
	set(CURLOPT_CONNECTTIMEOUT_MS, options.connect_timeout_ms);
	set(CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : kDefaultTimeoutMs);
	set(CURLOPT_TCP_KEEPALIVE, 1L);
	set(CURLOPT_TCP_KEEPIDLE, kKeepIdleSeconds);
	set(CURLOPT_TCP_KEEPINTVL, kKeepIntervalSeconds);
	set(CURLOPT_USERAGENT, options.user_agent.c_str());
	set(CURLOPT_WRITEFUNCTION, &OnBody);
	set(CURLOPT_WRITEDATA, static_cast<void *>(&t));
	set(CURLOPT_HEADERFUNCTION, &OnHeader);
	set(CURLOPT_HEADERDATA, static_cast<void *>(&t));
	// Refuses early when Content-Length already says too much; the write callback catches
	// the rest (chunked or compressed bodies).
	set(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options.max_response_bytes));

	const std::string &method = request.method;
	bool sends_body = !request.body.empty() || method == "POST" || method == "PUT" || method == "PATCH";
	if (sends_body) {
		t.request_body = request.body;
		set(CURLOPT_POSTFIELDS, t.request_body.c_str());
		set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t.request_body.size()));
		if (method != "POST")
			set(CURLOPT_CUSTOMREQUEST, method.c_str());
	} else if (method == "GET" || method.empty()) {
		set(CURLOPT_HTTPGET, 1L);
	} else if (method == "HEAD") {
		set(CURLOPT_NOBODY, 1L);
	} else {
		set(CURLOPT_CUSTOMREQUEST, method.c_str());
	}
	if (rc != CURLE_OK)
		return t.error[0] != '\0' ? std::string(t.error) : std::string(curl_easy_strerror(rc));

	for (const auto &header : request.headers) {
		// A line break in a header would let data smuggle extra headers or a second request.
		if (header.first.empty() || HasLineBreak(header.first) || HasLineBreak(header.second))
			return "invalid header \"" + header.first + "\"";
		// "Name;" is libcurl's way to send a header with an empty value.
		std::string line = header.second.empty() ? header.first + ";" : header.first + ": " + header.second;
		if (!AppendHeader(t.header_list, line))
			return "out of memory building request headers";
	}
	// libcurl would otherwise send "Expect: 100-continue" for larger bodies and wait up to
	// a second for a go-ahead many servers never send.
	if (sends_body && !HasHeader(request.headers, "expect") && !AppendHeader(t.header_list, "Expect:"))
		return "out of memory building request headers";
	if (t.header_list && (rc = curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t.header_list.get())) != CURLE_OK)
		return curl_easy_strerror(rc);
	return std::string();
}

HttpResponse
HttpClient::State::Finish(Transfer &t, CURLcode result)
{
	HttpResponse response = std::move(t.response);
	double total_seconds = 0;
	if (curl_easy_getinfo(t.easy.get(), CURLINFO_TOTAL_TIME, &total_seconds) == CURLE_OK)
		response.elapsed_ms = total_seconds * 1000.0;
	long status = 0;
	if (result == CURLE_OK && curl_easy_getinfo(t.easy.get(), CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
	    status > 0) {
		response.status = status;
		return response;
	}
	// No usable HTTP answer: a partial body or headers would only mislead the parser.
	response.status = 0;
	response.headers.clear();
	response.body.clear();
	if (t.too_large || result == CURLE_FILESIZE_EXCEEDED)
		response.transport_error = TooLargeText(t.max_response_bytes);
	else if (!t.refused.empty())
		response.transport_error = "refused: " + t.refused;
	else if (t.callback_failed)
		response.transport_error = "out of memory receiving the response";
	else if (result == CURLE_OK)
		response.transport_error = "no HTTP status in the response";
	else if (t.error[0] != '\0')
		response.transport_error = t.error;
	else
		response.transport_error = curl_easy_strerror(result);
	return response;
}

void
HttpClient::State::Drive(std::vector<std::pair<uint64_t, HttpResponse>> &done)
{
	int still_running = 0;
	// Errors here are only out-of-memory style conditions of the multi handle; the
	// transfers then report their own failures through info_read.
	curl_multi_perform(multi.get(), &still_running);
	int queued = 0;
	while (CURLMsg *message = curl_multi_info_read(multi.get(), &queued)) {
		if (message->msg != CURLMSG_DONE)
			continue;
		CURL *easy = message->easy_handle;
		CURLcode result = message->data.result;
		auto it = running.find(easy);
		if (it == running.end())
			continue;
		std::unique_ptr<Transfer> transfer = std::move(it->second);
		running.erase(it);
		done.emplace_back(transfer->tag, Finish(*transfer, result));
		// Removing (not just cleaning up) the handle returns its connection to the multi
		// handle's cache, where the next request to the same host picks it up.
		curl_multi_remove_handle(multi.get(), easy);
	}
}

HttpClient::HttpClient(HttpClientOptions options) : state_(std::make_unique<State>())
{
	std::string error;
	if (!HttpGlobalInit(&error))
		throw std::runtime_error(error);
	state_->options = std::move(options);
	state_->multi.reset(curl_multi_init());
	if (!state_->multi)
		throw std::runtime_error("curl_multi_init failed");
	CURLM *multi = state_->multi.get();
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, state_->options.max_total_connections);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, state_->options.max_host_connections);
	// Keep as many idle connections as may be open at once, so a burst's connections are
	// all reused by the next burst instead of being closed and reopened.
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, state_->options.max_total_connections);
}

HttpClient::~HttpClient() = default;
HttpClient::HttpClient(HttpClient &&) noexcept = default;
HttpClient &HttpClient::operator=(HttpClient &&) noexcept = default;

uint64_t
HttpClient::Submit(const HttpRequest &request, long timeout_ms, uint64_t tag)
{
	State &s = *state_;
	auto transfer = std::make_unique<Transfer>();
	transfer->id = s.next_id++;
	transfer->tag = tag;
	transfer->max_response_bytes = s.options.max_response_bytes;
	transfer->allowed_hosts = s.Policy();
	transfer->easy.reset(curl_easy_init());

	std::string error;
	if (!transfer->easy)
		error = "curl_easy_init failed";
	else
		error = s.Configure(*transfer, request, timeout_ms);
	if (error.empty()) {
		CURLMcode mc = curl_multi_add_handle(s.multi.get(), transfer->easy.get());
		if (mc != CURLM_OK)
			error = curl_multi_strerror(mc);
	}
	uint64_t id = transfer->id;
	if (!error.empty()) {
		HttpResponse response;
		response.transport_error = error;
		s.failed_to_start.emplace_back(tag, std::move(response));
		return id;
	}
	CURL *easy = transfer->easy.get();
	s.running.emplace(easy, std::move(transfer));
	return id;
}

std::vector<std::pair<uint64_t, HttpResponse>>
HttpClient::Poll(int wait_ms)
{
	using Clock = std::chrono::steady_clock;
	State &s = *state_;
	const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(std::max(wait_ms, 0));
	std::vector<std::pair<uint64_t, HttpResponse>> done;
	done.swap(s.failed_to_start);
	s.Drive(done);
	// curl_multi_poll may return early (its own timers, a wakeup, socket activity that
	// finished nothing), so wait again for what is left of wait_ms; never past it.
	while (done.empty()) {
		if (s.woken.exchange(false))
			break;
		auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
		if (remaining <= 0)
			break;
		int ready_fds = 0;
		// A failing poll would return at once every time: stop rather than spin until the
		// deadline; the caller's next Poll tries again.
		if (curl_multi_poll(s.multi.get(), nullptr, 0, static_cast<int>(remaining), &ready_fds) != CURLM_OK)
			break;
		s.Drive(done);
	}
	return done;
}

bool
HttpClient::Cancel(uint64_t id)
{
	State &s = *state_;
	for (auto it = s.running.begin(); it != s.running.end(); ++it) {
		if (it->second->id != id)
			continue;
		// Out of the multi handle first; the easy handle is cleaned up with its Transfer.
		// A connection removed mid-transfer is closed by libcurl, never reused half-read.
		curl_multi_remove_handle(s.multi.get(), it->first);
		s.running.erase(it);
		return true;
	}
	// A transfer that failed to start is handed out by the next Poll like any answer.
	return false;
}

std::string
HttpClient::AllowedHosts() const
{
	return state_->Policy();
}

size_t
HttpClient::InFlight() const
{
	return state_->running.size() + state_->failed_to_start.size();
}

void
HttpClient::Wakeup()
{
	if (!state_)
		return;
	state_->woken.store(true);
	curl_multi_wakeup(state_->multi.get());
}

} // namespace switchboard
