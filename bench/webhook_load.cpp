// A load generator for the inbound receiver (bench/run.sh, section 8): sends distinct, signed
// Standard Webhooks events over N concurrent keep-alive connections (libcurl multi) as fast as
// the receiver acknowledges them, or paced at a steady rate, and reports acknowledgements/s and
// the latency of each acknowledgement. Python could not send 5,000 signed requests/s on this
// machine class; this costs a few microseconds per request.
//
//   webhook_load --url http://127.0.0.1:PORT/inbound/TOKEN --key-b64 KEY --count 20000
//                [--concurrency 32] [--rate 500] [--prefix ev] [--seconds-limit 120]
//
// Event i has webhook-id "<prefix>-<i>" and data {"id": "<prefix>-<i>", "External_Id__c":
// "<prefix>-<i>", "LastName": "Load <i>"}. Prints one line:
//   sent N acked N failed N seconds S acks_per_s R ack_p50_ms X ack_p99_ms Y
// Exits non-zero when any request was not acknowledged with a 2xx.
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

std::string
Base64(const unsigned char *data, size_t n)
{
	std::string out(4 * ((n + 2) / 3) + 1, '\0');
	int len = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(&out[0]), data, static_cast<int>(n));
	out.resize(len);
	return out;
}

std::string
Unbase64(const std::string &in)
{
	std::string out(3 * (in.size() / 4) + 3, '\0');
	int len = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(&out[0]),
	                          reinterpret_cast<const unsigned char *>(in.data()), static_cast<int>(in.size()));
	if (len < 0) {
		std::fprintf(stderr, "webhook_load: --key-b64 is not base64\n");
		std::exit(2);
	}
	size_t pad = 0;
	for (size_t i = in.size(); i > 0 && in[i - 1] == '='; i--)
		pad++;
	out.resize(static_cast<size_t>(len) - pad);
	return out;
}

struct Slot {
	CURL *easy = nullptr;
	curl_slist *headers = nullptr;
	std::string body;
	Clock::time_point started;
	bool busy = false;
};

size_t
Discard(char *, size_t size, size_t n, void *)
{
	return size * n;
}

double
Percentile(std::vector<double> v, double q)
{
	if (v.empty())
		return 0;
	std::sort(v.begin(), v.end());
	return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

} // namespace

