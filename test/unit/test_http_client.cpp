// Unit tests for the libcurl multi client, against the scripted loopback server of
// test_server.h (127.0.0.1, a thread per connection). Paths select behaviour:
//   /echo...        200, body = request body, x-method = request method
//   /status/N       status N
//   /sleep/N        answers after N ms
//   /big/N          N bytes with Content-Length
//   /stream/N       N bytes without Content-Length, then close
//   /drop           closes the connection without answering
//   /redirect?to=U  302 with Location: U
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "http/http_client.h"
#include "test_server.h"

namespace switchboard {
namespace {

using Clock = std::chrono::steady_clock;

long
MsSince(Clock::time_point start)
{
	return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

std::string
Lower(std::string s)
{
	for (char &c : s)
		c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
	return s;
}

std::string
Find(const Headers &headers, const std::string &name)
{
	for (const auto &h : headers)
		if (h.first == name)
			return h.second;
	return "<absent>";
}

// The paths above, on the shared scripted server (test_server.h).
class TestServer : public test_support::ScriptedServer {
public:
	TestServer() { On("/", Answer); }
	std::vector<test_support::ServerRequest> received() { return Requests(); }

private:
	static test_support::ServerReply Reply(int status, std::string body, Headers headers = {})
	{
		test_support::ServerReply reply;
		reply.status = status;
		reply.body = std::move(body);
		reply.headers = {{"X-Mixed-Case", "Hello World"}}; // header names come back lower-cased
		for (auto &header : headers)
			reply.headers.push_back(std::move(header));
		return reply;
	}

	static test_support::ServerReply Answer(const test_support::ServerRequest &request)
	{
		const std::string &path = request.path;
		if (path == "/drop") {
			test_support::ServerReply reply;
			reply.drop = true;
			return reply;
		}
		if (path.rfind("/redirect?to=", 0) == 0)
			return Reply(302, "moved", {{"Location", path.substr(13)}});
		if (path.rfind("/status/", 0) == 0) {
			int status = std::stoi(path.substr(8));
			return Reply(status, "status " + std::to_string(status), {{"Retry-After", "7"}});
		}
		if (path.rfind("/sleep/", 0) == 0) {
			test_support::ServerReply reply = Reply(200, "slept");
			reply.delay_ms = std::stoi(path.substr(7));
			return reply;
		}
		if (path.rfind("/big/", 0) == 0)
			return Reply(200, std::string(std::stoul(path.substr(5)), 'x'));
		if (path.rfind("/stream/", 0) == 0) {
			// No Content-Length: the body ends when the connection closes.
			test_support::ServerReply reply;
			reply.raw = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + std::string(std::stoul(path.substr(8)), 'y');
			return reply;
		}
		return Reply(200, request.body, {{"x-method", request.method}});
	}
};

// Polls until `count` results arrived or `limit_ms` passed.
std::map<uint64_t, HttpResponse>
Collect(HttpClient &client, size_t count, long limit_ms = 5000)
{
	std::map<uint64_t, HttpResponse> results;
	auto start = Clock::now();
	while (results.size() < count && MsSince(start) < limit_ms) {
		for (auto &entry : client.Poll(50)) {
			EXPECT_EQ(results.count(entry.first), 0u) << "tag returned twice: " << entry.first;
			results[entry.first] = std::move(entry.second);
		}
	}
	return results;
}

HttpResponse
Fetch(HttpClient &client, const HttpRequest &request, long timeout_ms = 5000)
{
	client.Submit(request, timeout_ms, 1);
	auto results = Collect(client, 1, timeout_ms + 2000);
	EXPECT_EQ(results.size(), 1u);
	return results[1];
}

class HttpClientTest : public ::testing::Test {
protected:
	static void SetUpTestSuite()
	{
		std::string error;
		ASSERT_TRUE(HttpGlobalInit(&error)) << error;
	}
	TestServer server;
};

TEST_F(HttpClientTest, GetWithHeaders)
{
	HttpClient client;
	HttpRequest request{"GET", server.Url("/echo/get"), {{"X-Test", "abc"}, {"Authorization", "Bearer t0k"}}, ""};
	HttpResponse response = Fetch(client, request);
	EXPECT_EQ(response.status, 200);
	EXPECT_EQ(response.transport_error, "");
	EXPECT_EQ(Find(response.headers, "x-method"), "GET");
	EXPECT_GT(response.elapsed_ms, 0.0);

	auto received = server.received();
	ASSERT_EQ(received.size(), 1u);
	EXPECT_EQ(received[0].method, "GET");
	EXPECT_EQ(received[0].path, "/echo/get");
	EXPECT_EQ(received[0].headers["x-test"], "abc");
	EXPECT_EQ(received[0].headers["authorization"], "Bearer t0k");
	EXPECT_EQ(received[0].headers["user-agent"], "switchboard");
	EXPECT_EQ(received[0].body, "");
}

TEST_F(HttpClientTest, MethodsWithBodies)
{
	HttpClient client;
	// Over 1 KiB, where libcurl would otherwise wait for "100 Continue".
	std::string big_json = "{\"data\":\"" + std::string(5000, 'z') + "\"}";
	const std::vector<std::pair<std::string, std::string>> cases = {{"POST", "{\"a\":1}"}, {"PATCH", "{\"b\":2}"},
	                                                                {"PUT", "{\"c\":3}"},  {"DELETE", "{\"d\":4}"},
	                                                                {"POST", big_json},    {"POST", ""}};
	for (size_t i = 0; i < cases.size(); i++) {
		HttpRequest request{cases[i].first,
		                    server.Url("/echo/" + std::to_string(i)),
		                    {{"Content-Type", "application/json"}, {"Idempotency-Key", "evt-" + std::to_string(i)}},
		                    cases[i].second};
		client.Submit(request, 5000, i);
	}
	auto start = Clock::now();
	auto results = Collect(client, cases.size());
	EXPECT_LT(MsSince(start), 900) << "a body must not wait for 100 Continue";
	ASSERT_EQ(results.size(), cases.size());
	for (size_t i = 0; i < cases.size(); i++) {
		EXPECT_EQ(results[i].status, 200) << i;
		EXPECT_EQ(results[i].body, cases[i].second) << i;
		EXPECT_EQ(Find(results[i].headers, "x-method"), cases[i].first) << i;
	}
	for (const auto &r : server.received()) {
		size_t i = std::stoul(r.path.substr(6));
		EXPECT_EQ(r.method, cases[i].first);
		EXPECT_EQ(r.body, cases[i].second);
		EXPECT_EQ(r.headers.at("content-type"), "application/json");
		EXPECT_EQ(r.headers.at("idempotency-key"), "evt-" + std::to_string(i));
		EXPECT_EQ(r.headers.count("expect"), 0u);
	}
}

TEST_F(HttpClientTest, DeleteWithoutBody)
{
	HttpClient client;
	HttpResponse response = Fetch(client, {"DELETE", server.Url("/echo/x"), {}, ""});
	EXPECT_EQ(response.status, 200);
	auto received = server.received();
	ASSERT_EQ(received.size(), 1u);
	EXPECT_EQ(received[0].method, "DELETE");
}

TEST_F(HttpClientTest, ErrorStatusPassedThroughWithLowerCasedHeaders)
{
	HttpClient client;
	HttpResponse response = Fetch(client, {"POST", server.Url("/status/500"), {}, "{}"});
	EXPECT_EQ(response.status, 500);
	EXPECT_EQ(response.transport_error, "");
	EXPECT_EQ(response.body, "status 500");
	EXPECT_EQ(Find(response.headers, "x-mixed-case"), "Hello World");
	EXPECT_EQ(Find(response.headers, "retry-after"), "7");
	EXPECT_EQ(Find(response.headers, "content-length"), "10");
	for (const auto &h : response.headers)
		EXPECT_EQ(h.first, Lower(h.first));

	response = Fetch(client, {"GET", server.Url("/status/429"), {}, ""});
	EXPECT_EQ(response.status, 429);
}

TEST_F(HttpClientTest, CancelAbandonsATransferInFlight)
{
	HttpClient client;
	HttpRequest slow;
	slow.method = "GET";
	slow.url = server.Url("/sleep/3000");
	HttpRequest fast = slow;
	fast.url = server.Url("/echo");
	const uint64_t id = client.Submit(slow, 10000, 7);
	EXPECT_TRUE(client.Poll(50).empty());
	auto start = std::chrono::steady_clock::now();
	EXPECT_TRUE(client.Cancel(id));
	EXPECT_FALSE(client.Cancel(id));
	EXPECT_EQ(client.InFlight(), 0u);
	// The client goes on working, and the cancelled transfer never comes back.
	client.Submit(fast, 10000, 8);
	std::vector<uint64_t> tags;
	while (tags.empty())
		for (auto &done : client.Poll(100))
			tags.push_back(done.first);
	EXPECT_EQ(tags, std::vector<uint64_t>{8});
	EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count(),
	          2000);
	EXPECT_TRUE(client.Poll(200).empty());
}

TEST_F(HttpClientTest, ManyConcurrentRequestsReuseConnections)
{
	HttpClientOptions options;
	options.max_total_connections = 8;
	options.max_host_connections = 8;
	HttpClient client(options);
	const size_t n = 200;
	for (size_t i = 0; i < n; i++)
		client.Submit({"POST", server.Url("/echo/" + std::to_string(i)), {}, "body-" + std::to_string(i)}, 5000,
		              1000 + i);
	EXPECT_EQ(client.InFlight(), n);
	auto results = Collect(client, n, 8000);
	ASSERT_EQ(results.size(), n);
	for (size_t i = 0; i < n; i++) {
		EXPECT_EQ(results[1000 + i].status, 200);
		EXPECT_EQ(results[1000 + i].body, "body-" + std::to_string(i));
	}
	EXPECT_EQ(client.InFlight(), 0u);
	EXPECT_EQ(server.received().size(), n);
	EXPECT_LE(server.accepted(), 8);
	EXPECT_LT(static_cast<size_t>(server.accepted()), n);
}

TEST_F(HttpClientTest, SequentialRequestsShareOneConnection)
{
	HttpClient client;
	for (int i = 0; i < 5; i++)
		EXPECT_EQ(Fetch(client, {"GET", server.Url("/echo"), {}, ""}).status, 200);
	EXPECT_EQ(server.accepted(), 1);
}

TEST_F(HttpClientTest, TimeoutGivesStatusZeroInTime)
{
	HttpClient client;
	auto start = Clock::now();
	HttpResponse response = Fetch(client, {"GET", server.Url("/sleep/3000"), {}, ""}, 300);
	long took = MsSince(start);
	EXPECT_EQ(response.status, 0);
	EXPECT_NE(response.transport_error.find("timed out"), std::string::npos) << response.transport_error;
	EXPECT_GE(took, 250);
	EXPECT_LT(took, 1000);
	EXPECT_TRUE(response.body.empty());
}

TEST_F(HttpClientTest, DroppedConnectionGivesStatusZero)
{
	HttpClient client;
	HttpResponse response = Fetch(client, {"POST", server.Url("/drop"), {}, "{}"});
	EXPECT_EQ(response.status, 0);
	EXPECT_FALSE(response.transport_error.empty());
	// The client is still usable afterwards.
	EXPECT_EQ(Fetch(client, {"GET", server.Url("/echo"), {}, ""}).status, 200);
}

TEST_F(HttpClientTest, ConnectionRefusedGivesStatusZero)
{
	// A port that was just free: bind, read the number, close.
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	sockaddr_in addr{};
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
	socklen_t len = sizeof(addr);
	getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
	close(fd);
	HttpClient client;
	HttpResponse response = Fetch(client,
	                              {"GET", "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/", {}, ""});
	EXPECT_EQ(response.status, 0);
	EXPECT_FALSE(response.transport_error.empty());
}

TEST_F(HttpClientTest, ResponseSizeCap)
{
	HttpClientOptions options;
	options.max_response_bytes = 1000;
	HttpClient client(options);
	// Exactly at the cap is fine.
	HttpResponse response = Fetch(client, {"GET", server.Url("/big/1000"), {}, ""});
	EXPECT_EQ(response.status, 200);
	EXPECT_EQ(response.body.size(), 1000u);
	// Announced by Content-Length.
	response = Fetch(client, {"GET", server.Url("/big/1001"), {}, ""});
	EXPECT_EQ(response.status, 0);
	EXPECT_EQ(response.transport_error, "response larger than 1000 bytes");
	EXPECT_TRUE(response.body.empty());
	// Not announced: caught while receiving.
	response = Fetch(client, {"GET", server.Url("/stream/50000"), {}, ""});
	EXPECT_EQ(response.status, 0);
	EXPECT_EQ(response.transport_error, "response larger than 1000 bytes");
	response = Fetch(client, {"GET", server.Url("/stream/900"), {}, ""});
	EXPECT_EQ(response.status, 200);
	EXPECT_EQ(response.body, std::string(900, 'y'));
}

TEST_F(HttpClientTest, DefaultCapIsEightMiB)
{
	EXPECT_EQ(HttpClientOptions().max_response_bytes, 8u * 1024 * 1024);
	HttpClient client;
	EXPECT_EQ(Fetch(client, {"GET", server.Url("/big/2000000"), {}, ""}).body.size(), 2000000u);
}

TEST_F(HttpClientTest, OnlyHttpAndHttps)
{
	HttpClient client;
	for (const char *url : {"file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1/", "dict://127.0.0.1/"}) {
		HttpResponse response = Fetch(client, {"GET", url, {}, ""});
		EXPECT_EQ(response.status, 0) << url;
		EXPECT_FALSE(response.transport_error.empty()) << url;
		EXPECT_TRUE(response.body.empty()) << url;
	}
}

TEST_F(HttpClientTest, HeaderInjectionRefused)
{
	HttpClient client;
	client.Submit({"GET", server.Url("/echo"), {{"X-Evil", "a\r\nX-Injected: 1"}}, ""}, 5000, 9);
	EXPECT_EQ(client.InFlight(), 1u);
	auto results = client.Poll(0);
	ASSERT_EQ(results.size(), 1u);
	EXPECT_EQ(results[0].first, 9u);
	EXPECT_EQ(results[0].second.status, 0);
	EXPECT_NE(results[0].second.transport_error.find("invalid header"), std::string::npos);
	EXPECT_EQ(client.InFlight(), 0u);
	EXPECT_TRUE(server.received().empty());
}

TEST_F(HttpClientTest, PollReturnsWithinWaitWhenNothingFinishes)
{
	HttpClient client;
	auto start = Clock::now();
	EXPECT_TRUE(client.Poll(100).empty());
	long idle = MsSince(start);
	EXPECT_GE(idle, 90);
	EXPECT_LT(idle, 300);

	start = Clock::now();
	EXPECT_TRUE(client.Poll(0).empty());
	EXPECT_LT(MsSince(start), 50);

	// With a slow transfer in flight, each Poll still comes back on time.
	client.Submit({"GET", server.Url("/sleep/1000"), {}, ""}, 5000, 1);
	for (int i = 0; i < 3; i++) {
		start = Clock::now();
		EXPECT_TRUE(client.Poll(100).empty());
		long busy = MsSince(start);
		EXPECT_GE(busy, 90);
		EXPECT_LT(busy, 300);
	}
	EXPECT_EQ(client.InFlight(), 1u);
}

TEST_F(HttpClientTest, WakeupInterruptsPoll)
{
	HttpClient client;
	client.Submit({"GET", server.Url("/sleep/2000"), {}, ""}, 5000, 1);
	std::thread waker([&client] {
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
		client.Wakeup();
	});
	auto start = Clock::now();
	EXPECT_TRUE(client.Poll(3000).empty());
	EXPECT_LT(MsSince(start), 1000);
	waker.join();
}

TEST_F(HttpClientTest, DestroyWithTransfersInFlight)
{
	auto client = std::make_unique<HttpClient>();
	for (int i = 0; i < 10; i++)
		client->Submit({"GET", server.Url("/sleep/2000"), {}, ""}, 5000, i);
	client->Poll(50);
	EXPECT_EQ(client->InFlight(), 10u);
	client.reset(); // must not crash or leak handles
}

// ---- switchboard.allowed_hosts at connect time -------------------------------------------
// CURLOPT_RESOLVE entries stand in for DNS: "evil.test" resolves to the test server, so a
// refused request would otherwise have reached it.

HttpClientOptions
PolicyOptions(const std::string &allowed_hosts, const std::vector<std::string> &resolve)
{
	HttpClientOptions options;
	options.allowed_hosts = allowed_hosts;
	options.resolve = resolve;
	return options;
}

std::string
HostUrl(const std::string &host, int port, const std::string &path)
{
	return "http://" + host + ":" + std::to_string(port) + path;
}

TEST_F(HttpClientTest, HostOutsideAllowedHostsIsRefusedBeforeConnecting)
{
	const int port = server.port();
	HttpClient client(PolicyOptions("good.test, 127.0.0.1", {"evil.test:" + std::to_string(port) + ":127.0.0.1",
	                                                         "good.test:" + std::to_string(port) + ":127.0.0.1"}));
	HttpResponse refused = Fetch(client, {"POST", HostUrl("evil.test", port, "/echo"), {}, "{\"secret\":1}"});
	EXPECT_EQ(refused.status, 0);
	EXPECT_NE(refused.transport_error.find("allowed_hosts"), std::string::npos) << refused.transport_error;
	EXPECT_EQ(server.accepted(), 0) << "not even a connection to a refused host";
	EXPECT_TRUE(server.received().empty());

	HttpResponse allowed = Fetch(client, {"GET", HostUrl("good.test", port, "/echo"), {}, ""});
	EXPECT_EQ(allowed.status, 200) << allowed.transport_error;
	EXPECT_EQ(Fetch(client, {"GET", server.Url("/echo"), {}, ""}).status, 200);
}

TEST_F(HttpClientTest, NameResolvingToMetadataIsRefusedAfterResolution)
{
	HttpClientOptions options = PolicyOptions("", {"meta.test:80:169.254.169.254", "meta6.test:80:fd00:ec2::254",
	                                               "ll.test:80:169.254.1.2"});
	options.connect_timeout_ms = 300;
	HttpClient client(options);
	for (const char *url :
	     {"http://meta.test/latest/meta-data/iam/security-credentials/", "http://meta6.test/", "http://ll.test/"}) {
		auto start = Clock::now();
		HttpResponse response = Fetch(client, {"GET", url, {}, ""});
		EXPECT_EQ(response.status, 0) << url;
		EXPECT_NE(response.transport_error.find("link-local"), std::string::npos)
		    << url << ": " << response.transport_error;
		EXPECT_LT(MsSince(start), 250) << "refused before any connection attempt, not timed out";
	}
	// "*" is a name pattern: it does not let a metadata address through either.
	HttpClientOptions star = PolicyOptions("*", {"meta.test:80:169.254.169.254"});
	HttpClient star_client(star);
	HttpResponse response = Fetch(star_client, {"GET", "http://meta.test/", {}, ""});
	EXPECT_NE(response.transport_error.find("link-local"), std::string::npos) << response.transport_error;
}

TEST_F(HttpClientTest, LiteralLinkLocalAddressesAreRefused)
{
	HttpClient client;
	for (const char *url : {"http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://[fd00:ec2::254]/",
	                        "http://[::ffff:169.254.169.254]/"}) {
		HttpResponse response = Fetch(client, {"GET", url, {}, ""});
		EXPECT_EQ(response.status, 0) << url;
		EXPECT_NE(response.transport_error.find("link-local"), std::string::npos)
		    << url << ": " << response.transport_error;
	}
}

// That an IP or CIDR entry lets a link-local address through is tested in
// test_host_policy.cpp: a test here would really connect to whatever answers at it.

TEST_F(HttpClientTest, PolicyIsReadAtEveryRequest)
{
	std::string policy = "127.0.0.1";
	HttpClientOptions options;
	options.current_allowed_hosts = [&policy] { return policy; };
	HttpClient client(options);
	EXPECT_EQ(client.AllowedHosts(), "127.0.0.1");
	EXPECT_EQ(Fetch(client, {"GET", server.Url("/echo"), {}, ""}).status, 200);
	policy = "api.hubapi.com"; // as after ALTER SYSTEM + reload
	EXPECT_EQ(client.AllowedHosts(), "api.hubapi.com");
	HttpResponse response = Fetch(client, {"GET", server.Url("/echo"), {}, ""});
	EXPECT_EQ(response.status, 0);
	EXPECT_NE(response.transport_error.find("allowed_hosts"), std::string::npos) << response.transport_error;
	EXPECT_EQ(server.received().size(), 1u);
}

TEST_F(HttpClientTest, UserInfoInUrlIsRefused)
{
	HttpClient client;
	HttpResponse response = Fetch(
	    client, {"GET", "http://user:pw@127.0.0.1:" + std::to_string(server.port()) + "/echo", {}, ""});
	EXPECT_EQ(response.status, 0);
	EXPECT_TRUE(server.received().empty());
}

TEST_F(HttpClientTest, RedirectIsNeverFollowed)
{
	TestServer other;
	const int port = server.port();
	HttpClient client(PolicyOptions("", {"other.test:" + std::to_string(other.port()) + ":127.0.0.1"}));
	for (const std::string &target : {other.Url("/echo"), HostUrl("other.test", other.port(), "/echo"),
	                                  std::string("http://169.254.169.254/latest/meta-data/")}) {
		HttpResponse response = Fetch(client, {"GET", HostUrl("127.0.0.1", port, "/redirect?to=" + target), {}, ""});
		EXPECT_EQ(response.status, 302) << "the redirect itself is the answer";
		EXPECT_EQ(Find(response.headers, "location"), target);
	}
	EXPECT_EQ(other.accepted(), 0);
	EXPECT_TRUE(other.received().empty());
}

} // namespace
} // namespace switchboard