int
main(int argc, char **argv)
{
	std::string url, key_b64, prefix = "ev";
	long count = 10000, concurrency = 32, seconds_limit = 300;
	double rate = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		std::string a = argv[i], v = argv[i + 1];
		if (a == "--url")
			url = v;
		else if (a == "--key-b64")
			key_b64 = v;
		else if (a == "--count")
			count = std::atol(v.c_str());
		else if (a == "--concurrency")
			concurrency = std::atol(v.c_str());
		else if (a == "--rate")
			rate = std::atof(v.c_str());
		else if (a == "--prefix")
			prefix = v;
		else if (a == "--seconds-limit")
			seconds_limit = std::atol(v.c_str());
		else {
			std::fprintf(stderr, "webhook_load: unknown option %s\n", a.c_str());
			return 2;
		}
	}
	if (url.empty() || key_b64.empty() || count <= 0 || concurrency <= 0) {
		std::fprintf(stderr, "usage: webhook_load --url URL --key-b64 KEY [--count N] [--concurrency C] "
		                     "[--rate R] [--prefix P] [--seconds-limit S]\n");
		return 2;
	}
	const std::string key = Unbase64(key_b64);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURLM *multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, concurrency);
	std::vector<Slot> slots(static_cast<size_t>(concurrency));
	for (Slot &s : slots) {
		s.easy = curl_easy_init();
		curl_easy_setopt(s.easy, CURLOPT_URL, url.c_str());
		curl_easy_setopt(s.easy, CURLOPT_WRITEFUNCTION, Discard);
		curl_easy_setopt(s.easy, CURLOPT_TIMEOUT_MS, 30000L);
		curl_easy_setopt(s.easy, CURLOPT_TCP_NODELAY, 1L);
		curl_easy_setopt(s.easy, CURLOPT_PRIVATE, &s);
	}
	long next = 0, acked = 0, failed = 0, done = 0;
	std::vector<double> latencies;
	latencies.reserve(static_cast<size_t>(count));
	const Clock::time_point start = Clock::now();
	const Clock::time_point deadline = start + std::chrono::seconds(seconds_limit);
	auto due = [&](long i) {
		return rate > 0 ? start + std::chrono::microseconds(static_cast<long long>(i * 1e6 / rate)) : start;
	};
	auto send = [&](Slot &s, long i) {
		const std::string id = prefix + "-" + std::to_string(i);
		const long long now_s = std::chrono::duration_cast<std::chrono::seconds>(
		                            std::chrono::system_clock::now().time_since_epoch())
		                            .count();
		const long long now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
		                             std::chrono::system_clock::now().time_since_epoch())
		                             .count();
		s.body = "{\"type\":\"account.updated\",\"timestamp\":" + std::to_string(now_ms) + ",\"data\":{\"id\":\"" + id +
		         "\",\"External_Id__c\":\"" + id + "\",\"LastName\":\"Load " + std::to_string(i) + "\"}}";
		const std::string ts = std::to_string(now_s);
		const std::string signed_text = id + "." + ts + "." + s.body;
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int mac_len = 0;
		HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
		     reinterpret_cast<const unsigned char *>(signed_text.data()), signed_text.size(), mac, &mac_len);
		if (s.headers)
			curl_slist_free_all(s.headers);
		s.headers = nullptr;
		s.headers = curl_slist_append(s.headers, "Content-Type: application/json");
		s.headers = curl_slist_append(s.headers, "Expect:");
		s.headers = curl_slist_append(s.headers, ("webhook-id: " + id).c_str());
		s.headers = curl_slist_append(s.headers, ("webhook-timestamp: " + ts).c_str());
		s.headers = curl_slist_append(s.headers, ("webhook-signature: v1," + Base64(mac, mac_len)).c_str());
		curl_easy_setopt(s.easy, CURLOPT_HTTPHEADER, s.headers);
		curl_easy_setopt(s.easy, CURLOPT_POSTFIELDS, s.body.c_str());
		curl_easy_setopt(s.easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(s.body.size()));
		s.started = Clock::now();
		s.busy = true;
		curl_multi_add_handle(multi, s.easy);
	};
	while (done < count && Clock::now() < deadline) {
		// Start what is due on every idle connection.
		for (Slot &s : slots) {
			if (next >= count)
				break;
			if (!s.busy && Clock::now() >= due(next))
				send(s, next++);
		}
		int running = 0;
		curl_multi_perform(multi, &running);
		int left = 0;
		while (CURLMsg *msg = curl_multi_info_read(multi, &left)) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			Slot *s = nullptr;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char **>(&s));
			long status = 0;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result == CURLE_OK && status >= 200 && status < 300) {
				acked++;
				latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s->started).count());
			} else {
				if (failed < 5)
					std::fprintf(stderr, "webhook_load: request failed: %s, HTTP %ld\n",
					             curl_easy_strerror(msg->data.result), status);
				failed++;
			}
			done++;
			curl_multi_remove_handle(multi, msg->easy_handle);
			s->busy = false;
		}
		// Wait for I/O, or until the next paced request is due.
		int timeout_ms = 10;
		if (rate > 0 && next < count) {
			auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(due(next) - Clock::now()).count();
			timeout_ms = static_cast<int>(std::clamp<long long>(wait, 0, 10));
		}
		if (running > 0)
			curl_multi_poll(multi, nullptr, 0, timeout_ms, nullptr);
		else if (timeout_ms > 0 && next < count)
			std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
	}
	const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
	std::printf("sent %ld acked %ld failed %ld seconds %.3f acks_per_s %.0f ack_p50_ms %.2f ack_p99_ms %.2f\n", next,
	            acked, failed + (next - done), seconds, acked / seconds, Percentile(latencies, 0.5),
	            Percentile(latencies, 0.99));
	for (Slot &s : slots) {
		curl_multi_remove_handle(multi, s.easy);
		curl_easy_cleanup(s.easy);
		if (s.headers)
			curl_slist_free_all(s.headers);
	}
	curl_multi_cleanup(multi);
	curl_global_cleanup();
	return acked == count ? 0 : 1;
}
